// Shared pieces of the benchmark: workload sizes, payloads, database helpers, timing.
import { readdirSync, readFileSync } from 'node:fs';
import { Client } from 'pg';

export type SystemName = 'nestjs-inbox' | 'pg-boss' | 'graphile-worker' | 'raw-pg';

/** Concurrent callers in the receive workloads. */
export const CALLERS = 8;
/** Commands per call in the intake workload's batch sends (a broker consumer's batch). */
export const INTAKE_BATCH = 100;
/** Bytes of JSON in every payload (before the latency timestamp). */
export const PAYLOAD_BYTES = 200;
/** Steady send rate of the latency workload. */
export const LATENCY_RATE_PER_S = 200;
/** The command type / task / queue every system uses. */
export const COMMAND_TYPE = 'bench.order';
export const FAIL_COMMAND_TYPE = 'bench.fail';
export const LATENCY_COMMAND_TYPE = 'bench.latency';
/** Commands whose handler does nothing: what is left is each system's own cost per command. */
export const NOOP_COMMAND_TYPE = 'bench.noop';
/** Commands with an ordering key (the `keys` workload): the drain's handler, and a 2 ms one. */
export const KEYED_COMMAND_TYPE = 'bench.keyed';
export const SLOW_KEYED_COMMAND_TYPE = 'bench.keyed-slow';
/** How long the slow keyed handler waits (a timer: it models I/O, not CPU). */
export const SLOW_HANDLER_MS = 2;
/** The payload field the keyed handlers derive their ordering key from. */
export const KEY_FIELD = 'account';

/** The statement every handler runs once per command. */
export const EVENT_INSERT = 'INSERT INTO events (message_id, data) VALUES ($1, $2::jsonb)';
export const EVENTS_DDL = `CREATE TABLE IF NOT EXISTS events (
  id bigserial PRIMARY KEY,
  message_id text NOT NULL,
  data jsonb NOT NULL
)`;

export interface Sizes {
  receive: number;
  receiveWarmup: number;
  drain: number;
  drainWarmup: number;
  latencySeconds: number;
  latencyWarmup: number;
  dedupKeys: number;
  failure: number;
  scaleHistory: number;
  claimSamples: number;
  /** keys workload: keys of the keyed drain and of the keyed receive. */
  drainKeys: number;
  /** keys workload: the drain with a 2 ms handler, on this many keys (worker concurrency ≥ keys). */
  slowDrain: number;
  slowKeys: number;
  /** keys workload, claim: due entries, in how many keys, how many of them behind the one blocked key. */
  claimBacklog: number;
  claimKeys: number;
  blockedWaiting: number;
  /** keys workload, claim: entries the library then runs on the seeded backlog (its state checked after). */
  claimVerify: number;
}

export const FULL_SIZES: Sizes = {
  receive: 10_000,
  receiveWarmup: 1_000,
  drain: 10_000,
  // Steady state, for every system alike: enough to compile the hot paths and to use every pooled
  // connection at least once (a cold start is a boot cost, not a drain rate).
  drainWarmup: 3_000,
  latencySeconds: 5,
  latencyWarmup: 100,
  dedupKeys: 5_000,
  failure: 1_000,
  scaleHistory: 1_000_000,
  claimSamples: 30,
  drainKeys: 1_000,
  slowDrain: 10_000,
  slowKeys: 10,
  claimBacklog: 100_000,
  claimKeys: 10_000,
  blockedWaiting: 50_000,
  claimVerify: 2_000,
};

/**
 * Receives four times and drains three times longer, each after a longer warm-up: the steady state
 * of code that needs more calls to be compiled (the OpenTelemetry SDK's, a keyed receive's). The
 * other sizes (the 2 ms drain, the claim backlogs) are FULL_SIZES'.
 */
export const LONG_SIZES: Sizes = { ...FULL_SIZES, receive: 40_000, receiveWarmup: 5_000, drain: 30_000, drainWarmup: 10_000 };

export const SMOKE_SIZES: Sizes = {
  receive: 400,
  receiveWarmup: 50,
  drain: 400,
  drainWarmup: 50,
  latencySeconds: 1,
  latencyWarmup: 20,
  dedupKeys: 200,
  failure: 60,
  scaleHistory: 20_000,
  claimSamples: 5,
  drainKeys: 40,
  slowDrain: 400,
  slowKeys: 10,
  claimBacklog: 2_000,
  claimKeys: 200,
  blockedWaiting: 1_000,
  claimVerify: 200,
};

/** A ~200-byte JSON command payload; `extra` fields are added before padding. */
/** An integer setting from the environment (the benchmark's tuning knobs), or the default. */
export function envInt(name: string, fallback: number): number {
  const value = process.env[name];
  return value ? Number.parseInt(value, 10) : fallback;
}

export function makePayload(i: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const payload: Record<string, unknown> = {
    orderId: `ord-${String(i).padStart(8, '0')}`,
    customerId: `cus-${(i * 7919) % 100_000}`,
    amountCents: 1000 + ((i * 37) % 90_000),
    currency: 'EUR',
    lines: [
      { sku: 'SKU-1001', qty: 1 + (i % 3) },
      { sku: 'SKU-2002', qty: 1 },
    ],
    ...extra,
    note: '',
  };
  const size = Buffer.byteLength(JSON.stringify(payload));
  payload.note = 'n'.repeat(Math.max(0, PAYLOAD_BYTES - size));
  return payload;
}

/** Milliseconds on CLOCK_MONOTONIC: one clock for every process on this machine (latency stamps). */
export function monoMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * How long this process's main thread has been ready to run but waiting for a CPU, in ms (Linux
 * schedstat; NaN elsewhere). On a machine whose cores the server shares, a timer that falls due
 * while the server's backends hold every core fires that much later.
 */
export function runQueueWaitMs(): number {
  try {
    return Number(readFileSync('/proc/self/schedstat', 'utf8').split(' ')[1]) / 1e6;
  } catch {
    return NaN;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs `fn(0..total-1)` from `callers` concurrent loops pulling from one counter. */
export async function runCallers(total: number, callers: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: callers }, async () => {
      for (;;) {
        const i = next++;
        if (i >= total) return;
        await fn(i);
      }
    }),
  );
}

export function databaseUrl(adminUrl: string, database: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

/**
 * A connected client. A dropped connection (DROP DATABASE … WITH (FORCE) of a failed run, a server
 * restart) fails its next query; the 'error' event must not crash the orchestrator meanwhile.
 */
export async function connectClient(url: string): Promise<Client> {
  const client = new Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

export async function withClient<T>(url: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await connectClient(url);
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function createDatabase(adminUrl: string, name: string, template?: string): Promise<string> {
  await withClient(adminUrl, async (client) => {
    await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await client.query(template ? `CREATE DATABASE "${name}" TEMPLATE "${template}" STRATEGY FILE_COPY` : `CREATE DATABASE "${name}"`);
  });
  return databaseUrl(adminUrl, name);
}

export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  await withClient(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
}

/** Polls `probe` every `everyMs` until it returns true; resolves with the time it did (performance.now()). */
export async function pollUntil(probe: () => Promise<boolean>, what: string, timeoutMs: number, everyMs = 10): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await probe()) return performance.now();
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Peak resident set size (VmHWM) of a live process, in MiB. */
export function peakRssMiB(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

export function loadAverage(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}

/**
 * The postmaster's pid when the server runs on this machine (embedded, or a local DATABASE_URL
 * visible in /proc), found through a backend's parent; undefined otherwise.
 */
export async function localPostmasterPid(adminUrl: string): Promise<number | undefined> {
  // Read /proc while the backend is alive (it exits with the connection).
  return withClient(adminUrl, async (client) => {
    const backend = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    try {
      const stat = readFileSync(`/proc/${backend}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      return readFileSync(`/proc/${ppid}/cmdline`, 'utf8').includes('postgres') ? ppid : undefined;
    } catch {
      return undefined;
    }
  });
}

const MS_PER_CLOCK_TICK = 1000 / 100; // USER_HZ is 100 on Linux

/** CPU (user + system, ms) used so far by the postmaster and all its live children (backends, walwriter…). */
export function serverCpuMs(postmasterPid: number): number {
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // fields[1] = ppid, fields[11] = utime, fields[12] = stime (stat fields 4, 14, 15)
      if (Number(entry) === postmasterPid || Number(fields[1]) === postmasterPid) ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // process ended meanwhile
    }
  }
  return ticks * MS_PER_CLOCK_TICK;
}
