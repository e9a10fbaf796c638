// The keys workload's drains: what each one stores and runs, and the check that a keyed drain ran
// every key in its order, one entry at a time.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from 'pg';
import { DataSource } from 'typeorm';
import { EVENT_INSERT, SLOW_HANDLER_MS, type Sizes } from './common';
import type { Handler } from './protocol';

/**
 * The 2 ms drain's batch size, the benchmark's usual one: a key's run is at most a batch long.
 * Batches of 500 were slower here (1,743 against 2,170 commands/s): each claim and completion
 * statement grows with the run, and the first claim shares its room among all ten keys.
 */
export const SLOW_BATCH_SIZE = 100;

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
  /** Entries per claim, when not the benchmark's default. */
  batchSize?: number;
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
      return { kind: 'keyed-slow', count: sizes.slowDrain, accounts: sizes.slowKeys, keyed: true, concurrency: Math.max(10, sizes.slowKeys), batchSize: SLOW_BATCH_SIZE };
  }
}

/**
 * The same handler work without an inbox: `keys` loops, each on a TypeORM query runner of its own
 * (the handler writes through TypeORM's manager, as a Nest application's code would), each running
 * its share back to back (the 2 ms wait, then the event row), committing every run's length (the
 * batch size) like a key's run, watched by the same count of event rows as the drain. What the machine allows a key to do serially: a 2 ms timer alone takes about 2.2 ms here,
 * and the loops share one event loop and the server's two cores.
 */
export async function perKeyFloor(url: string, keys: number, count: number, runLength = SLOW_BATCH_SIZE): Promise<number> {
  const dataSource = await new DataSource({ type: 'postgres', url, extra: { max: keys }, logging: false }).initialize();
  const each = Math.ceil(count / keys);
  const loop = async (key: number) => {
    const runner = dataSource.createQueryRunner();
    try {
      await runner.startTransaction();
      for (let i = 0; i < each; i++) {
        await sleep(SLOW_HANDLER_MS);
        await runner.manager.query(EVENT_INSERT, [`floor-${key}-${i}`, JSON.stringify({ key })]);
        if (i % runLength === runLength - 1) {
          await runner.commitTransaction();
          await runner.startTransaction();
        }
      }
      await runner.commitTransaction();
    } finally {
      await runner.release();
    }
  };
  // The drain is watched by counting event rows every 10 ms (pollUntil): the loops are watched alike.
  let looping = true;
  const watch = async () => {
    while (looping) {
      await dataSource.query('SELECT count(*)::int AS n FROM events');
      await sleep(10);
    }
  };
  try {
    const watching = watch();
    const t0 = performance.now();
    await Promise.all(Array.from({ length: keys }, (_, key) => loop(key)));
    const rate = ((each * keys) / (performance.now() - t0)) * 1000;
    looping = false;
    await watching;
    return rate;
  } finally {
    looping = false;
    await dataSource.destroy();
  }
}

/** What `keys` keys could drain if each ran its handlers back to back with no cost in between (cmd/s). */
export function perKeySerialLimit(keys: number): number {
  return (keys * 1000) / SLOW_HANDLER_MS;
}

/**
 * After a keyed drain: every entry completed, no key left busy, each entry's handler wrote its
 * event row once, and within each key the event rows were written in the order the entries were
 * received (their ids come from one sequence, taken as each handler ran: strict, whatever the
 * clocks). That entries of a key never overlap is proven by the test suite and the chaos run,
 * which time the handlers themselves; the times stored on entries carry the completing statement's
 * latency, too coarse to judge 2 ms handlers one after the other.
 */
export async function checkKeyOrder(client: Client, label: string): Promise<void> {
  const { rows } = await client.query<{ open: number; missing: number; misordered: number; busy: number }>(
    `SELECT
       (SELECT count(*)::int FROM inbox_entries WHERE "ordering_key" IS NOT NULL AND "status" <> 'completed') AS open,
       (SELECT count(*)::int FROM inbox_entries i WHERE i."ordering_key" IS NOT NULL
          AND (SELECT count(*) FROM events e WHERE e.message_id = i."message_id") <> 1) AS missing,
       (SELECT count(*)::int FROM (
          SELECT e.id < lag(e.id) OVER (PARTITION BY i."ordering_key" ORDER BY i."ordering_seq") AS early
          FROM inbox_entries i JOIN events e ON e.message_id = i."message_id" WHERE i."ordering_key" IS NOT NULL) AS x WHERE early) AS misordered,
       (SELECT count(*)::int FROM inbox_entries_keys WHERE "busy") AS busy`,
  );
  const { open, missing, misordered, busy } = rows[0];
  if (open || missing || misordered || busy) {
    throw new Error(`${label}: ${open} keyed entries not completed, ${missing} without exactly one event row, ${misordered} ran before an earlier entry of their key, ${busy} keys left busy`);
  }
}
