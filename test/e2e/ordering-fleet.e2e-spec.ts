import path from 'node:path';
import { InboxStatus } from 'nestjs-inbox';
import { ChildWorker } from '../support/child-worker';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

const ORDERING_WORKER = path.join(__dirname, '..', 'fixtures', 'ordering-worker.ts');

interface RunRow {
  key: string;
  seq: string;
  message_id: string;
  worker: string;
  started_at: Date;
  finished_at: Date;
}

describe('ordering keys across worker processes', () => {
  let db: TestDatabase;
  let producer: TestApp;
  const workers: ChildWorker[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('ordering_fleet');
    // A receive-only application: it stores commands (and runs the migration); the workers are other processes.
    producer = await createTestApp({ url: db.url, inbox: { worker: false }, typeorm: { extra: { max: 24 } } });
    await sql(
      db.url,
      `CREATE TABLE ordering_runs (key text NOT NULL, seq bigint NOT NULL, message_id text NOT NULL, worker text NOT NULL,
         started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL)`,
    );
  });

  afterEach(async () => {
    await Promise.all(workers.splice(0).map((worker) => worker.kill()));
  });

  afterAll(async () => {
    await producer?.close();
    await db?.drop();
  });

  function startWorker(workerId: string, inbox: Record<string, unknown>, env: Record<string, string> = {}): ChildWorker {
    const worker = new ChildWorker(ORDERING_WORKER, [db.url, JSON.stringify({ workerId, pollIntervalMs: 100, ...inbox })], { env });
    workers.push(worker);
    return worker;
  }

  const send = (messageId: string, account: string, busyMs = 0) =>
    producer.inbox.receive({ messageId, commandType: 'order.run', payload: { account, busyMs }, orderingKey: account });

  /** Per key, runs in the order of the key's sequence started in that order, each after the one before it finished. */
  async function assertKeysRanInOrder(prefix: string, expectedPerKey: Map<string, number>): Promise<RunRow[]> {
    const runs = await sql<RunRow>(db.url, `SELECT * FROM ordering_runs WHERE key LIKE $1 ORDER BY key, seq`, [`${prefix}%`]);
    const byKey = new Map<string, RunRow[]>();
    for (const run of runs) byKey.set(run.key, [...(byKey.get(run.key) ?? []), run]);
    expect(new Map([...byKey].map(([key, rows]) => [key, rows.length]))).toEqual(expectedPerKey);
    for (const rows of byKey.values()) {
      for (let i = 1; i < rows.length; i++) {
        expect(BigInt(rows[i].seq)).toBeGreaterThan(BigInt(rows[i - 1].seq));
        // Started after the one before it in its key's order had finished (the database's clock).
        expect(rows[i].started_at.getTime()).toBeGreaterThanOrEqual(rows[i - 1].finished_at.getTime());
      }
    }
    return runs;
  }

  it('runs each key one entry at a time, in the order received, with two workers and 20 producers on 50 keys', async () => {
    const a = startWorker('fleet-a', { concurrency: 6, batchSize: 10 });
    const b = startWorker('fleet-b', { concurrency: 6, batchSize: 10 });
    await Promise.all([a.waitForLine('READY'), b.waitForLine('READY')]);
    const keys = Array.from({ length: 50 }, (_, i) => `fleet-k${i}`);
    const expected = new Map(keys.map((key) => [key, 0]));
    // 20 producers, each sending 20 commands to keys it picks in turn: the same key is sent from
    // several producers at once.
    await Promise.all(
      Array.from({ length: 20 }, async (_, producerIndex) => {
        for (let i = 0; i < 20; i++) {
          const key = keys[(producerIndex * 7 + i * 13) % keys.length];
          expected.set(key, expected.get(key)! + 1);
          await send(`fleet-p${producerIndex}-${i}`, key, (producerIndex + i) % 3);
        }
      }),
    );
    await waitFor(async () => {
      const [{ open }] = await sql<{ open: number }>(db.url, `SELECT count(*)::int AS open FROM inbox_entries WHERE status <> 'completed'`);
      return open === 0;
    }, 'all 400 commands completed', 60_000);
    const runs = await assertKeysRanInOrder('fleet-k', expected);
    // Both processes ran commands: the order held across them.
    expect(new Set(runs.map((run) => run.worker))).toEqual(new Set(['fleet-a', 'fleet-b']));
  });

  it('resumes a key whose holder was SIGKILLed after the lease, still in order', async () => {
    const key = 'killed-k';
    const doomed = startWorker('doomed', { concurrency: 2, leaseMs: 1500 }, { INBOX_TEST_HANG_ON: 'killed-0' });
    await doomed.waitForLine('READY');
    await send('killed-0', key);
    await doomed.waitForLine('HANG killed-0');
    for (let i = 1; i <= 4; i++) await send(`killed-${i}`, key);
    const waiting = await producer.inbox.findByMessageId('killed-1');
    expect(waiting).toMatchObject({ status: InboxStatus.Pending, waiting: true });
    await doomed.kill();

    const survivor = startWorker('survivor', { concurrency: 2, leaseMs: 1500 });
    await survivor.waitForLine('READY');
    await waitFor(async () => {
      const [{ done }] = await sql<{ done: number }>(db.url, `SELECT count(*)::int AS done FROM inbox_entries WHERE message_id LIKE 'killed-%' AND status = 'completed'`);
      return done === 5;
    }, 'the key to resume after the lease', 30_000);
    const runs = await assertKeysRanInOrder(key, new Map([[key, 5]]));
    expect(runs.map((run) => run.message_id)).toEqual(['killed-0', 'killed-1', 'killed-2', 'killed-3', 'killed-4']);
    expect(runs.every((run) => run.worker === 'survivor')).toBe(true);
    // The killed attempt was not charged: its worker may or may not have started it, nobody knows.
    expect(await producer.inbox.findByMessageId('killed-0')).toMatchObject({ retryCount: 0 });
  });
});
