// The keys workload's drains: what each one stores and runs, and the check that a keyed drain ran
// every key in its order, one entry at a time.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from 'pg';
import { SLOW_HANDLER_MS, type Sizes } from './common';
import type { Handler } from './protocol';

/** The 2 ms drain's batch size, the benchmark's usual one: a key's run is at most a batch long. */
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
 * The same handler work without an inbox: `keys` loops of the 2 ms timer, side by side on one event
 * loop, each running its share back to back. What the machine allows a key to do serially: a
 * 2 ms timer alone takes about 2.1 ms on Node here.
 */
export async function perKeyFloor(keys: number, count: number): Promise<number> {
  const each = Math.ceil(count / keys);
  const loop = async () => {
    for (let i = 0; i < each; i++) await sleep(SLOW_HANDLER_MS);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: keys }, loop));
  return ((each * keys) / (performance.now() - t0)) * 1000;
}

/**
 * After the 2 ms drain: the handler's own record of its runs (messageId, start, end on the
 * worker's monotonic clock) holds every keyed entry exactly once, and within each key the runs
 * follow the order the entries were received in and never overlap. Returns, for the keys whose
 * name starts with `timedKeyPrefix` (the timed entries'), where their time went.
 */
export async function checkRunRecord(client: Client, label: string, commandType: string, runs: Array<[string, number, number]>, timedKeyPrefix: string): Promise<RunTimings> {
  const { rows } = await client.query<{ message_id: string; ordering_key: string }>(
    `SELECT "message_id", "ordering_key" FROM inbox_entries WHERE "command_type" = $1 ORDER BY "ordering_key", "ordering_seq"`,
    [commandType],
  );
  const byMessage = new Map<string, Array<[number, number]>>();
  for (const [messageId, start, end] of runs) byMessage.set(messageId, [...(byMessage.get(messageId) ?? []), [start, end]]);
  let missing = 0;
  let repeated = 0;
  let misordered = 0;
  let previous: { key: string; end: number } | undefined;
  for (const row of rows) {
    const ran = byMessage.get(row.message_id) ?? [];
    if (ran.length === 0) missing++;
    if (ran.length > 1) repeated++;
    const [start, end] = ran[0] ?? [NaN, NaN];
    if (previous?.key === row.ordering_key && !(start >= previous.end)) misordered++;
    previous = { key: row.ordering_key, end };
  }
  if (rows.length === 0 || missing || repeated || misordered || runs.length !== rows.length) {
    throw new Error(
      `${label}: ${rows.length} keyed entries, ${runs.length} handler runs: ${missing} never ran, ${repeated} ran more than once, ${misordered} started before the previous entry of their key ended`,
    );
  }
  return runTimings(rows.filter((row) => row.ordering_key.startsWith(timedKeyPrefix)).map((row) => ({ key: row.ordering_key, ran: byMessage.get(row.message_id)![0] })));
}

/** Where a keyed drain's time went, from its handlers' own record of the timed keys. */
export interface RunTimings {
  /** A handler's run, start to end, on average (ms). */
  meanHandlerMs: number;
  /** Per key: the time between one entry's end and the next one's start, added up (ms). */
  idlePerKeyMs: number;
  /** Per key: how many of those pauses were over 1 ms (between two claims, not within one run). */
  longPausesPerKey: number;
}

/** `entries`: each key's entries in its order, with when each ran (start, end). */
function runTimings(entries: Array<{ key: string; ran: [number, number] }>): RunTimings {
  let handlerMs = 0;
  let idleMs = 0;
  let longPauses = 0;
  const keys = new Set<string>();
  entries.forEach(({ key, ran }, index) => {
    keys.add(key);
    handlerMs += ran[1] - ran[0];
    const previous = entries[index - 1];
    if (previous?.key !== key) return;
    const pause = ran[0] - previous.ran[1];
    idleMs += pause;
    if (pause > 1) longPauses++;
  });
  return { meanHandlerMs: handlerMs / entries.length, idlePerKeyMs: idleMs / keys.size, longPausesPerKey: longPauses / keys.size };
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
