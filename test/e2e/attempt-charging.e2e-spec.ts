import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Injectable } from '@nestjs/common';
import { InboxHandler, InboxStatus, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL } from '../fixtures/handlers';
import { ChildWorker } from '../support/child-worker';
import { proxyFor, type TcpProxy } from '../support/tcp-proxy';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

const FLEET_WORKER = path.join(__dirname, '..', 'fixtures', 'fleet-worker.ts');
const SKEW_CLOCK = path.join(__dirname, '..', 'fixtures', 'skew-clock.cjs');

/** Counts its runs; takes a little time, like real work does. */
@Injectable()
@InboxHandler('test.work', { maxAttempts: 1 })
class WorkHandler implements InboxCommandHandler<Record<string, unknown>> {
  readonly runs = new Map<string, number>();
  workMs = 0;

  async execute(_command: Record<string, unknown>, { manager, entry }: InboxContext): Promise<void> {
    this.runs.set(entry.messageId, (this.runs.get(entry.messageId) ?? 0) + 1);
    await manager.query('INSERT INTO effects (message_id, attempt) VALUES ($1, $2)', [entry.messageId, entry.attempt]);
    await sleep(this.workMs); // the work itself
  }
}

/**
 * The first time it runs, the server ends its batch's session (a restart, an operator's
 * pg_terminate_backend) while it waits between two statements (for another service, say).
 */
@Injectable()
@InboxHandler('test.between', { maxAttempts: 1 })
class BetweenStatementsHandler implements InboxCommandHandler<{ then: 'return' | 'query' }> {
  readonly runs: string[] = [];
  url = '';

  async execute(command: { then: 'return' | 'query' }, { manager, entry }: InboxContext): Promise<void> {
    this.runs.push(entry.messageId);
    const [{ pid }] = (await manager.query('SELECT pg_backend_pid() AS pid')) as Array<{ pid: number }>;
    if (this.runs.length === 1) {
      await sql(this.url, 'SELECT pg_terminate_backend($1)', [pid]);
      // Its other work goes on a while; the driver hears of the end meanwhile.
      await waitFor(async () => (await sql(this.url, 'SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).length === 0, 'the session to end');
      await sleep(50);
    }
    if (command.then === 'query') await manager.query('SELECT 1');
  }
}

describe('attempts are charged only for work that ran', () => {
  let db: TestDatabase;
  const apps: TestApp[] = [];
  const children: ChildWorker[] = [];
  let proxy: TcpProxy | undefined;

  beforeAll(async () => {
    db = await createTestDatabase('charging');
    await sql(db.url, EFFECTS_TABLE_SQL);
    const setup = await createTestApp({ url: db.url, inbox: { worker: false } });
    await setup.close();
  });

  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
    await Promise.all(children.splice(0).map((child) => child.kill()));
    await proxy?.close();
    proxy = undefined;
    await sql(db.url, 'TRUNCATE inbox_entries CASCADE');
  });

  afterAll(async () => {
    await db?.drop();
  });

  const insert = (messageIds: string[], commandType = 'test.work') =>
    sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) SELECT m, $2, '{}' FROM unnest($1::text[]) AS m`, [messageIds, commandType]);

  const chargedLeaseExpiries = async () =>
    (await sql<{ n: number }>(db.url, `SELECT count(*)::int AS n FROM inbox_entries_history WHERE outcome = 'lease_expired' OR error_class = 'LeaseExpiredError'`))[0].n;

  it('charges nothing when the pool is smaller than the concurrency and batches wait for a connection', async () => {
    const app = await createTestApp({
      url: db.url,
      handlers: [WorkHandler],
      typeorm: { extra: { max: 2 } },
      inbox: { concurrency: 8, batchSize: 5, leaseMs: 400, handlerTimeoutMs: 300, pollIntervalMs: 50, workerId: 'small-pool' },
    });
    apps.push(app);
    app.get(WorkHandler).workMs = 80; // a batch of five takes as long as a lease
    const ids = Array.from({ length: 160 }, (_, i) => `pool-${i}`);
    await insert(ids);
    const settled = async () => (await app.inbox.count({ status: InboxStatus.Completed })) + (await app.inbox.count({ status: InboxStatus.DeadLetter }));
    await waitFor(async () => (await settled()) === 160, 'all 160 commands settled', 30_000);

    const charged = await sql<{ message_id: string }>(db.url, 'SELECT message_id FROM inbox_entries WHERE retry_count > 0');
    expect(charged).toEqual([]);
    expect(await chargedLeaseExpiries()).toBe(0);
    expect([...app.get(WorkHandler).runs.values()].every((n) => n === 1)).toBe(true);
  });

  it('hands a claim back uncharged when the worker never heard that it had claimed it', async () => {
    proxy = proxyFor(db.url);
    const url = await proxy.start(db.url);
    const app = await createTestApp({ url, handlers: [WorkHandler], inbox: { leaseMs: 300, workerId: 'deaf' } });
    apps.push(app);
    await app.processor.runOnce(); // the pass that started at bootstrap is over: the next claim is ours
    await insert(['lost-ack']);
    proxy.dropAnswerOnce('nestjs_inbox_claim');
    await app.processor.runOnce(); // its claim commits, the answer never arrives
    expect(proxy.droppedAnswers).toBe(1);
    const done = await waitFor(async () => {
      await app.processor.runOnce();
      const [row] = await sql<{ status: string; retry_count: number; reason: string | null }>(
        db.url,
        `SELECT status, retry_count, dead_letter_reason AS reason FROM inbox_entries WHERE message_id = 'lost-ack'`,
      );
      return row.status === InboxStatus.Completed || row.status === InboxStatus.DeadLetter ? row : null;
    }, 'the entry to be settled', 20_000);
    expect(proxy.droppedAnswers).toBe(1);
    expect(done).toEqual({ status: InboxStatus.Completed, retry_count: 0, reason: null });
    expect(app.get(WorkHandler).runs.get('lost-ack')).toBe(1);
    expect(await chargedLeaseExpiries()).toBe(0);
  });

  it('uses the database clock: a worker 30 s ahead does not take another worker\'s fresh claim for an expired one', async () => {
    // Another worker's claim, started a moment ago, with 10 s of its lease left.
    await sql(
      db.url,
      `INSERT INTO inbox_entries (message_id, command_type, payload, status, locked_by, locked_until, lock_token, processing_started_at)
       VALUES ('fresh-claim', 'test.work', '{}', 'processing', 'other-worker', now() + interval '10 seconds', gen_random_uuid(), now())`,
    );
    await insert(['after-the-sweep']);
    const child = new ChildWorker(FLEET_WORKER, [db.url, JSON.stringify({ types: ['test.work'], inbox: { pollIntervalMs: 100, leaseMs: 5000 } })], {
      preload: [SKEW_CLOCK],
      env: { INBOX_TEST_CLOCK_SKEW_MS: '30000' },
    });
    children.push(child);
    // Its first pass sweeps expired leases, then claims: once the other entry ran, the sweep has run.
    await child.waitForLine('RAN after-the-sweep');
    await waitFor(async () => {
      const [row] = await sql<{ status: string }>(db.url, `SELECT status FROM inbox_entries WHERE message_id = 'after-the-sweep'`);
      return row.status === InboxStatus.Completed;
    }, 'the skewed worker to complete its command');
    const [claim] = await sql<{ status: string; retry_count: number; locked_by: string }>(
      db.url,
      `SELECT status, retry_count, locked_by FROM inbox_entries WHERE message_id = 'fresh-claim'`,
    );
    expect(claim).toEqual({ status: InboxStatus.Processing, retry_count: 0, locked_by: 'other-worker' });
  });

  it('uses the database clock: a worker 30 s behind picks up a new command at once', async () => {
    const receiver = await createTestApp({ url: db.url, inbox: { worker: false } });
    apps.push(receiver);
    const child = new ChildWorker(FLEET_WORKER, [db.url, JSON.stringify({ types: ['test.work'], inbox: { pollIntervalMs: 200 } })], {
      preload: [SKEW_CLOCK],
      env: { INBOX_TEST_CLOCK_SKEW_MS: '-30000' },
    });
    children.push(child);
    await child.waitForLine('READY');
    const { entry } = await receiver.inbox.receive({ messageId: 'from-the-present', commandType: 'test.work', payload: {} });
    await waitFor(async () => (await receiver.inbox.get(entry.id))?.status === InboxStatus.Completed, 'the command to complete', 5_000);
    expect(child.log).toMatch(/RAN from-the-present 1/);
  });

  const statusOf = async (messageId: string) =>
    (await sql<{ status: InboxStatus; retry_count: number; error: string | null }>(db.url, 'SELECT status, retry_count, error FROM inbox_entries WHERE message_id = $1', [messageId]))[0];

  /** Runs passes until the entry is completed or dead-lettered, and says which. */
  const settled = (app: TestApp, messageId: string) =>
    waitFor(async () => {
      await app.processor.runOnce();
      const row = await statusOf(messageId);
      return row.status === InboxStatus.Completed || row.status === InboxStatus.DeadLetter ? row : null;
    }, `${messageId} to settle`, 20_000);

  for (const then of ['return', 'query'] as const) {
    it(`hands a batch back uncharged when the server ends its session while a handler is between statements (the handler then does: ${then})`, async () => {
      const app = await createTestApp({ url: db.url, handlers: [BetweenStatementsHandler], inbox: { leaseMs: 2000, workerId: 'between' } });
      apps.push(app);
      app.get(BetweenStatementsHandler).url = db.url;
      await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ('between', 'test.between', $1)`, [JSON.stringify({ then })]);
      // maxAttempts 1: charged, it would be dead-lettered.
      expect(await settled(app, 'between')).toEqual({ status: InboxStatus.Completed, retry_count: 0, error: null });
      expect(app.get(BetweenStatementsHandler).runs).toEqual(['between', 'between']);
    });
  }

  it('runs a crash suspect on a live transaction with a pool of one connection', async () => {
    const app = await createTestApp({
      url: db.url,
      handlers: [WorkHandler],
      typeorm: { extra: { max: 1 } },
      inbox: { concurrency: 1, leaseMs: 1000, receiveTimeoutMs: 300, workerId: 'one-connection' },
    });
    apps.push(app);
    await insert(['plain']);
    // A crash suspect: the last batch it was in lost its worker.
    await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload, last_outcome) VALUES ('suspect', 'test.work', '{}', 'lease_expired')`);
    await app.processor.runOnce();
    expect(await statusOf('suspect')).toEqual({ status: InboxStatus.Completed, retry_count: 0, error: null });
    expect(await statusOf('plain')).toEqual({ status: InboxStatus.Completed, retry_count: 0, error: null });
  });

  for (const statement of ['nestjs_inbox_lock_suspect', 'nestjs_inbox_start']) {
    it(`does not charge a crash suspect whose connection breaks at ${statement}, before its handler ran`, async () => {
      proxy = proxyFor(db.url);
      const app = await createTestApp({ url: await proxy.start(db.url), handlers: [WorkHandler], inbox: { leaseMs: 2000, workerId: 'suspect-cut' } });
      apps.push(app);
      await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload, last_outcome) VALUES ('suspect', 'test.work', '{}', 'lease_expired')`);
      proxy.dropAnswerOnce(statement);
      expect(await settled(app, 'suspect')).toEqual({ status: InboxStatus.Completed, retry_count: 0, error: null });
      expect(proxy.droppedAnswers).toBe(1);
      expect(app.get(WorkHandler).runs.get('suspect')).toBe(1);
    });
  }

  it('does not charge a crash suspect whose connection breaks before its handler ran while the database is away', async () => {
    proxy = proxyFor(db.url);
    const app = await createTestApp({ url: await proxy.start(db.url), handlers: [WorkHandler], inbox: { leaseMs: 1000, receiveTimeoutMs: 300, workerId: 'suspect-outage' } });
    apps.push(app);
    await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload, last_outcome) VALUES ('suspect', 'test.work', '{}', 'lease_expired')`);
    let letLockGo!: () => void;
    proxy.holdOnce('nestjs_inbox_lock_suspect', new Promise<void>((resolve) => (letLockGo = resolve)));
    const pass = app.processor.runOnce();
    await waitFor(() => proxy!.heldRequests === 1, 'the suspect lock to be sent');
    // The server goes away right then: the lock fails, and the suspect cannot be handed back yet.
    proxy.set('refuse');
    letLockGo();
    await pass;
    proxy.set('forward');
    expect(await settled(app, 'suspect')).toEqual({ status: InboxStatus.Completed, retry_count: 0, error: null });
    expect(app.get(WorkHandler).runs.get('suspect')).toBe(1);
  });

  it('takes that start back when it shuts down before its next pass, the database back: another worker then charges nothing', async () => {
    proxy = proxyFor(db.url);
    const leaving = await createTestApp({ url: await proxy.start(db.url), handlers: [WorkHandler], inbox: { leaseMs: 1000, receiveTimeoutMs: 300, workerId: 'leaving' } });
    await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload, last_outcome) VALUES ('suspect', 'test.work', '{}', 'lease_expired')`);
    let letLockGo!: () => void;
    proxy.holdOnce('nestjs_inbox_lock_suspect', new Promise<void>((resolve) => (letLockGo = resolve)));
    const pass = leaving.processor.runOnce();
    await waitFor(() => proxy!.heldRequests === 1, 'the suspect lock to be sent');
    proxy.set('refuse');
    letLockGo();
    await pass;
    // The database is back; the worker is shut down (a deploy) before its next pass.
    proxy.set('forward');
    await leaving.close();
    expect(await sql(db.url, `SELECT processing_started_at FROM inbox_entries WHERE message_id = 'suspect'`)).toEqual([{ processing_started_at: null }]);
    const staying = await createTestApp({ url: db.url, handlers: [WorkHandler], inbox: { leaseMs: 1000, workerId: 'staying' } });
    apps.push(staying);
    // Once the lease has run out, its sweep hands the suspect back uncharged and runs it.
    expect(await settled(staying, 'suspect')).toEqual({ status: InboxStatus.Completed, retry_count: 0, error: null });
  });
});
