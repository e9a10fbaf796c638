// pg-boss 10: send() per command, work() with batchSize; v10 has no teamSize/teamConcurrency (removed
// in v10) — concurrency comes from several work() registrations, each its own polling loop.
import PgBoss from 'pg-boss';
import { envInt, EVENT_INSERT, EVENTS_DDL } from '../common';
import type { Handler } from '../protocol';
import { recordLatency, runLatencySendRole, runSendRole, runWorkRole, type Sender } from '../roles';
import type { SystemAdapter } from './types';

export const PGBOSS_QUEUES: Record<Handler | 'dedup', string> = {
  event: 'bench-order',
  fail: 'bench-fail',
  latency: 'bench-latency',
  dedup: 'bench-dedup',
};

/** Worker settings (env overrides for tuning runs: BENCH_PGBOSS_WORKERS, _BATCH). */
export const PGBOSS_WORKER = {
  /** work() registrations (independent fetch loops) in the worker process. */
  workers: envInt('BENCH_PGBOSS_WORKERS', 10),
  batchSize: envInt('BENCH_PGBOSS_BATCH', 250),
  /** The documented minimum (0.5 s); pg-boss 10 has no LISTEN/NOTIFY wake-up across processes. */
  pollingIntervalSeconds: 0.5,
};
export const PGBOSS_WORKER_POOL = envInt('BENCH_PGBOSS_POOL', 40);
const PGBOSS_SENDER_POOL = 10;

/** Maintenance and cron off: the benchmark measures sending and working only. */
function newBoss(url: string, max: number, migrate = false): PgBoss {
  const boss = new PgBoss({ connectionString: url, max, supervise: false, schedule: false, migrate });
  boss.on('error', (error) => process.stderr.write(`pg-boss error: ${String(error)}\n`));
  return boss;
}

async function openSender(url: string, queue: string, dedup: boolean): Promise<Sender> {
  const boss = newBoss(url, PGBOSS_SENDER_POOL);
  await boss.start();
  return {
    // 'short' queue policy + singletonKey: a second send of a key that is still queued is dropped (returns null).
    call: (messageId, payload) => (dedup ? boss.send(queue, payload, { singletonKey: messageId }) : boss.send(queue, payload)),
    close: () => boss.stop({ graceful: false, wait: true }),
  };
}

type JobData = Record<string, unknown>;

export const pgBossAdapter: SystemAdapter = {
  name: 'pg-boss',
  settings: () => [
    `work() x${PGBOSS_WORKER.workers} { batchSize: ${PGBOSS_WORKER.batchSize}, pollingIntervalSeconds: ${PGBOSS_WORKER.pollingIntervalSeconds} }, ` +
      `pool max ${PGBOSS_WORKER_POOL} (worker) / ${PGBOSS_SENDER_POOL} (sender); supervise: false, schedule: false; ` +
      `handler inserts its batch's event rows concurrently through boss.getDb(); notifyWorker() on enqueue`,
    `failure queue: retryLimit 2, retryDelay 0, retryBackoff false; dedup queue: policy 'short' + singletonKey`,
  ],
  async prepare(url) {
    const boss = newBoss(url, 2, true);
    await boss.start();
    await boss.createQueue(PGBOSS_QUEUES.event);
    await boss.createQueue(PGBOSS_QUEUES.latency);
    await boss.createQueue(PGBOSS_QUEUES.fail, { name: PGBOSS_QUEUES.fail, retryLimit: 2, retryDelay: 0, retryBackoff: false });
    await boss.createQueue(PGBOSS_QUEUES.dedup, { name: PGBOSS_QUEUES.dedup, policy: 'short' });
    await boss.getDb().executeSql(EVENTS_DDL, []);
    await boss.stop({ graceful: false, wait: true });
  },
  async openEnqueuer(url) {
    const boss = newBoss(url, 2);
    await boss.start();
    return {
      enqueue: (items, kind) => boss.insert(items.map((item) => ({ name: PGBOSS_QUEUES[kind], data: item.payload }))),
      close: () => boss.stop({ graceful: false, wait: true }),
    };
  },
  async finished(client, kind, expected) {
    const state = kind === 'fail' ? 'failed' : 'completed';
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state = $2', [
      PGBOSS_QUEUES[kind],
      state,
    ]);
    return rows[0].n >= expected;
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
        const handler = spec.handler ?? 'event';
        const boss = newBoss(spec.url, PGBOSS_WORKER_POOL);
        await boss.start();
        const db = boss.getDb();
        const work = async (jobs: Array<PgBoss.Job<JobData>>): Promise<void> => {
          if (handler === 'fail') throw new Error('bench: this handler always fails');
          if (handler === 'latency') for (const job of jobs) recordLatency(job.data);
          await Promise.all(jobs.map((job) => db.executeSql(EVENT_INSERT, [job.id, JSON.stringify(job.data)])));
        };
        const ids: string[] = [];
        for (let i = 0; i < PGBOSS_WORKER.workers; i++) {
          ids.push(
            await boss.work<JobData>(
              PGBOSS_QUEUES[handler],
              { batchSize: PGBOSS_WORKER.batchSize, pollingIntervalSeconds: PGBOSS_WORKER.pollingIntervalSeconds },
              work,
            ),
          );
        }
        return {
          nudge: () => ids.forEach((id) => boss.notifyWorker(id)),
          stop: () => boss.stop({ graceful: true, wait: true, timeout: 10_000 }),
        };
      }),
  },
};
