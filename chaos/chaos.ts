// Fault-injection harness: producers and three worker processes against one PostgreSQL, while
// workers are SIGKILLed, upgraded one by one to a release with a new command type, and the server
// restarts; one worker's clock is off and another's pool is small. A share of the commands carries
// ordering keys, and an operator releases the keys that dead letters block. Then the invariants are
// checked.
// Run: npm run chaos [-- --short]     (docs/chaos.md)
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { Client } from 'pg';
import { InboxEntry, InboxMigration, InboxModule, InboxService } from '../lib';
import { startPostgres, type PostgresHandle } from '../scripts/postgres.mjs';
import { CHAOS_TABLES_DDL } from './chaos-commands';
import { RECEIVER_HANDLERS, WORKER_ID } from './chaos-handlers';
import { runFaults } from './faults';
import { KeyOperator } from './key-operator';
import { breakOrdering } from './ordering-sabotage';
import { planCommands } from './plan';
import { newProducerStats, runProducers, type ProducerStats } from './producer';
import { printSummary } from './summary';
import { verify } from './verify';
import { describeProfile, WorkerPool, type SlotProfile, type WorkerEvent } from './workers';

const SIZES = {
  short: { commands: 2_000, poison: 2, kills: 3, dbRestarts: 1, ratePerSecond: 70, drainMs: 90_000 },
  full: { commands: 20_000, poison: 5, kills: 12, dbRestarts: 2, ratePerSecond: 200, drainMs: 300_000 },
};
/** How far the skewed worker's clock is off, ahead or behind at random per run. */
const CLOCK_SKEW_MS = 30_000;
const PRODUCER_LOOPS = 4;
const ROOT = path.resolve(__dirname, '..');

const form = process.argv.includes('--short') ? 'short' : 'full';
const size = SIZES[form];
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const say = (message: string) => console.log(`[chaos ${elapsed().padStart(6)}] ${message}`);

async function adminQuery(url: string, sql: string): Promise<void> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/**
 * The producers' side: a receive-only application (no processor), which also runs the migration.
 * It has the handler of the keyed type whose key is derived from the payload, so that it stores
 * those commands with their key.
 */
async function createReceiver(url: string): Promise<INestApplicationContext> {
  @Module({
    imports: [
      TypeOrmModule.forRoot({ type: 'postgres', url, entities: [InboxEntry], migrations: [InboxMigration], migrationsRun: true, retryAttempts: 0 }),
      InboxModule.forRoot({ worker: false }),
    ],
    providers: [{ provide: WORKER_ID, useValue: 'receiver' }, ...RECEIVER_HANDLERS],
  })
  class ReceiverModule {}
  return NestFactory.createApplicationContext(ReceiverModule, { logger: ['error'] });
}

/** Polls until no entry waits or runs any more; returns how long that took, or undefined at the deadline. */
async function drain(url: string, deadlineMs: number): Promise<number | undefined> {
  const begin = Date.now();
  while (Date.now() - begin < deadlineMs) {
    const client = new Client({ connectionString: url });
    await client.connect();
    const { rows } = await client
      .query<{ open: number }>(`SELECT count(*)::int AS open FROM inbox_entries WHERE status IN ('pending', 'failed', 'processing')`)
      .finally(() => client.end());
    if (rows[0]!.open === 0) return Date.now() - begin;
    await sleep(250);
  }
  return undefined;
}

/** One progress line every few seconds, so a stuck run is visible while it happens. */
function startMonitor(url: string, pool: WorkerPool, stats: ProducerStats): () => void {
  const releases = () => pool.fleet.map((slot) => slot.release).join('/');
  let failuresSeen = 0;
  const timer = setInterval(() => {
    const client = new Client({ connectionString: url });
    client
      .connect()
      .then(() => client.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM inbox_entries GROUP BY status'))
      .then(({ rows }) => Object.fromEntries(rows.map((r) => [r.status, r.n])))
      .then((c) => `completed ${c.completed ?? 0}, dead ${c.dead_letter ?? 0}, open ${(c.pending ?? 0) + (c.failed ?? 0) + (c.processing ?? 0)}`)
      .catch(() => 'database unreachable')
      .then((db) => {
        const events = pool.events;
        say(
          `stored ${stats.stored}/${size.commands} | ${db} | workers ready ${pool.readyCount()}/${pool.size} (releases ${releases()})` +
            ` | kills ${events.filter((e) => e.kind === 'harness-kill').length}, poison crashes ${events.filter((e) => e.kind === 'poison-crash').length}` +
            ` | failed receive calls ${stats.failedCalls}`,
        );
        if (stats.failedCalls > failuresSeen) say(`  last receive error: ${stats.lastError?.slice(0, 200)}`);
        failuresSeen = stats.failedCalls;
      })
      .finally(() => client.end().catch(() => undefined));
  }, 5000);
  return () => clearInterval(timer);
}

async function main(): Promise<number> {
  const runId = randomBytes(4).toString('hex');
  const logDir = path.join(ROOT, '.data', 'chaos', `${new Date().toISOString().replace(/[:.]/g, '-')}-${runId}`);
  mkdirSync(logDir, { recursive: true });
  // Every restart and upgrade of a slot keeps its profile.
  const profiles: SlotProfile[] = [{ clockSkewMs: (Math.random() < 0.5 ? -1 : 1) * CLOCK_SKEW_MS }, { poolMax: 2 }, {}];
  say(`${form} run ${runId}: ${size.commands} commands, ${size.kills} kills, ${size.dbRestarts} PostgreSQL restart(s), ${profiles.length} workers`);

  const postgres: PostgresHandle = await startPostgres('chaos');
  const database = `chaos_${runId}`;
  await adminQuery(postgres.url, `CREATE DATABASE "${database}"`);
  const dbUrl = Object.assign(new URL(postgres.url), { pathname: `/${database}` }).toString();
  const server = new URL(postgres.url);
  say(`${postgres.embedded ? 'embedded' : 'system'} PostgreSQL at ${server.hostname}:${server.port || 5432}, database ${database}`);

  let receiver: INestApplicationContext | undefined;
  const pool = new WorkerPool(dbUrl, profiles, 'old', logDir, (event: WorkerEvent) => say(`${event.worker} (pid ${event.pid}): ${event.detail}`));
  try {
    await adminQuery(dbUrl, CHAOS_TABLES_DDL);
    receiver = await createReceiver(dbUrl);
    const inbox = receiver.get(InboxService);
    const commands = planCommands(runId, size.commands, size.poison);
    await pool.startAll(60_000);
    say(`workers ready (${pool.fleet.map((slot) => `${slot.worker}: ${slot.release} release, ${describeProfile(slot.profile)}`).join('; ')}); logs in ${path.relative(ROOT, logDir)}`);

    const producerStats = newProducerStats();
    const stopMonitor = startMonitor(dbUrl, pool, producerStats);
    const operator = new KeyOperator(inbox);
    operator.start();
    // Proof that the key checks can fail: CHAOS_BREAK_ORDERING=1 lets waiting entries be claimed.
    const stopSabotage = process.env.CHAOS_BREAK_ORDERING === '1' ? await breakOrdering(dbUrl, say) : undefined;
    const windowMs = (size.commands / size.ratePerSecond) * 1000;
    const options = { loops: PRODUCER_LOOPS, ratePerSecond: size.ratePerSecond, retryDeadlineMs: 60_000, stopAt: Date.now() + windowMs + 90_000 };
    const producing = runProducers(inbox, commands, options, producerStats);
    const faults = await runFaults(pool, postgres, dbUrl, {
      windowMs,
      kills: size.kills,
      dbRestarts: size.dbRestarts,
      downtimeMs: 2000,
      resumeDeadlineMs: 30_000,
      upgradeTo: 'new',
      upgradeTimeoutMs: 60_000,
    });
    await producing;
    say(`all ${size.commands} commands sent; waiting for the inbox to drain`);
    const drainedInMs = await drain(dbUrl, size.drainMs);
    // The operator's last round releases keys still blocked with nothing behind them; should one
    // have had entries behind it after all, they run now.
    await operator.stop();
    await stopSabotage?.();
    if (drainedInMs !== undefined && (await drain(dbUrl, 30_000)) === undefined) say('entries left open after the last release');
    stopMonitor();
    const stopProblems = await pool.stopAll(20_000);
    await receiver.close();
    receiver = undefined;

    const result = await verify(dbUrl, commands, pool, operator);
    return printSummary({
      form,
      startedAt: started,
      plannedKills: size.kills,
      ratePerSecond: size.ratePerSecond,
      producerLoops: PRODUCER_LOOPS,
      drainMs: size.drainMs,
      commands,
      producer: producerStats,
      faults,
      result,
      drainedInMs,
      stopProblems,
      pool,
      operator,
      postgres,
      database,
    });
  } finally {
    await pool.stopAll(5000).catch(() => undefined);
    await receiver?.close().catch(() => undefined);
    await adminQuery(postgres.url, `DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`).catch((error: unknown) => say(`could not drop ${database}: ${error}`));
    await postgres.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('[chaos] aborted:', error);
    process.exit(2);
  },
);
