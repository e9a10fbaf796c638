// graphile-worker 0.18: addJob per command (WorkerUtils), run() with the settings of its
// performance page (https://worker.graphile.org/docs/performance): local queue + batched completion.
import { Logger, makeWorkerUtils, run, type Runner, type Task, type WorkerUtils } from 'graphile-worker';
import { COMMAND_TYPE, envInt, EVENT_INSERT, EVENTS_DDL } from '../common';
import type { Handler } from '../protocol';
import { recordLatency, runLatencySendRole, runSendRole, runWorkRole, type Sender } from '../roles';
import { commandTypeFor } from './inbox-table';
import type { SystemAdapter } from './types';

/**
 * Worker settings (env overrides for tuning runs: BENCH_GW_CONCURRENCY, _LOCAL_QUEUE). Concurrency
 * 8 drained best here (8/16/24/32 tried with a local queue of 500; 17 and 1000 were slower).
 */
export const GW_WORKER = {
  concurrency: envInt('BENCH_GW_CONCURRENCY', 8),
  localQueueSize: envInt('BENCH_GW_LOCAL_QUEUE', 500),
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
  /** Only for future/retry jobs: new jobs arrive through LISTEN/NOTIFY. Default 2000. */
  pollInterval: 2000,
};
/** The docs' rule: concurrency + 2 or more when tasks use the pool (ours insert one row each). */
export const GW_WORKER_POOL = envInt('BENCH_GW_POOL', GW_WORKER.concurrency + 4);
const GW_SENDER_POOL = 10;

/** Errors only: the default logger prints a line per job start/finish at info level. */
const quietLogger = new Logger(() => (level, message) => {
  if (level === 'error') process.stderr.write(`graphile-worker: ${message}\n`);
});

/**
 * The application nestjs-inbox's benchmark worker runs in, minus InboxModule: Nest, TypeORM with
 * the same pool, @nestjs/schedule. Loaded lazily, so that the plain variant carries none of it.
 */
async function bootNestHost(url: string): Promise<{ close(): Promise<void> }> {
  require('reflect-metadata');
  const { Module } = require('@nestjs/common') as typeof import('@nestjs/common');
  const { NestFactory } = require('@nestjs/core') as typeof import('@nestjs/core');
  const { ScheduleModule } = require('@nestjs/schedule') as typeof import('@nestjs/schedule');
  const { TypeOrmModule } = require('@nestjs/typeorm') as typeof import('@nestjs/typeorm');
  const { INBOX_WORKER_POOL } = require('./inbox-settings') as typeof import('./inbox-settings');
  class HostModule {}
  Module({
    imports: [
      TypeOrmModule.forRoot({ type: 'postgres', url, installExtensions: false, logging: false, retryAttempts: 0, extra: { max: INBOX_WORKER_POOL } }),
      ScheduleModule.forRoot(),
    ],
  })(HostModule);
  return NestFactory.createApplicationContext(HostModule, { logger: ['error', 'warn'] });
}

async function openUtils(url: string, maxPoolSize: number): Promise<WorkerUtils> {
  return makeWorkerUtils({ connectionString: url, maxPoolSize, logger: quietLogger, noPreparedStatements: false });
}

async function openSender(url: string, task: string, dedup: boolean): Promise<Sender> {
  const utils = await openUtils(url, GW_SENDER_POOL);
  return {
    // jobKeyMode 'unsafe_dedupe': a job with the same key that still exists wins; the new one is dropped.
    call: (messageId, payload) => (dedup ? utils.addJob(task, payload, { jobKey: messageId, jobKeyMode: 'unsafe_dedupe' }) : utils.addJob(task, payload)),
    // addJobs: graphile-worker's bulk intake, one statement per batch.
    callMany: (items) => utils.addJobs(items.map(({ payload }) => ({ identifier: task, payload }))),
    close: async () => {
      await utils.release();
    },
  };
}

function taskFor(handler: Handler): Task {
  if (handler === 'noop') return async () => undefined;
  return async (payload, helpers) => {
    if (handler === 'fail') throw new Error('bench: this task always fails');
    if (handler === 'latency') recordLatency(payload);
    await helpers.query(EVENT_INSERT, [helpers.job.id, JSON.stringify(payload)]);
  };
}

export const graphileWorkerAdapter: SystemAdapter = {
  name: 'graphile-worker',
  settings: () => [
    `run({ concurrency: ${GW_WORKER.concurrency}, maxPoolSize: ${GW_WORKER_POOL}, pollInterval: ${GW_WORKER.pollInterval}, noPreparedStatements: false, ` +
      `preset.worker: { localQueue: { size: ${GW_WORKER.localQueueSize} }, completeJobBatchDelay: ${GW_WORKER.completeJobBatchDelay}, failJobBatchDelay: ${GW_WORKER.failJobBatchDelay} } }); ` +
      `task inserts through helpers.query; senders: makeWorkerUtils (pool ${GW_SENDER_POOL}) addJob; dedup: jobKey + jobKeyMode 'unsafe_dedupe'`,
  ],
  async prepare(url) {
    const utils = await openUtils(url, 2);
    try {
      await utils.migrate();
      await utils.withPgClient((client) => client.query(EVENTS_DDL));
    } finally {
      await utils.release();
    }
  },
  async openEnqueuer(url) {
    const utils = await openUtils(url, 2);
    return {
      enqueue: async (items, kind) => {
        await utils.addJobs(items.map((item) => ({ identifier: commandTypeFor(kind), payload: item.payload })));
      },
      close: async () => {
        await utils.release();
      },
    };
  },
  // Completed jobs are deleted: done when no job is left (failed jobs stay; the failure path is not run here).
  async finished(client) {
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM graphile_worker._private_jobs');
    return rows[0].n === 0;
  },
  async stored(client) {
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM graphile_worker._private_jobs');
    return rows[0].n;
  },
  roles: {
    send: (spec, commands) => runSendRole(spec, commands, () => openSender(spec.url, COMMAND_TYPE, spec.mode === 'dedup')),
    'latency-send': (spec, commands) => runLatencySendRole(spec, commands, () => openSender(spec.url, commandTypeFor('latency'), false)),
    work: (spec, commands) =>
      runWorkRole(spec, commands, async () => {
        const handler = spec.handler ?? 'event';
        const host = spec.variant === 'nest-host' ? await bootNestHost(spec.url) : undefined;
        const runner: Runner = await run({
          connectionString: spec.url,
          concurrency: GW_WORKER.concurrency,
          maxPoolSize: GW_WORKER_POOL,
          pollInterval: GW_WORKER.pollInterval,
          noPreparedStatements: false,
          noHandleSignals: true,
          logger: quietLogger,
          taskList: { [commandTypeFor(handler)]: taskFor(handler) },
          preset: {
            worker: {
              localQueue: { size: GW_WORKER.localQueueSize },
              completeJobBatchDelay: GW_WORKER.completeJobBatchDelay,
              failJobBatchDelay: GW_WORKER.failJobBatchDelay,
            },
          },
        });
        return {
          nudge: () => undefined,
          stop: async () => {
            await runner.stop();
            await host?.close();
          },
        };
      }),
  },
};
