// Keyed entries stored in one statement, in the state a run of keyed receives (the library's
// receiveKeyed, one after the other in the given order) would leave: each key's row counts its
// entries (`last_seq`) and is busy; the entries are numbered within their key after what the key
// already had (`ordering_seq`); an entry waits unless it is its key's first and the key was free.
// Keys that exist are continued (a key held by a dead letter stays busy: all its new entries wait).
// Receiving 100,000 commands one by one would take longer than the run being measured.
import type { Client } from 'pg';
import type { EnqueueItem } from './types';

export async function enqueueKeyedRows(client: Client, table: string, items: EnqueueItem[], commandType: string): Promise<void> {
  if (items.some((item) => item.orderingKey === undefined)) throw new Error('keyed and unkeyed entries are stored apart');
  const keys = `${table}_keys`;
  await client.query(
    `WITH input AS (
        SELECT m, p, k, ord FROM unnest($1::text[], $2::jsonb[], $3::text[]) WITH ORDINALITY AS t(m, p, k, ord)
      ), numbered AS (
        SELECT m, p, k, ord, row_number() OVER (PARTITION BY k ORDER BY ord) AS rn, count(*) OVER (PARTITION BY k) AS n FROM input
      ), prior AS (
        SELECT "ordering_key", "last_seq", "busy" FROM ${keys} WHERE "ordering_key" IN (SELECT DISTINCT k FROM input) FOR UPDATE
      ), counted AS (
        INSERT INTO ${keys} AS kr ("ordering_key", "last_seq", "busy", "touched_at")
        SELECT DISTINCT numbered.k, COALESCE(prior."last_seq", 0) + numbered.n, true, now()
        FROM numbered LEFT JOIN prior ON prior."ordering_key" = numbered.k
        ON CONFLICT ("ordering_key") DO UPDATE
          SET "last_seq" = EXCLUDED."last_seq", "busy" = true, "touched_at" = EXCLUDED."touched_at"
      )
      INSERT INTO ${table} ("message_id", "command_type", "payload", "received_at", "ordering_key", "ordering_seq", "waiting")
      SELECT numbered.m, $4, numbered.p, clock_timestamp(), numbered.k, COALESCE(prior."last_seq", 0) + numbered.rn,
        COALESCE(prior."busy", false) OR numbered.rn > 1
      FROM numbered LEFT JOIN prior ON prior."ordering_key" = numbered.k
      ORDER BY numbered.ord`,
    [items.map((i) => i.messageId), items.map((i) => JSON.stringify(i.payload)), items.map((i) => i.orderingKey), commandType],
  );
}
