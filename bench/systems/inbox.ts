// nestjs-inbox: receive through InboxService in a real Nest application context, process with the
// library's own processor in a Nest worker application (child process).
import 'reflect-metadata';
import { setTimeout as sleep } from 'node:timers/promises';
import { Injectable, Module, type DynamicModule, type LogLevel, type Provider } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ScheduleModule } from '@nestjs/schedule';
import { TypeOrmModule } from '@nestjs/typeorm';

import {
  InboxHandler,
  InboxModule,
  InboxProcessor,
  InboxService,
  PermanentError,
  type InboxCommandHandler,
  type InboxContext,
  type InboxModuleOptions,
} from '../../lib';
import { resolveInboxOptions } from '../../lib/inbox-options';
import {
  COMMAND_TYPE,
  EVENT_INSERT,
  FAIL_COMMAND_TYPE,
  KEY_FIELD,
  KEYED_COMMAND_TYPE,
  LATENCY_COMMAND_TYPE,
  NOOP_COMMAND_TYPE,
  SLOW_HANDLER_MS,
  SLOW_KEYED_COMMAND_TYPE,
} from '../common';
import { recordLatency, runLatencySendRole, runSendRole, runWorkRole, type Sender } from '../roles';
import { inboxTelemetryOption, telemetryReport } from '../telemetry';
import type { Handler } from '../protocol';
import { captureClaimStatement } from './inbox-claim-capture';
import { commandTypeFor, inboxTableQueue, migrateWithTypeOrm } from './inbox-table';
import { INBOX_WORKER, INBOX_WORKER_POOL } from './inbox-settings';
import type { SystemAdapter } from './types';

// BENCH_INBOX_OPTIONS: JSON merged into the options of every InboxModule here, e.g. '{"attemptHistory":false}'.
const EXTRA_OPTIONS = JSON.parse(process.env.BENCH_INBOX_OPTIONS ?? '{}') as InboxModuleOptions;
/** Nest logger levels of the benchmark's applications (BENCH_NEST_LOGGER=none|error|error,warn|…). */
const NEST_LOGGER: LogLevel[] | false =
  process.env.BENCH_NEST_LOGGER === 'none' ? false : ((process.env.BENCH_NEST_LOGGER ?? 'error,warn').split(',') as LogLevel[]);
/** Receive-only instances: 8 callers + spare. */
export const INBOX_SENDER_POOL = 10;

@Injectable()
@InboxHandler(COMMAND_TYPE)
class AppendEventHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(command: Record<string, unknown>, context: InboxContext): Promise<void> {
    await context.manager.query(EVENT_INSERT, [context.entry.messageId, JSON.stringify(command)]);
  }
}

@Injectable()
@InboxHandler(FAIL_COMMAND_TYPE, { maxAttempts: 3, backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } })
class AlwaysFailsHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(): Promise<void> {
    throw new Error('bench: this handler always fails');
  }
}

@Injectable()
@InboxHandler(LATENCY_COMMAND_TYPE)
class LatencyHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(command: Record<string, unknown>, context: InboxContext): Promise<void> {
    recordLatency(command);
    await context.manager.query(EVENT_INSERT, [context.entry.messageId, JSON.stringify(command)]);
  }
}

@Injectable()
@InboxHandler(NOOP_COMMAND_TYPE)
class NoopHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(): Promise<void> {
    // Nothing: what the no-op drain measures is the library's own work per command.
  }
}

const accountOf = (command: Record<string, unknown>) => command[KEY_FIELD] as string;

/** The event handler under an ordering key; a `poison` command fails for good (and, policy block, blocks its key). */
@Injectable()
@InboxHandler(KEYED_COMMAND_TYPE, { orderingKey: accountOf, onDeadLetter: 'block' })
class KeyedAppendEventHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(command: Record<string, unknown>, context: InboxContext): Promise<void> {
    if (command.poison === true) throw new PermanentError('bench: a poison command');
    await context.manager.query(EVENT_INSERT, [context.entry.messageId, JSON.stringify(command)]);
  }
}

/** Each run of the 2 ms handler: messageId, start and end on this process's monotonic clock. */
const slowRuns: Array<[string, number, number]> = [];

/**
 * 2 ms of waiting (a call to another service, say) under an ordering key, and nothing else: a
 * timer, so no CPU is held. It writes no row; it records when it ran, which the benchmark checks
 * against the keys' order afterwards (checkRunRecord: in order and never overlapping).
 */
@Injectable()
@InboxHandler(SLOW_KEYED_COMMAND_TYPE, { orderingKey: accountOf, onDeadLetter: 'block' })
class SlowKeyedHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(_command: Record<string, unknown>, context: InboxContext): Promise<void> {
    const start = performance.now();
    await sleep(SLOW_HANDLER_MS);
    slowRuns.push([context.entry.messageId, start, performance.now()]);
  }
}

const HANDLERS: Record<Handler, Provider> = {
  event: AppendEventHandler,
  fail: AlwaysFailsHandler,
  latency: LatencyHandler,
  noop: NoopHandler,
  keyed: KeyedAppendEventHandler,
  'keyed-slow': SlowKeyedHandler,
};

@Module({})
class BenchInboxApp {}

function appModule(url: string, inbox: InboxModuleOptions, poolMax: number, handlers: Provider[]): DynamicModule {
  return {
    module: BenchInboxApp,
    imports: [
      TypeOrmModule.forRoot({
        type: 'postgres',
        url,
        // The schema is in place (prepare ran the migration), and the library runs its own SQL: no
        // entities or migrations to load, the same TypeORM setup as graphile-worker's Nest host.
        installExtensions: false,
        logging: false,
        retryAttempts: 0,
        extra: { max: poolMax },
      }),
      ...(inbox.worker === false ? [] : [ScheduleModule.forRoot()]),
      InboxModule.forRoot({ ...inbox, ...EXTRA_OPTIONS, ...(inboxTelemetryOption() ? { telemetry: inboxTelemetryOption() } : {}) }),
    ],
    providers: handlers,
  };
}

async function openSender(url: string, commandType: string): Promise<Sender> {
  const app = await NestFactory.createApplicationContext(appModule(url, { worker: false }, INBOX_SENDER_POOL, []), {
    logger: NEST_LOGGER,
  });
  const inbox = app.get(InboxService);
  return {
    call: (messageId, payload, orderingKey) => inbox.receive({ messageId, commandType, payload, ...(orderingKey === undefined ? {} : { orderingKey }) }),
    callMany: async (items) => {
      const results = await inbox.receiveMany(items.map(({ messageId, payload }) => ({ messageId, commandType, payload })));
      const refused = results.find((result) => result.status !== 'new');
      if (refused) throw new Error(`receiveMany answered ${refused.status} for command ${refused.index}`);
    },
    close: () => app.close(),
  };
}

/** The worker's options after the library's defaults (so the report says what was measured). */
function resolvedWorkerOptions(): string {
  const resolved = resolveInboxOptions({ ...INBOX_WORKER, worker: true, ...EXTRA_OPTIONS }) as unknown as Record<string, unknown>;
  const shown = Object.entries(resolved).filter(([key]) => key !== 'clock' && key !== 'workerId');
  return shown.map(([key, value]) => `${key}: ${JSON.stringify(value)}`).join(', ');
}

export const inboxAdapter: SystemAdapter = {
  name: 'nestjs-inbox',
  settings: () => [
    `InboxModule.forRoot({ concurrency: ${INBOX_WORKER.concurrency}, batchSize: ${INBOX_WORKER.batchSize}, pollIntervalMs: ${INBOX_WORKER.pollIntervalMs} }), ` +
      `TypeORM pool max ${INBOX_WORKER_POOL} (worker) / ${INBOX_SENDER_POOL} (receive-only, worker: false); Nest logger: ${NEST_LOGGER === false ? 'off' : NEST_LOGGER.join('+')}` +
      (Object.keys(EXTRA_OPTIONS).length ? `; BENCH_INBOX_OPTIONS ${JSON.stringify(EXTRA_OPTIONS)}` : ''),
    `resolved worker options: ${resolvedWorkerOptions()}`,
  ],
  prepare: (url) => migrateWithTypeOrm(url),
  ...inboxTableQueue,
  roles: {
    send: (spec, commands) => runSendRole(spec, commands, () => openSender(spec.url, COMMAND_TYPE)),
    'latency-send': (spec, commands) => runLatencySendRole(spec, commands, () => openSender(spec.url, commandTypeFor('latency'))),
    work: (spec, commands) =>
      runWorkRole(spec, commands, async () => {
        const handler = HANDLERS[spec.handler ?? 'event'];
        const lastClaim = spec.captureClaim ? captureClaimStatement() : undefined;
        // A concurrency of its own (the slow keyed drain) brings the pool it needs.
        const concurrency = spec.concurrency ?? INBOX_WORKER.concurrency;
        const pool = spec.concurrency ? INBOX_WORKER_POOL - INBOX_WORKER.concurrency + concurrency : INBOX_WORKER_POOL;
        const app = await NestFactory.createApplicationContext(
          appModule(spec.url, { ...INBOX_WORKER, concurrency, batchSize: spec.batchSize ?? INBOX_WORKER.batchSize, worker: true }, pool, [handler]),
          { logger: NEST_LOGGER },
        );
        const processor = app.get(InboxProcessor);
        return {
          nudge: () => processor.wake(),
          stop: async () => {
            // Telemetry first, while the application runs (the SDK's last collection reads the gauges).
            const telemetry = await telemetryReport();
            await app.close();
            return { telemetry, ...(lastClaim ? { claimStatement: lastClaim() } : {}), ...(spec.handler === 'keyed-slow' ? { runs: slowRuns } : {}) };
          },
        };
      }),
  },
};
