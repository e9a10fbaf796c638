// The keys workload's claim: claim latency with a large keyed backlog, one key of it blocked by a
// dead letter with many entries waiting behind it, against the same backlog without keys.
//
// 1. A worker drains a warm-up; in the keyed run it also dead-letters the blocked key's first
//    command itself (a PermanentError under policy block), and it reports its claim statement.
// 2. The backlog is stored as keyed receives would store it (see systems/inbox-keyed-rows.ts) and
//    the claim probe runs the worker's statement on it (claim-probe.ts), plans included.
// 3. Keyed run: a second worker runs part of the backlog, then the state is checked: what the
//    library did on the seeded rows must agree with the rows (order, one holder per key, key rows).
import type { Client } from 'pg';
import { BenchChild } from './child-process';
import { claimProbe } from './claim-probe';
import { connectClient, KEY_FIELD, makePayload, pollUntil, type Sizes } from './common';
import type { CapturedStatement, Handler } from './protocol';
import { accountOf } from './roles';
import type { EnqueueItem, SystemAdapter } from './systems/types';
import { items, spawnOptions, TIMEOUT_MS, type Entrant, type RunContext, type Track } from './workloads';

const BLOCKED_KEY = 'acc-blocked';

/**
 * The backlog in receive order: every other command (up to `blockedWaiting`) is for the blocked key,
 * the rest spread round robin over the other keys. Without keys, the same payloads.
 */
function backlog(sizes: Sizes, keyed: boolean): EnqueueItem[] {
  const others = sizes.claimKeys - 1;
  let blocked = 0;
  let other = 0;
  return Array.from({ length: sizes.claimBacklog }, (_, i) => {
    const account = i % 2 === 0 && blocked < sizes.blockedWaiting ? (blocked++, BLOCKED_KEY) : accountOf(other++, others);
    return { messageId: `probe-${i}`, payload: makePayload(i, { [KEY_FIELD]: account }), orderingKey: keyed ? account : undefined };
  });
}

async function count(client: Client, sql: string, params: unknown[] = []): Promise<number> {
  return (await client.query<{ n: number }>(sql, params)).rows[0].n;
}

export async function keysClaim(ctx: RunContext, entrant: Entrant, adapter: SystemAdapter, url: string, track: Track): Promise<void> {
  const keyed = entrant.variant === 'claim-keyed';
  const kind: Handler = keyed ? 'keyed' : 'event';
  const { claimBacklog, claimKeys, blockedWaiting, drainWarmup: warm } = ctx.sizes;
  const enqueuer = await adapter.openEnqueuer(url);
  const poll = await connectClient(url);
  try {
    const worker = track(
      new BenchChild({ system: entrant.system, role: 'work', url, count: claimBacklog, warmup: warm, handler: kind, captureClaim: true }, spawnOptions(ctx, entrant.system)),
    );
    await worker.waitFor('ready');
    await enqueuer.enqueue(items('warm', warm, 1_000_000, keyed ? { count: 100, prefix: 'warm-acc', keyed } : undefined), kind);
    if (keyed) {
      const poison = makePayload(0, { [KEY_FIELD]: BLOCKED_KEY, poison: true });
      await enqueuer.enqueue([{ messageId: 'poison', payload: poison, orderingKey: BLOCKED_KEY }], kind);
    }
    worker.send('go');
    await pollUntil(() => adapter.finished(poll, kind, warm), `${entrant.label} warm-up`, TIMEOUT_MS);
    if (keyed) {
      const blocking = `SELECT count(*)::int AS n FROM inbox_entries WHERE "message_id" = 'poison' AND "status" = 'dead_letter' AND "blocks_key" AND NOT "waiting"`;
      await pollUntil(async () => (await count(poll, blocking)) === 1, `${entrant.label}: the blocked key's head dead-lettered`, TIMEOUT_MS);
    }
    const result = await worker.stop();
    const described = keyed
      ? `${claimBacklog} Pending entries in ${claimKeys} keys, ${blockedWaiting} of them waiting behind a dead letter (policy block)`
      : `${claimBacklog} Pending entries without keys`;
    await claimProbe(ctx, entrant, poll, () => enqueuer.enqueue(backlog(ctx.sizes, keyed), kind), result.claimStatement as CapturedStatement | undefined, {
      workload: 'keys',
      backlog: described,
    });
    if (keyed) await runSomeAndCheck(ctx, entrant, url, track, poll);
  } finally {
    await enqueuer.close().catch(() => undefined);
    await poll.end().catch(() => undefined);
  }
}

/** The library runs part of the seeded backlog; then its order, holders and key rows must agree. */
async function runSomeAndCheck(ctx: RunContext, entrant: Entrant, url: string, track: Track, poll: Client): Promise<void> {
  const { claimVerify, blockedWaiting } = ctx.sizes;
  const worker = track(new BenchChild({ system: entrant.system, role: 'work', url, count: claimVerify, warmup: 0, handler: 'keyed' }, spawnOptions(ctx, entrant.system)));
  await worker.waitFor('ready');
  worker.send('go');
  const ran = `SELECT count(*)::int AS n FROM events WHERE "message_id" LIKE 'probe-%'`;
  await pollUntil(async () => (await count(poll, ran)) >= claimVerify, `${entrant.label}: ${claimVerify} of the backlog run`, TIMEOUT_MS);
  await worker.stop();
  const { rows } = await poll.query<Record<string, number>>(
    `WITH keyed AS (
        SELECT "ordering_key", "ordering_seq", "status", "waiting", "blocks_key",
          bool_or("status" = 'completed') OVER (PARTITION BY "ordering_key" ORDER BY "ordering_seq" DESC) AS "done_from_here"
        FROM inbox_entries WHERE "ordering_key" IS NOT NULL
      ), per_key AS (
        SELECT "ordering_key", count(*) FILTER (WHERE "status" <> 'completed') AS "open", max("ordering_seq") AS "last_seq" FROM keyed GROUP BY 1
      )
      SELECT
        (SELECT count(*)::int FROM keyed WHERE "status" <> 'completed' AND "done_from_here") AS "out_of_order",
        (SELECT count(*)::int FROM per_key WHERE "open" > 0) AS "open_keys",
        (SELECT count(*)::int FROM keyed WHERE "status" <> 'completed' AND NOT "waiting") AS "holders",
        (SELECT count(*)::int FROM inbox_entries_keys k JOIN per_key p USING ("ordering_key")
          WHERE k."busy" <> (p."open" > 0) OR k."last_seq" <> p."last_seq") AS "bad_key_rows",
        (SELECT count(*)::int FROM inbox_entries_keys) - (SELECT count(*)::int FROM per_key) AS "extra_key_rows",
        (SELECT count(*)::int FROM keyed WHERE "ordering_key" = $1 AND "status" = 'pending' AND "waiting") AS "blocked_waiting",
        (SELECT count(*)::int FROM keyed WHERE "ordering_key" = $1 AND "status" = 'dead_letter' AND "blocks_key" AND NOT "waiting") AS "blocked_head",
        (SELECT count(*)::int FROM keyed WHERE "status" = 'completed') AS "completed",
        (SELECT count(*)::int FROM events) AS "events"`,
    [BLOCKED_KEY],
  );
  const r = rows[0];
  const problems = [
    r.out_of_order && `${r.out_of_order} entries not done while a later one of their key is`,
    r.open_keys !== r.holders && `${r.open_keys} keys with work left but ${r.holders} holders`,
    r.bad_key_rows && `${r.bad_key_rows} key rows disagree with their entries (busy, last_seq)`,
    r.extra_key_rows && `${r.extra_key_rows} key rows without entries`,
    r.blocked_waiting !== blockedWaiting && `${r.blocked_waiting} entries waiting behind the blocked key, expected ${blockedWaiting}`,
    r.blocked_head !== 1 && `the blocked key's head is not a blocking dead letter`,
    r.completed !== r.events && `${r.completed} keyed entries completed but ${r.events} event rows`,
  ].filter(Boolean);
  if (problems.length) throw new Error(`${entrant.label}, after the library ran the seeded backlog: ${problems.join('; ')}`);
  ctx.log(`  keys claim ${entrant.label}: the library then ran ${r.completed - ctx.sizes.drainWarmup} of the seeded entries in order; key rows, holders and the blocked key check out`);
}
