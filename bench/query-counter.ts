// Counts statements sent through node-postgres in this process (every system here uses the one
// hoisted `pg`): a round-trip count per command says more about a hot path than CPU time alone.
import { Client } from 'pg';

let sent = 0;
const original = Client.prototype.query as (...args: unknown[]) => unknown;
(Client.prototype as unknown as { query: (...args: unknown[]) => unknown }).query = function countedQuery(this: Client, ...args: unknown[]) {
  sent++;
  return original.apply(this, args);
};

export function queriesSent(): number {
  return sent;
}
