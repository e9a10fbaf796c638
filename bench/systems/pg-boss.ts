// pg-boss 12: send() per command; work() with localConcurrency fetch loops, batchSize,
// burstWhenBatchFull, and LISTEN/NOTIFY wake-ups (useListenNotify + queues created with notify).
import { PgBoss, type ConstructorOptions, type Job } from 'pg-boss';
import { envInt, EVENT_INSERT, EVENTS_DDL } from '../common';
import type { Handler, KeyedHandler } from '../protocol';
import { recordLatency, runLatencySendRole, runSendRole, runWorkRole, type Sender } from '../roles';
import type { SystemAdapter } from './types';

export const PGBOSS_QUEUES: Record<Exclude<Handler, KeyedHandler> | 'dedup', string> = {
  event: 'bench-order',
  fail: 'bench-fail',
  latency: 'bench-latency',
  noop: 'bench-noop',
  dedup: 'bench-dedup',
};

/** The queue of a kind; ordering keys are measured for nestjs-inbox alone. */
function queueOf(kind: Handler): string {
  if (kind === 'keyed' || kind === 'keyed-slow') throw new Error(`pg-boss has no "${kind}" queue here`);
  return PGBOSS_QUEUES[kind];
}

/** Worker settings (env overrides for tuning runs: BENCH_PGBOSS_CONCURRENCY, _BATCH, _POOL). */
export const PGBOSS_WORKER = {
  /**
   * Fetch loops of the one work() registration (each fetches a batch, runs the handler, completes
   * it). 2 × 500 drained best here; 2/4/8/16 loops × 50/100/250/500/1000 tried (docs/benchmark.md).
   */
  localConcurrency: envInt('BENCH_PGBOSS_CONCURRENCY', 2),
  batchSize: envInt('BENCH_PGBOSS_BATCH', 500),
  /** Fetch again at once while fetches come back full, instead of waiting out the polling interval. */
  burstWhenBatchFull: true,
  /** The documented minimum; only used when the LISTEN connection is down. */
  pollingIntervalSeconds: 0.5,
  /**
   * The poll while NOTIFY is active (default 30). Retries send no NOTIFY: a failed job is found
   * again only by this poll, so the failure path needs the minimum.
   */
  notifyPollingIntervalSeconds: 0.5,
  includeMetadata: false,
} as const;
/** The handler inserts a batch's event rows concurrently through this pool. */
export const PGBOSS_WORKER_POOL = envInt('BENCH_PGBOSS_POOL', 14);
const PGBOSS_SENDER_POOL = 10;

/**
 * Maintenance, cron, the instance registry and telemetry off: the benchmark measures sending and
 * working only. LISTEN/NOTIFY on, so a job sent by another process wakes the workers at once.
 */
function newBoss(url: string, max: number, migrate = false): PgBoss {
  const options: ConstructorOptions = {
    connectionString: url,
    max,
    migrate,
    supervise: false,
    schedule: false,
    registerInstance: false,
    openTelemetry: { enabled: false },
    useListenNotify: true,
  };
  const boss = new PgBoss(options);
  boss.on('error', (error) => process.stderr.write(`pg-boss error: ${String(error)}\n`));
  return boss;
}

async function openSender(url: string, queue: string, dedup: boolean): Promise<Sender> {
  const boss = newBoss(url, PGBOSS_SENDER_POOL);
  await boss.start();
  return {
    // 'short' queue policy + singletonKey: a second send of a key that is still queued is dropped (returns null).
    call: (messageId, payload) => (dedup ? boss.send(queue, payload, { singletonKey: messageId }) : boss.send(queue, payload)),
    // insert: pg-boss's bulk intake, one statement per batch.
    callMany: (items) => boss.insert(queue, items.map(({ payload }) => ({ data: payload }))),
    close: () => boss.stop({ graceful: false }),
  };
}

type JobData = Record<string, unknown>;

/** The handler of one batch, per kind; event rows go through pg-boss' own pool, concurrently. */
function handlerFor(kind: Handler, boss: PgBoss): (jobs: Array<Job<JobData>>) => Promise<void> {
  const db = boss.getDb();
  const insertEvents = async (jobs: Array<Job<JobData>>) => {
    await Promise.all(jobs.map((job) => db.executeSql(EVENT_INSERT, [job.id, JSON.stringify(job.data)])));
  };
  switch (kind) {
    case 'fail':
      return () => Promise.reject(new Error('bench: this handler always fails'));
    case 'latency':
      return (jobs) => {
        for (const job of jobs) recordLatency(job.data);
        return insertEvents(jobs);
      };
    case 'noop':
      return () => Promise.resolve();
    case 'event':
      return insertEvents;
    default:
      throw new Error(`pg-boss has no "${kind}" handler here`);
  }
}

export const pgBossAdapter: SystemAdapter = {
  name: 'pg-boss',
  settings: () => [
    `work(queue, { localConcurrency: ${PGBOSS_WORKER.localConcurrency}, batchSize: ${PGBOSS_WORKER.batchSize}, burstWhenBatchFull: ${PGBOSS_WORKER.burstWhenBatchFull}, ` +
      `pollingIntervalSeconds: ${PGBOSS_WORKER.pollingIntervalSeconds}, notifyPollingIntervalSeconds: ${PGBOSS_WORKER.notifyPollingIntervalSeconds}, includeMetadata: ${PGBOSS_WORKER.includeMetadata} }), ` +
      `pool max ${PGBOSS_WORKER_POOL} (worker) / ${PGBOSS_SENDER_POOL} (sender); useListenNotify: true and every queue created with notify: true; ` +
      `supervise: false, schedule: false, registerInstance: false, openTelemetry: { enabled: false }; handler inserts its batch's event rows concurrently through boss.getDb()`,
    `failure queue: retryLimit 2, retryDelay 0, retryBackoff false; dedup queue: policy 'short' + singletonKey`,
  ],
  async prepare(url) {
    const boss = newBoss(url, 2, true);
    await boss.start();
    await boss.createQueue(PGBOSS_QUEUES.event, { notify: true });
    await boss.createQueue(PGBOSS_QUEUES.latency, { notify: true });
    await boss.createQueue(PGBOSS_QUEUES.noop, { notify: true });
    await boss.createQueue(PGBOSS_QUEUES.fail, { notify: true, retryLimit: 2, retryDelay: 0, retryBackoff: false });
    await boss.createQueue(PGBOSS_QUEUES.dedup, { notify: true, policy: 'short' });
    await boss.getDb().executeSql(EVENTS_DDL, []);
    await boss.stop({ graceful: false });
  },
  async openEnqueuer(url) {
    const boss = newBoss(url, 2);
    await boss.start();
    return {
      enqueue: async (items, kind) => {
        await boss.insert(
          queueOf(kind),
          items.map((item) => ({ data: item.payload })),
        );
      },
      close: () => boss.stop({ graceful: false }),
    };
  },
  async finished(client, kind, expected) {
    if (kind === 'noop') {
      // Nothing left to do; stops at the first unfinished job (no event rows to count here).
      const { rows } = await client.query<{ left: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM pgboss.job WHERE name = $1 AND state IN ('created', 'retry', 'active')) AS left`,
        [queueOf(kind)],
      );
      return !rows[0].left;
    }
    const state = kind === 'fail' ? 'failed' : 'completed';
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state = $2', [
      queueOf(kind),
      state,
    ]);
    return rows[0].n >= expected;
  },
  async completed(client, kind) {
    const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state = 'completed'`, [
      queueOf(kind),
    ]);
    return rows[0].n;
  },
  async stored(client, mode) {
    const queue = mode === 'dedup' ? PGBOSS_QUEUES.dedup : PGBOSS_QUEUES.event;
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1', [queue]);
    return rows[0].n;
  },
  roles: {
    send: (spec, commands) =>
      runSendRole(spec, commands, () => openSender(spec.url, spec.mode === 'dedup' ? PGBOSS_QUEUES.dedup : PGBOSS_QUEUES.event, spec.mode === 'dedup')),
    'latency-send': (spec, commands) => runLatencySendRole(spec, commands, () => openSender(spec.url, PGBOSS_QUEUES.latency, false)),
    work: (spec, commands) =>
      runWorkRole(spec, commands, async () => {
        const kind = spec.handler ?? 'event';
        const boss = newBoss(spec.url, PGBOSS_WORKER_POOL);
        await boss.start();
        await boss.work<JobData>(queueOf(kind), { ...PGBOSS_WORKER }, handlerFor(kind, boss));
        return {
          // The enqueue's NOTIFY wakes every fetch loop (notifyWorker() would wake only the first).
          nudge: () => undefined,
          stop: () => boss.stop({ graceful: true, timeout: 10_000 }),
        };
      }),
  },
};
