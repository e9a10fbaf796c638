// The fault schedule: SIGKILLs of random workers, PostgreSQL restarts and a rolling deploy, spread at
// random over the window in which the producers send, so every fault lands while commands flow.
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'pg';
import type { PostgresHandle } from '../scripts/postgres.mjs';
import type { Release } from './chaos-commands';
import type { WorkerPool } from './workers';

export interface FaultPlan {
  windowMs: number;
  kills: number;
  dbRestarts: number;
  /** Pause between stopping and starting the embedded server, so the outage is long enough to see. */
  downtimeMs: number;
  /** How long a worker may take to reconnect once PostgreSQL is back. */
  resumeDeadlineMs: number;
  /** The release every slot is moved to, one slot at a time. */
  upgradeTo: Release;
  /** How long an upgrading worker may take to drain, and its successor to boot. */
  upgradeTimeoutMs: number;
}

export interface Outage {
  startedAt: number;
  upAt: number;
  /** Workers that were processing when the server went down, and what became of each. */
  workers: Array<{ worker: string; pid: number; fate: string; survived: boolean }>;
}

export interface FaultLog {
  killed: string[];
  outages: Outage[];
  violations: string[];
}

export async function runFaults(pool: WorkerPool, postgres: PostgresHandle, databaseUrl: string, plan: FaultPlan): Promise<FaultLog> {
  const start = Date.now();
  const log: FaultLog = { killed: [], outages: [], violations: [] };
  // Workers being followed through a PostgreSQL restart are spared by the kills until the follow
  // ends: on a slow machine the follow takes long, and a kill in it leaves the restart unproven.
  const followed = new Set<string>();
  // One random moment in each of `count` equal slots of [from, to] (fractions of the window).
  const moments = (count: number, from: number, to: number) =>
    Array.from({ length: count }, (_, i) => start + (from + ((to - from) * (i + 0.15 + 0.7 * Math.random())) / count) * plan.windowMs);
  const at = async (moment: number) => {
    if (moment > Date.now()) await sleep(moment - Date.now());
  };
  // Kills and restarts run on separate timelines, so a slow one does not push the other back.
  const kills = async () => {
    for (const moment of moments(plan.kills, 0, 1)) {
      await at(moment);
      const killed = await killSomeWorker(pool, followed);
      if (killed) log.killed.push(killed);
      else log.violations.push('no worker was up to be killed for 60 s');
    }
  };
  // Restarts fall mid-window: after the poison commands (sent first) have mostly dead-lettered,
  // with traffic left after them.
  const restarts = async () => {
    for (const moment of moments(plan.dbRestarts, 0.4, 0.7)) {
      await at(moment);
      log.outages.push(await restartDatabase(pool, postgres, databaseUrl, plan, log.violations, followed));
    }
  };
  // Each slot in turn, in random order; restarts in between keep the slot's current release.
  const upgrades = async () => {
    const order = shuffled(pool.fleet.map((slot) => slot.worker));
    for (const [i, moment] of moments(order.length, 0.05, 0.9).entries()) {
      await at(moment);
      await pool.upgrade(order[i]!, plan.upgradeTo, plan.upgradeTimeoutMs).catch((error: unknown) => {
        log.violations.push(`upgrade of ${order[i]} to the ${plan.upgradeTo} release failed: ${error instanceof Error ? error.message : error}`);
      });
    }
  };
  await Promise.all([kills(), restarts(), upgrades()]);
  return log;
}

function shuffled<T>(items: T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy;
}

async function killSomeWorker(pool: WorkerPool, spare: ReadonlySet<string>): Promise<string | undefined> {
  // Right after a crash every worker may still be booting, or be followed through a restart (at
  // most its resume deadline): wait for one that can be killed.
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
    const name = await pool.killRandom(spare);
    if (name) return name;
  }
  return undefined;
}

/**
 * Restarts PostgreSQL, then follows each worker that was processing before: it must stay up,
 * reconnect to the new server and (while there is work) complete commands, without a restart.
 */
async function restartDatabase(
  pool: WorkerPool,
  postgres: PostgresHandle,
  url: string,
  plan: FaultPlan,
  violations: string[],
  followed: Set<string>,
): Promise<Outage> {
  // Poison commands are sent first so that their crash cycles are over before the restart; on a
  // slow machine (workers take seconds to boot) they last longer: a worker followed through the
  // outage would be cut down by one, so the restart waits for them a while.
  for (const deadline = Date.now() + 60_000; Date.now() < deadline && (await poisonOpen(url)) !== 0; ) await sleep(250);
  // Follow as many workers as possible through the outage: give restarting ones a moment.
  await pool.waitUntil(() => pool.readyCount() === pool.size, 8000).catch(() => undefined);
  // On a loaded machine a crash-looping fleet may have no worker up yet: a restart with none to
  // follow proves nothing, so wait for one a while longer.
  await pool.waitUntil(() => pool.readyCount() > 0, 30_000).catch(() => undefined);
  const before = pool.readyPids();
  for (const worker of before.keys()) followed.add(worker);
  const startedAt = Date.now();
  await postgres.restart({ downtimeMs: plan.downtimeMs });
  const upAt = Date.now();
  const fates = new Map<string, { fate: string; survived: boolean }>();
  const reconnectedAt = new Map<string, number>();
  const since = (ms: number) => `${((ms - upAt) / 1000).toFixed(1)} s`;
  for (const deadline = upAt + plan.resumeDeadlineMs; fates.size < before.size; await sleep(200)) {
    const seen = await activitySince(url, upAt);
    const alive = pool.readyPids();
    for (const [worker, pid] of before) {
      const id = `${worker}-${pid}`;
      if (fates.has(worker)) continue;
      if (alive.get(worker) !== pid) {
        const event = pool.events.find((e) => e.pid === pid);
        // The pool reports exits on their own as violations; a kill or poison ends the follow.
        const fate = event?.kind === 'unexpected-exit' ? 'exited on its own' : event?.kind === 'upgrade' ? 'upgraded before resuming' : `${event?.kind ?? 'gone'} before resuming`;
        fates.set(worker, { fate, survived: false });
        continue;
      }
      const connected = seen.connections.get(id);
      if (connected !== undefined && !reconnectedAt.has(id)) reconnectedAt.set(id, connected);
      const completed = seen.completions.get(id);
      const reconnected = reconnectedAt.get(id);
      // Completing a command proves the most; a worker that finds no work only shows its reconnect.
      if (completed !== undefined) {
        fates.set(worker, { fate: `kept running, completed commands ${since(completed)} after`, survived: true });
      } else if (reconnected !== undefined && Date.now() - reconnected > 5000) {
        fates.set(worker, { fate: `kept running, reconnected ${since(reconnected)} after (no work since)`, survived: true });
      }
    }
    if (Date.now() > deadline) {
      for (const [worker, pid] of before) {
        if (fates.has(worker)) continue;
        fates.set(worker, { fate: 'did not reconnect', survived: false });
        violations.push(`${worker} (pid ${pid}) kept running but did not reconnect within ${plan.resumeDeadlineMs} ms after PostgreSQL came back`);
      }
    }
    for (const worker of fates.keys()) followed.delete(worker);
  }
  return { startedAt, upAt, workers: [...before].map(([worker, pid]) => ({ worker, pid, ...fates.get(worker)! })) };
}

/** Poison commands not yet dead-lettered; undefined when the database cannot say. */
async function poisonOpen(url: string): Promise<number | undefined> {
  const client = new Client({ connectionString: url });
  try {
    await client.connect();
    const { rows } = await client.query<{ open: number }>(
      `SELECT count(*)::int AS open FROM inbox_entries WHERE payload->>'kind' = 'poison' AND status <> 'dead_letter'`,
    );
    return rows[0]!.open;
  } catch {
    return undefined;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Per workerId (workers set it as their connection's application_name): when it first opened a
 * connection since `since`, and when it first committed an effect since then.
 */
async function activitySince(url: string, since: number): Promise<{ connections: Map<string, number>; completions: Map<string, number> }> {
  const client = new Client({ connectionString: url });
  try {
    await client.connect();
    const connections = await client.query<{ id: string; first: Date }>(
      `SELECT application_name AS id, min(backend_start) AS first FROM pg_stat_activity
       WHERE datname = current_database() AND backend_start >= $1 GROUP BY application_name`,
      [new Date(since)],
    );
    const completions = await client.query<{ id: string; first: Date }>(
      'SELECT worker AS id, min(applied_at) AS first FROM chaos_effects WHERE applied_at >= $1 GROUP BY worker',
      [new Date(since)],
    );
    const toMap = (rows: Array<{ id: string; first: Date }>) => new Map(rows.map((r) => [r.id, r.first.getTime()]));
    return { connections: toMap(connections.rows), completions: toMap(completions.rows) };
  } catch {
    return { connections: new Map(), completions: new Map() }; // the server may still be starting
  } finally {
    await client.end().catch(() => undefined);
  }
}
