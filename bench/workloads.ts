// The nine workloads, orchestrator side: fresh database, child process(es), timing, checks.
import type { Client } from 'pg';
import { BenchChild } from './child-process';
import { claimProbe } from './claim-probe';
import { keysClaim } from './keys-claim';
import { checkKeyOrder, checkRunRecord, keysDrainPlan, perKeyFloor, perKeySerialLimit, type KeysDrainVariant } from './keys-drains';
import { accountOf } from './roles';
import {
  connectClient,
  createDatabase,
  dropDatabase,
  LATENCY_RATE_PER_S,
  KEY_FIELD,
  makePayload,
  pollUntil,
  serverCpuMs,
  withClient,
  type Sizes,
  type SystemName,
} from './common';
import type { CapturedStatement, Handler } from './protocol';
import { Results } from './stats';
import { recordTelemetry, telemetryModeOf, type TelemetryVariant } from './telemetry-workload';
import { loadAdapter } from './systems';
import { commandTypeFor, writesNoEvent } from './systems/inbox-table';
import type { EnqueueItem, SystemAdapter } from './systems/types';

export type WorkloadName = 'receive' | 'intake' | 'drain' | 'drain-noop' | 'latency' | 'dedup' | 'failure' | 'scale' | 'keys' | 'telemetry';
export const WORKLOADS: WorkloadName[] = ['receive', 'intake', 'drain', 'drain-noop', 'latency', 'dedup', 'failure', 'scale', 'keys', 'telemetry'];

/** A system as one workload runs it (raw-pg has two drain floors; scale runs nestjs-inbox twice). */
export interface Entrant {
  system: SystemName;
  label: string;
  variant?: 'batch' | 'per-command' | 'empty' | 'history' | 'nest-host' | KeysVariant | TelemetryVariant;
}

/** The keys workload's measurements, each side by side with the same one without keys. */
export type KeysVariant = 'receive-plain' | 'receive-keyed' | KeysDrainVariant | 'claim-plain' | 'claim-keyed';

export const ENTRANTS: Record<WorkloadName, Entrant[]> = {
  receive: [
    { system: 'nestjs-inbox', label: 'nestjs-inbox' },
    { system: 'raw-pg', label: 'raw-pg bare insert' },
    { system: 'pg-boss', label: 'pg-boss' },
    { system: 'graphile-worker', label: 'graphile-worker' },
  ],
  // Bulk intake: batches of INTAKE_BATCH commands per call (a broker consumer's), and the same
  // commands one call each through nestjs-inbox's receive.
  intake: [
    { system: 'nestjs-inbox', label: 'nestjs-inbox receiveMany', variant: 'batch' },
    { system: 'nestjs-inbox', label: 'nestjs-inbox receive, one call per command' },
    { system: 'graphile-worker', label: 'graphile-worker addJobs', variant: 'batch' },
    { system: 'pg-boss', label: 'pg-boss insert', variant: 'batch' },
    { system: 'raw-pg', label: 'raw-pg multi-row insert', variant: 'batch' },
  ],
  drain: [
    { system: 'nestjs-inbox', label: 'nestjs-inbox' },
    { system: 'graphile-worker', label: 'graphile-worker' },
    // The same worker booted inside the Nest + TypeORM application nestjs-inbox runs in: what a Nest
    // application that chose graphile-worker would carry (memory like for like).
    { system: 'graphile-worker', label: 'graphile-worker in a Nest + TypeORM app', variant: 'nest-host' },
    { system: 'pg-boss', label: 'pg-boss' },
    { system: 'raw-pg', label: 'raw-pg batch floor', variant: 'batch' },
    { system: 'raw-pg', label: 'raw-pg per-command floor', variant: 'per-command' },
  ],
  // The same drain with a handler that does nothing: each system's own cost per command.
  'drain-noop': [
    { system: 'nestjs-inbox', label: 'nestjs-inbox' },
    { system: 'graphile-worker', label: 'graphile-worker' },
    { system: 'graphile-worker', label: 'graphile-worker in a Nest + TypeORM app', variant: 'nest-host' },
    { system: 'pg-boss', label: 'pg-boss' },
    { system: 'raw-pg', label: 'raw-pg batch floor', variant: 'batch' },
  ],
  latency: [
    { system: 'nestjs-inbox', label: 'nestjs-inbox' },
    { system: 'graphile-worker', label: 'graphile-worker' },
    { system: 'pg-boss', label: 'pg-boss' },
  ],
  dedup: [
    { system: 'nestjs-inbox', label: 'nestjs-inbox' },
    { system: 'raw-pg', label: 'raw-pg bare insert' },
    { system: 'pg-boss', label: 'pg-boss (short + singletonKey)' },
    { system: 'graphile-worker', label: 'graphile-worker (jobKey unsafe_dedupe)' },
  ],
  failure: [
    { system: 'nestjs-inbox', label: 'nestjs-inbox' },
    { system: 'pg-boss', label: 'pg-boss' },
  ],
  scale: [
    { system: 'nestjs-inbox', label: 'nestjs-inbox, empty table', variant: 'empty' },
    { system: 'nestjs-inbox', label: 'nestjs-inbox, with history', variant: 'history' },
  ],
  // Ordering keys against the same work without them (nestjs-inbox only).
  keys: [
    { system: 'nestjs-inbox', label: 'receive, no key', variant: 'receive-plain' },
    { system: 'nestjs-inbox', label: 'receive with a key', variant: 'receive-keyed' },
    { system: 'nestjs-inbox', label: 'drain, no keys', variant: 'drain-plain' },
    { system: 'nestjs-inbox', label: 'drain, keyed', variant: 'drain-keyed' },
    { system: 'nestjs-inbox', label: 'drain, few keys, 2 ms handler', variant: 'drain-slow' },
    { system: 'nestjs-inbox', label: 'claim, no keys', variant: 'claim-plain' },
    { system: 'nestjs-inbox', label: 'claim, keyed, one key blocked', variant: 'claim-keyed' },
  ],
  // The drain and the receive of nestjs-inbox with the OpenTelemetry API absent, installed without an
  // SDK, and with the SDK registered (bench/telemetry.ts).
  telemetry: [
    { system: 'nestjs-inbox', label: 'drain, api absent', variant: 'drain-absent' },
    { system: 'nestjs-inbox', label: 'drain, no SDK', variant: 'drain-api' },
    { system: 'nestjs-inbox', label: 'drain, SDK', variant: 'drain-sdk' },
    { system: 'nestjs-inbox', label: 'drain, SDK, inbox telemetry off', variant: 'drain-sdk-inbox-off' },
    { system: 'nestjs-inbox', label: 'receive, api absent', variant: 'receive-absent' },
    { system: 'nestjs-inbox', label: 'receive, no SDK', variant: 'receive-api' },
    { system: 'nestjs-inbox', label: 'receive, SDK', variant: 'receive-sdk' },
    { system: 'nestjs-inbox', label: 'receive, SDK, inbox telemetry off', variant: 'receive-sdk-inbox-off' },
  ],
};

export interface RunContext {
  adminUrl: string;
  /** Set when the server runs on this machine: its CPU per command is reported too. */
  postmasterPid?: number;
  sizes: Sizes;
  /** 0-based repetition. */
  rep: number;
  results: Results;
  cpuProfileDir?: string;
  plansFile: string;
  scaleTemplate?: string;
  log(line: string): void;
}

export const TIMEOUT_MS = 300_000;

function dbName(workload: WorkloadName, entrant: Entrant, rep: number): string {
  const system = entrant.system.replace(/[^a-z0-9]/g, '_');
  return `bench_${system}${entrant.variant ? `_${entrant.variant.replace(/-/g, '_')}` : ''}_${workload.replace('-', '_')}_${rep + 1}`;
}

/** Accounts of the payloads, round robin, and whether they are also the entries' ordering keys. */
export interface Accounts {
  count: number;
  prefix: string;
  keyed: boolean;
}

export function items(prefix: string, count: number, offset = 0, accounts?: Accounts): EnqueueItem[] {
  return Array.from({ length: count }, (_, i) => {
    if (!accounts) return { messageId: `${prefix}-${i}`, payload: makePayload(offset + i) };
    const account = accountOf(i, accounts.count, accounts.prefix);
    return { messageId: `${prefix}-${i}`, payload: makePayload(offset + i, { [KEY_FIELD]: account }), orderingKey: accounts.keyed ? account : undefined };
  });
}

export function spawnOptions(ctx: RunContext, system: SystemName) {
  return system === 'nestjs-inbox' && ctx.cpuProfileDir ? { cpuProfileDir: ctx.cpuProfileDir } : {};
}

/** Runs one (workload, entrant) measurement in a fresh database, dropped afterwards. */
export async function runEntrant(ctx: RunContext, workload: WorkloadName, entrant: Entrant): Promise<void> {
  const name = dbName(workload, entrant, ctx.rep);
  const adapter = loadAdapter(entrant.system);
  const children: BenchChild[] = [];
  const track = (child: BenchChild) => (children.push(child), child);
  try {
    let url: string;
    if (workload === 'scale' && entrant.variant === 'history') {
      url = await createDatabase(ctx.adminUrl, name, ctx.scaleTemplate);
    } else {
      url = await createDatabase(ctx.adminUrl, name);
      await adapter.prepare(url);
    }
    switch (workload) {
      case 'receive':
      case 'intake':
      case 'dedup':
        return await receive(ctx, workload, entrant, adapter, url, track);
      case 'drain':
      case 'drain-noop':
      case 'scale':
        return await drain(ctx, workload, entrant, adapter, url, track);
      case 'latency':
        return await latency(ctx, entrant, adapter, url, track);
      case 'failure':
        return await failure(ctx, entrant, adapter, url, track);
      case 'keys':
        if (entrant.variant === 'receive-plain' || entrant.variant === 'receive-keyed') return await receive(ctx, workload, entrant, adapter, url, track);
        if (entrant.variant === 'claim-plain' || entrant.variant === 'claim-keyed') return await keysClaim(ctx, entrant, adapter, url, track);
        return await drain(ctx, workload, entrant, adapter, url, track);
      case 'telemetry':
        if (entrant.variant?.startsWith('receive-')) return await receive(ctx, workload, entrant, adapter, url, track);
        return await drain(ctx, workload, entrant, adapter, url, track);
    }
  } finally {
    for (const child of children) child.kill();
    await dropDatabase(ctx.adminUrl, name).catch((error: unknown) => ctx.log(`  (could not drop ${name}: ${String(error)})`));
  }
}

export type Track = (child: BenchChild) => BenchChild;

/** The accounts (and, keyed, the ordering keys) of a drain's timed entries; the warm-up's are others. */
const TIMED_ACCOUNTS = 'acc';

async function receive(ctx: RunContext, workload: 'receive' | 'intake' | 'dedup' | 'keys' | 'telemetry', entrant: Entrant, adapter: SystemAdapter, url: string, track: Track) {
  const dedup = workload === 'dedup';
  const count = dedup ? ctx.sizes.dedupKeys * 2 : ctx.sizes.receive;
  // The keys workload's two receives send the same payloads (naming an account); one also gives it as ordering key.
  const mode = dedup ? 'dedup' : entrant.variant === 'receive-keyed' ? 'keyed' : entrant.variant === 'batch' ? 'batch' : 'plain';
  const orderingKeys = workload === 'keys' ? ctx.sizes.drainKeys : undefined;
  const child = track(
    new BenchChild(
      { system: entrant.system, role: 'send', url, count, warmup: ctx.sizes.receiveWarmup, mode, orderingKeys, telemetry: telemetryModeOf(entrant) },
      spawnOptions(ctx, entrant.system),
    ),
  );
  await child.waitFor('ready');
  const server0 = ctx.postmasterPid ? serverCpuMs(ctx.postmasterPid) : NaN;
  child.send('go');
  const result = await child.waitFor('result', TIMEOUT_MS);
  const serverMs = ctx.postmasterPid ? serverCpuMs(ctx.postmasterPid) - server0 : NaN;
  child.send('stop');
  await child.exit();
  const rate = (count / (result.elapsedMs as number)) * 1000;
  // Intake counts commands (a batch call carries many); the receives count calls (one command each).
  const rateMetric = workload === 'intake' ? 'commands/s' : 'calls/s';
  ctx.results.add({ workload, system: entrant.label, metric: rateMetric, unit: rateMetric, digits: 0 }, ctx.rep, rate);
  const per = workload === 'intake' ? 'command' : 'call';
  ctx.results.add({ workload, system: entrant.label, metric: `statements per ${per}`, unit: 'stmt', digits: 2 }, ctx.rep, (result.queries as number) / count);
  ctx.results.add({ workload, system: entrant.label, metric: `client CPU per ${per}`, unit: 'µs', digits: 0 }, ctx.rep, ((result.cpuMs as number) * 1000) / count);
  if (Number.isFinite(serverMs)) {
    ctx.results.add({ workload, system: entrant.label, metric: `PostgreSQL CPU per ${per}`, unit: 'µs', digits: 0 }, ctx.rep, (serverMs * 1000) / count);
  }
  const expected = ctx.sizes.receiveWarmup + (dedup ? ctx.sizes.dedupKeys : count);
  const stored = await withClient(url, (client) => adapter.stored(client, dedup ? 'dedup' : 'plain'));
  if (stored !== expected) throw new Error(`${entrant.label}: ${stored} commands stored, expected ${expected}`);
  if (workload === 'telemetry') recordTelemetry(ctx, entrant, result.telemetry, ctx.sizes.receiveWarmup + count, 'received');
  ctx.log(`  ${workload} ${entrant.label}: ${rate.toFixed(0)} calls/s (${count} calls in ${(result.elapsedMs as number).toFixed(0)} ms)`);
}

async function drain(ctx: RunContext, workload: 'drain' | 'drain-noop' | 'scale' | 'keys' | 'telemetry', entrant: Entrant, adapter: SystemAdapter, url: string, track: Track) {
  const keys = workload === 'keys' ? keysDrainPlan(ctx.sizes, entrant.variant as KeysDrainVariant) : undefined;
  const n = keys?.count ?? ctx.sizes.drain;
  const warm = ctx.sizes.drainWarmup;
  const kind: Handler = keys?.kind ?? (workload === 'drain-noop' ? 'noop' : 'event');
  const variant = entrant.variant === 'batch' || entrant.variant === 'per-command' || entrant.variant === 'nest-host' ? entrant.variant : undefined;
  // The scale workload probes the claim statement the worker actually sent.
  const captureClaim = workload === 'scale' ? true : undefined;
  // Warm-up entries have keys of their own: the timed entries find theirs new.
  const accounts = (prefix: string): Accounts | undefined => (keys ? { count: keys.accounts, prefix, keyed: keys.keyed } : undefined);
  const child = track(
    new BenchChild(
      {
        system: entrant.system,
        role: 'work',
        url,
        count: n,
        warmup: warm,
        handler: kind,
        variant,
        captureClaim,
        concurrency: keys?.concurrency,
        batchSize: keys?.batchSize,
        telemetry: telemetryModeOf(entrant),
      },
      spawnOptions(ctx, entrant.system),
    ),
  );
  await child.waitFor('ready');
  const bootRss = child.peakRssMiB();
  const enqueuer = await adapter.openEnqueuer(url);
  const poll = await connectClient(url);
  try {
    const done = (expected: number) => () => adapter.finished(poll, kind, expected);
    // Warm-up: same path, not timed.
    await enqueuer.enqueue(items('warm', warm, 1_000_000, accounts('warm-acc')), kind);
    child.send('go');
    await pollUntil(done(warm), `${entrant.label} warm-up`, TIMEOUT_MS);
    // Timed: from the commit of one INSERT holding all N commands until all are finished.
    await enqueuer.enqueue(items('cmd', n, 0, accounts(TIMED_ACCOUNTS)), kind);
    const wal0 = await walPosition(poll);
    const t0 = performance.now();
    child.send('go');
    const server0 = ctx.postmasterPid ? serverCpuMs(ctx.postmasterPid) : NaN;
    const t1 = await pollUntil(done(warm + n), `${entrant.label} ${workload}`, TIMEOUT_MS);
    child.send('mark');
    const serverMs = ctx.postmasterPid ? serverCpuMs(ctx.postmasterPid) - server0 : NaN;
    const walBytes = await walBytesSince(poll, wal0);
    const rss = child.peakRssMiB();
    const result = await child.stop();
    const marks = result.queryMarks as number[];
    const cpuMarks = result.cpuMarksMs as number[];
    const waitMarks = result.waitMarksMs as number[];
    const rate = (n / (t1 - t0)) * 1000;
    const metric = (name: string, unit: string, digits: number, value: number) =>
      ctx.results.add({ workload, system: entrant.label, metric: name, unit, digits }, ctx.rep, value);
    metric('commands/s', 'cmd/s', 0, rate);
    if (kind === 'keyed-slow') metric('per-key serial limit', 'cmd/s', 0, perKeySerialLimit(keys!.accounts));
    if (workload !== 'scale') {
      if (rss !== undefined) metric('worker peak RSS', 'MiB', 1, rss);
      // What the drain itself added over the booted, idle worker (the framework's load-time share excluded).
      if (rss !== undefined && bootRss !== undefined) metric('peak RSS growth after boot', 'MiB', 1, rss - bootRss);
      // marks: [warm-up go, timed go, done]; idle polls inside the window count too.
      if (marks.length === 3) {
        metric('worker statements per command', 'stmt', 2, (marks[2] - marks[1]) / n);
        metric('worker CPU per command', 'µs', 0, ((cpuMarks[2] - cpuMarks[1]) * 1000) / n);
        // Ready to run, but every core busy (mostly with the server's backends): its timers fire late.
        const waited = waitMarks[2] - waitMarks[1];
        if (Number.isFinite(waited)) metric('worker waiting for a CPU', '%', 1, (waited / (t1 - t0)) * 100);
      }
      if (Number.isFinite(serverMs)) metric('PostgreSQL CPU per command', 'µs', 0, (serverMs * 1000) / n);
      // What the server wrote for it: row versions, index entries, locks (the watcher's reads write none).
      metric('WAL bytes per command', 'B', 0, walBytes / n);
    }
    await checkDrained(entrant, adapter, poll, kind, warm + n);
    if (kind === 'keyed-slow') {
      const timings = await checkRunRecord(poll, entrant.label, commandTypeFor(kind), result.runs as Array<[string, number, number]>, `${TIMED_ACCOUNTS}-`);
      // Where the time went: the 2 ms timer itself, and the pauses of a key between its entries.
      metric('2 ms handler, mean run', 'ms', 3, timings.meanHandlerMs);
      metric('a key idle between its entries', 'ms', 0, timings.idlePerKeyMs);
      metric('pauses over 1 ms per key', 'pauses', 1, timings.longPausesPerKey);
    } else if (keys?.keyed) await checkKeyOrder(poll, entrant.label);
    if (workload === 'telemetry') recordTelemetry(ctx, entrant, result.telemetry, warm + n, 'processed');
    // The same handler work in bare loops, right after.
    if (kind === 'keyed-slow') metric('per-key floor (bare loops)', 'cmd/s', 0, await perKeyFloor(keys!.accounts, n));
    ctx.log(
      `  ${workload} ${entrant.label}: ${rate.toFixed(0)} cmd/s (${n} in ${(t1 - t0).toFixed(0)} ms)${rss ? `, worker peak RSS ${rss.toFixed(1)} MiB` : ''}`,
    );
    if (workload === 'scale') {
      const enqueuePending = () => enqueuer.enqueue(items('probe', n), kind);
      await claimProbe(ctx, entrant, poll, enqueuePending, result.claimStatement as CapturedStatement | undefined);
    }
  } finally {
    await enqueuer.close().catch(() => undefined);
    await poll.end().catch(() => undefined);
  }
}

/** The server's current WAL position. */
async function walPosition(client: Client): Promise<string> {
  return (await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn;
}

/** WAL bytes written since `from` (every session's: the timed work is the only writer then). */
async function walBytesSince(client: Client, from: string): Promise<number> {
  return Number((await client.query<{ bytes: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::text AS bytes', [from])).rows[0].bytes);
}

/**
 * After a drain: event handlers left exactly one event row per command (at least one for the
 * at-least-once peers); handlers that write none (no-op, 2 ms wait) none, and every command a
 * system keeps ended Completed.
 */
async function checkDrained(entrant: Entrant, adapter: SystemAdapter, client: Client, kind: Handler, total: number): Promise<void> {
  const { rows } = await client.query<{ n: number; d: number }>('SELECT count(*)::int AS n, count(DISTINCT message_id)::int AS d FROM events');
  if (writesNoEvent(kind)) {
    if (rows[0].n !== 0) throw new Error(`${entrant.label}: ${rows[0].n} event rows after a drain whose handler writes none`);
    // graphile-worker deletes completed jobs: for it, "finished" (no job left) is the check.
    const completed = adapter.completed ? await adapter.completed(client, kind) : total;
    if (completed !== total) throw new Error(`${entrant.label}: ${completed} commands completed, expected ${total}`);
    return;
  }
  const exactlyOnce = entrant.system === 'nestjs-inbox' || entrant.system === 'raw-pg';
  if (rows[0].d !== total || (exactlyOnce && rows[0].n !== total)) {
    throw new Error(`${entrant.label}: ${rows[0].n} event rows (${rows[0].d} distinct) for ${total} commands`);
  }
}

async function latency(ctx: RunContext, entrant: Entrant, adapter: SystemAdapter, url: string, track: Track) {
  const count = Math.round(LATENCY_RATE_PER_S * ctx.sizes.latencySeconds);
  const warm = ctx.sizes.latencyWarmup;
  const worker = track(
    new BenchChild({ system: entrant.system, role: 'work', url, count, warmup: warm, handler: 'latency' }, spawnOptions(ctx, entrant.system)),
  );
  const sender = track(new BenchChild({ system: entrant.system, role: 'latency-send', url, count, warmup: warm, rate: LATENCY_RATE_PER_S }));
  await Promise.all([worker.waitFor('ready'), sender.waitFor('ready')]);
  sender.send('go');
  const sent = await sender.waitFor('result', TIMEOUT_MS);
  sender.send('stop');
  await sender.exit();
  if (sent.errors) throw new Error(`${entrant.label}: ${String(sent.errors)} sends failed`);
  await withClient(url, (client) => pollUntil(() => adapter.finished(client, 'latency', warm + count), `${entrant.label} latency run`, 60_000, 20));
  const result = await worker.stop();
  const summary = result.latency as { n: number; p50: number; p99: number; max: number };
  if (summary.n !== count) throw new Error(`${entrant.label}: ${summary.n} latencies recorded, expected ${count}`);
  ctx.results.add({ workload: 'latency', system: entrant.label, metric: 'p50 send→handler', unit: 'ms', digits: 2 }, ctx.rep, summary.p50);
  ctx.results.add({ workload: 'latency', system: entrant.label, metric: 'p99 send→handler', unit: 'ms', digits: 2 }, ctx.rep, summary.p99);
  ctx.log(
    `  latency ${entrant.label}: p50 ${summary.p50.toFixed(2)} ms, p99 ${summary.p99.toFixed(2)} ms, max ${summary.max.toFixed(2)} ms ` +
      `(${count} at ${LATENCY_RATE_PER_S}/s, sender worst lateness ${(sent.worstLateMs as number).toFixed(1)} ms)`,
  );
}

async function failure(ctx: RunContext, entrant: Entrant, adapter: SystemAdapter, url: string, track: Track) {
  const n = ctx.sizes.failure;
  const child = track(new BenchChild({ system: entrant.system, role: 'work', url, count: n, warmup: 0, handler: 'fail' }, spawnOptions(ctx, entrant.system)));
  await child.waitFor('ready');
  const enqueuer = await adapter.openEnqueuer(url);
  const poll = await connectClient(url);
  try {
    await enqueuer.enqueue(items('fail', n), 'fail');
    const t0 = performance.now();
    child.send('go');
    const server0 = ctx.postmasterPid ? serverCpuMs(ctx.postmasterPid) : NaN;
    const t1 = await pollUntil(() => adapter.finished(poll, 'fail', n), `${entrant.label} failure path`, TIMEOUT_MS);
    child.send('mark');
    const serverMs = ctx.postmasterPid ? serverCpuMs(ctx.postmasterPid) - server0 : NaN;
    const result = await child.stop();
    const marks = result.queryMarks as number[];
    const cpuMarks = result.cpuMarksMs as number[];
    // Every command must have had exactly 3 attempts.
    const check =
      entrant.system === 'nestjs-inbox'
        ? `SELECT count(*)::int AS n FROM inbox_entries WHERE status = 'dead_letter' AND retry_count = 3`
        : `SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'bench-fail' AND state = 'failed' AND retry_count = 2`;
    const attempts = (await poll.query<{ n: number }>(check)).rows[0].n;
    if (attempts !== n) throw new Error(`${entrant.label}: ${attempts} of ${n} commands show exactly 3 attempts`);
    const seconds = (t1 - t0) / 1000;
    ctx.results.add({ workload: 'failure', system: entrant.label, metric: 'to dead letter (3 attempts)', unit: 'cmd/s', digits: 0 }, ctx.rep, n / seconds);
    ctx.results.add({ workload: 'failure', system: entrant.label, metric: 'time to all dead', unit: 's', digits: 2 }, ctx.rep, seconds);
    if (marks.length === 2) {
      ctx.results.add({ workload: 'failure', system: entrant.label, metric: 'worker statements per command', unit: 'stmt', digits: 2 }, ctx.rep, (marks[1] - marks[0]) / n);
      ctx.results.add({ workload: 'failure', system: entrant.label, metric: 'worker CPU per command', unit: 'µs', digits: 0 }, ctx.rep, ((cpuMarks[1] - cpuMarks[0]) * 1000) / n);
    }
    if (Number.isFinite(serverMs)) {
      ctx.results.add({ workload: 'failure', system: entrant.label, metric: 'PostgreSQL CPU per command', unit: 'µs', digits: 0 }, ctx.rep, (serverMs * 1000) / n);
    }
    ctx.log(`  failure ${entrant.label}: ${n} commands dead after 3 attempts in ${seconds.toFixed(2)} s (${(n / seconds).toFixed(0)} cmd/s)`);
  } finally {
    await enqueuer.close().catch(() => undefined);
    await poll.end().catch(() => undefined);
  }
}

/** The 1M-row history database the scale workload copies (CREATE DATABASE … TEMPLATE, FILE_COPY). */
export async function buildScaleTemplate(adminUrl: string, name: string, historyRows: number, log: (line: string) => void): Promise<void> {
  const t0 = performance.now();
  const url = await createDatabase(adminUrl, name);
  await loadAdapter('nestjs-inbox').prepare(url);
  await withClient(url, async (client) => {
    // 90% Completed, 10% DeadLetter (3 attempts), received over the past ~12 days; another command type.
    await client.query(
      `INSERT INTO inbox_entries ("message_id", "command_type", "payload", "status", "retry_count", "error", "received_at", "processed_at")
       SELECT 'hist-' || g, 'bench.history', $1::jsonb,
         (CASE WHEN g % 10 = 0 THEN 'dead_letter' ELSE 'completed' END)::inbox_status,
         CASE WHEN g % 10 = 0 THEN 3 ELSE 0 END,
         CASE WHEN g % 10 = 0 THEN 'Gave up after 3 attempt(s): upstream said no' END,
         now() - interval '30 days' + g * interval '1 second',
         now() - interval '30 days' + g * interval '1 second' + interval '40 milliseconds'
       FROM generate_series(1, $2::int) AS g`,
      [JSON.stringify(makePayload(42)), historyRows],
    );
    await client.query('VACUUM (ANALYZE) inbox_entries');
  });
  log(`scale template ${name}: ${historyRows.toLocaleString('en-US')} history rows in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
