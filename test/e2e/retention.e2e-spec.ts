import { IdempotencyConflictError, InboxRetention, InboxStatus } from 'nestjs-inbox';
import { pgPoolOf } from '../../lib/store/connection';
import { settlesWithin } from '../../lib/worker/settles-within';
import { EFFECTS_TABLE_SQL, ScriptedHandler } from '../fixtures/handlers';
import { proxyFor } from '../support/tcp-proxy';
import { createTestApp, ManualClock, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

describe('retention', () => {
  let db: TestDatabase;
  let app: TestApp | undefined;
  let retention: InboxRetention;
  let clock: ManualClock;

  beforeAll(async () => {
    db = await createTestDatabase('retention');
    await sql(db.url, EFFECTS_TABLE_SQL);
  });

  /** Each test starts from five completed entries and two dead letters, just processed. */
  beforeEach(async () => {
    clock = new ManualClock();
    app = await createTestApp({
      url: db.url,
      handlers: [ScriptedHandler],
      inbox: { clock, retention: { payloadRetentionMs: 1 * HOUR, deduplicationWindowMs: 24 * HOUR, batchSize: 2 } },
    });
    await sql(db.url, 'TRUNCATE inbox_entries CASCADE; TRUNCATE effects');
    retention = app.get(InboxRetention);
    for (let i = 0; i < 5; i++) await app.inbox.receive({ messageId: `old-${i}`, commandType: 'test.scripted', payload: { n: i } });
    for (let i = 0; i < 2; i++) await app.inbox.receive({ messageId: `dead-${i}`, commandType: 'test.scripted', payload: { permanent: true } });
    await app.processor.runOnce();
    expect(await app.inbox.countByStatus()).toMatchObject({ completed: 5, dead_letter: 2 });
  });

  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('keeps everything inside the payload retention time', async () => {
    expect(await retention.runOnce()).toEqual({ payloadsRemoved: 0, deleted: 0, keysRemoved: 0 });
    expect(await app!.inbox.findByMessageId('old-3')).toMatchObject({ payload: { n: 3 } });
  });

  it('removes completed payloads after payloadRetentionMs, in batches, and still recognises a late duplicate', async () => {
    clock.advance(2 * HOUR);
    expect(await retention.runOnce()).toEqual({ payloadsRemoved: 5, deleted: 0, keysRemoved: 0 });
    const stripped = (await app!.inbox.findByMessageId('old-3'))!;
    expect(stripped).toMatchObject({ status: InboxStatus.Completed, payload: null });

    const handler = app!.get(ScriptedHandler);
    const callsBefore = handler.calls.length;
    const late = await app!.inbox.receive({ messageId: 'old-3', commandType: 'test.scripted', payload: { n: 3 } });
    expect(late).toMatchObject({ duplicate: true });
    expect(late.entry).toEqual(stripped); // the stored entry, payload removed

    await expect(app!.inbox.receive({ messageId: 'old-3', commandType: 'test.scripted', payload: { n: 4 } })).rejects.toBeInstanceOf(
      IdempotencyConflictError,
    );
    await app!.processor.runOnce();
    expect(handler.calls.length).toBe(callsBefore); // the late duplicate did not run again
    expect(await sql(db.url, `SELECT 1 FROM effects WHERE message_id = 'old-3'`)).toHaveLength(1);
  });

  it('never touches dead letters', async () => {
    clock.advance(365 * DAY);
    await retention.runOnce();
    expect(await app!.inbox.findByMessageId('dead-0')).toMatchObject({ status: InboxStatus.DeadLetter, payload: { permanent: true } });
    expect(await app!.inbox.count({ status: InboxStatus.DeadLetter })).toBe(2);
  });

  it('deletes completed entries (with their history) only after the deduplication window', async () => {
    clock.advance(2 * HOUR);
    expect(await retention.runOnce()).toEqual({ payloadsRemoved: 5, deleted: 0, keysRemoved: 0 });
    // A fresh entry, inside the window when the old ones leave it.
    clock.advance(20 * HOUR);
    await app!.inbox.receive({ messageId: 'fresh', commandType: 'test.scripted', payload: {} });
    await app!.processor.runOnce();
    clock.advance(3 * HOUR);
    expect(await retention.runOnce()).toEqual({ payloadsRemoved: 1, deleted: 5, keysRemoved: 0 });
    expect(await app!.inbox.count({ status: InboxStatus.Completed })).toBe(1);
    expect(await app!.inbox.findByMessageId('fresh')).toMatchObject({ status: InboxStatus.Completed, payload: null });
    expect(await sql(db.url, `SELECT 1 FROM inbox_entries_history h LEFT JOIN inbox_entries e ON e.id = h.entry_id WHERE e.id IS NULL`)).toEqual([]);
  });

  it('lets the application close within shutdownTimeoutMs while a retention statement gets no answer', async () => {
    const proxy = proxyFor(db.url);
    const closing = await createTestApp({ url: await proxy.start(db.url), handlers: [ScriptedHandler], inbox: { notify: false, shutdownTimeoutMs: 500 } });
    try {
      // The network goes silent under the pass's first statement (a partition): it never answers.
      proxy.holdOnce('DELETE FROM', new Promise<never>(() => undefined));
      const pass = closing.get(InboxRetention).runOnce().then(
        () => 'answered',
        () => 'cut',
      );
      await waitFor(() => proxy.heldRequests === 1, 'the retention statement to be sent');
      const closed = closing.close().then(() => 'closed');
      let giveUp!: NodeJS.Timeout;
      const outcome = await Promise.race([closed, new Promise((resolve) => (giveUp = setTimeout(() => resolve('still closing after 15 s'), 15_000)))]);
      clearTimeout(giveUp);
      expect(outcome).toBe('closed');
      expect(await pass).toBe('cut');
    } finally {
      await proxy.close();
    }
  }, 30_000);

  it('gives back, at once, the connection a statement cut at shutdown was still waiting for', async () => {
    const small = await createTestApp({ url: db.url, inbox: { notify: false, shutdownTimeoutMs: 300 }, typeorm: { extra: { max: 1 } } });
    const pool = pgPoolOf(small.dataSource) as unknown as { totalCount: number; idleCount: number; waitingCount: number };
    // The application holds the pool's one connection (a request, a slow batch).
    const holder = small.dataSource.createQueryRunner();
    await holder.connect();
    const pass = small.get(InboxRetention).runOnce().then(
      () => 'ended',
      () => 'failed',
    );
    await waitFor(() => pool.waitingCount === 1, 'the retention statement to wait for the pool');
    // Shutdown runs out of time while the statement still waits: it must not wait for the pool.
    const shutdownEnded = await settlesWithin(small.get(InboxRetention).beforeApplicationShutdown(), 5_000);
    await holder.release();
    expect(shutdownEnded).toBe(true);
    expect(await pass).toBe('ended');
    // The connection the pool then handed to the cut statement went straight back.
    await waitFor(() => pool.idleCount === pool.totalCount, 'the connection to be back in the pool');
    await small.close();
  });
});
