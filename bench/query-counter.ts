// Counts statements sent through node-postgres in this process (every system here uses the one
// hoisted `pg`): a round-trip count per command says more about a hot path than CPU time alone.
// Observers see each statement as it is sent (the claim capture of the scale workload).
import { Client } from 'pg';

export type QueryObserver = (args: unknown[]) => void;

let sent = 0;
const observers: QueryObserver[] = [];
const original = Client.prototype.query as (...args: unknown[]) => unknown;
(Client.prototype as unknown as { query: (...args: unknown[]) => unknown }).query = function countedQuery(this: Client, ...args: unknown[]) {
  sent++;
  for (const observe of observers) observe(args);
  return original.apply(this, args);
};

export function queriesSent(): number {
  return sent;
}

export function observeQueries(observer: QueryObserver): void {
  observers.push(observer);
}
