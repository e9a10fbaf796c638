// The keys workload's drains: what each one stores and runs, and the check that a keyed drain ran
// every key in its order, one entry at a time.
import type { Client } from 'pg';
import { SLOW_HANDLER_MS, type Sizes } from './common';
import type { Handler } from './protocol';

export type KeysDrainVariant = 'drain-plain' | 'drain-keyed' | 'drain-slow';

export interface KeysDrainPlan {
  kind: Handler;
  count: number;
  /** Accounts the payloads name (round robin). */
  accounts: number;
  /** Whether each entry is stored under its account as ordering key. */
  keyed: boolean;
  /** Worker concurrency, when not the benchmark's default. */
  concurrency?: number;
}

export function keysDrainPlan(sizes: Sizes, variant: KeysDrainVariant): KeysDrainPlan {
  switch (variant) {
    // The same payloads (they name an account) and the same event-row handler, without keys.
    case 'drain-plain':
      return { kind: 'event', count: sizes.drain, accounts: sizes.drainKeys, keyed: false };
    case 'drain-keyed':
      return { kind: 'keyed', count: sizes.drain, accounts: sizes.drainKeys, keyed: true };
    // Every key busy all the time: at least one handler slot per key.
    case 'drain-slow':
      return { kind: 'keyed-slow', count: sizes.slowDrain, accounts: sizes.slowKeys, keyed: true, concurrency: Math.max(10, sizes.slowKeys) };
  }
}

/** What `keys` keys could drain if each ran its handlers back to back with no cost in between (cmd/s). */
export function perKeySerialLimit(keys: number): number {
  return (keys * 1000) / SLOW_HANDLER_MS;
}

/**
 * After a keyed drain: every entry completed, no key left busy, and within each key no entry
 * started before the one before it finished (1 ms of slack: start and finish times are the
 * database's clock less the worker's monotonic offsets).
 */
export async function checkKeyOrder(client: Client, label: string): Promise<void> {
  const { rows } = await client.query<{ open: number; overlaps: number; busy: number }>(
    `SELECT
       (SELECT count(*)::int FROM inbox_entries WHERE "ordering_key" IS NOT NULL AND "status" <> 'completed') AS open,
       (SELECT count(*)::int FROM (
          SELECT "processing_started_at" < lag("processed_at") OVER (PARTITION BY "ordering_key" ORDER BY "ordering_seq") - interval '1 millisecond' AS early
          FROM inbox_entries WHERE "ordering_key" IS NOT NULL) AS x WHERE early) AS overlaps,
       (SELECT count(*)::int FROM inbox_entries_keys WHERE "busy") AS busy`,
  );
  const { open, overlaps, busy } = rows[0];
  if (open || overlaps || busy) throw new Error(`${label}: ${open} keyed entries not completed, ${overlaps} started before their predecessor finished, ${busy} keys left busy`);
}
