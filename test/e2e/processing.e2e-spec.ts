import { InboxStatus, type InboxEntry } from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, ScriptedHandler, ShortLivedHandler, TransferHandler } from '../fixtures/handlers';
import { createTestApp, ManualClock, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

describe('processing', () => {
  let db: TestDatabase;
  let app: TestApp;
  const clock = new ManualClock();
  let seq = 0;
  const HANDLERS = [ScriptedHandler, ShortLivedHandler, TransferHandler];
  const INBOX = { clock, maxAttempts: 3, backoff: { initialDelayMs: 1000, multiplier: 2, maxDelayMs: 60_000, jitter: 0.2 } };

  beforeAll(async () => {
    db = await createTestDatabase('processing');
    await sql(db.url, EFFECTS_TABLE_SQL);
    app = await createTestApp({ url: db.url, handlers: HANDLERS, inbox: INBOX });
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  async function receiveAndRun(commandType: string, payload: Record<string, unknown>): Promise<InboxEntry> {
    const { entry } = await app.inbox.receive({ messageId: `m-${++seq}`, commandType, payload });
    await app.processor.runOnce();
    return (await app.inbox.get(entry.id))!;
  }

  const effectsOf = (messageId: string) =>
    sql<{ attempt: number; note: string | null }>(db.url, 'SELECT attempt, note FROM effects WHERE message_id = $1 ORDER BY id', [messageId]);

  it('runs the handler and commits its writes with the Completed status', async () => {
    const entry = await receiveAndRun('test.scripted', {});
    expect(entry.status).toBe(InboxStatus.Completed);
    expect(entry.processedAt).toBeInstanceOf(Date);
    expect(entry.lockedBy).toBeNull();
    expect(await effectsOf(entry.messageId)).toEqual([{ attempt: 1, note: null }]);
  });

  it('never runs a handler twice for a duplicate receive', async () => {
    const handler = app.get(ScriptedHandler);
    const first = await receiveAndRun('test.scripted', { n: 1 });
    const again = await app.inbox.receive({ messageId: first.messageId, commandType: 'test.scripted', payload: { n: 1 } });
    await app.processor.runOnce();
    expect(again.duplicate).toBe(true);
    expect(handler.calls.filter((c) => c.messageId === first.messageId)).toHaveLength(1);
    expect(await effectsOf(first.messageId)).toHaveLength(1);
  });

  it('marks a transient failure Failed with a future nextRetryAt, rolls back its writes, and retries it when due', async () => {
    const failed = await receiveAndRun('test.scripted', { failUntilAttempt: 1 });
    expect(failed.status).toBe(InboxStatus.Failed);
    expect(failed.retryCount).toBe(1);
    expect(failed.error).toContain('flaky dependency down (attempt 1)');
    const delay = failed.nextRetryAt!.getTime() - clock.now().getTime();
    expect(delay).toBeGreaterThanOrEqual(800); // 1000 ms ± 20 % jitter
    expect(delay).toBeLessThanOrEqual(1200);
    expect(await effectsOf(failed.messageId)).toEqual([]); // the failed attempt's insert was rolled back

    await app.processor.runOnce(); // not due yet
    expect((await app.inbox.get(failed.id))!.status).toBe(InboxStatus.Failed);

    clock.advance(1200);
    await app.processor.runOnce();
    const done = (await app.inbox.get(failed.id))!;
    expect(done.status).toBe(InboxStatus.Completed);
    expect(done.retryCount).toBe(1);
    expect(done.error).toBeNull();
    expect(await effectsOf(failed.messageId)).toEqual([{ attempt: 2, note: null }]);
  });

  it('dead-letters after maxAttempts failures, backing off exponentially in between', async () => {
    const entry = await receiveAndRun('test.scripted', { alwaysFail: true });
    const delays: number[] = [];
    let current = entry;
    while (current.status === InboxStatus.Failed) {
      delays.push(current.nextRetryAt!.getTime() - clock.now().getTime());
      clock.advance(current.nextRetryAt!.getTime() - clock.now().getTime());
      await app.processor.runOnce();
      current = (await app.inbox.get(entry.id))!;
    }
    expect(current.status).toBe(InboxStatus.DeadLetter);
    expect(current.retryCount).toBe(3); // module maxAttempts
    expect(current.nextRetryAt).toBeNull();
    expect(current.error).toMatch(/Gave up after 3 attempt\(s\): flaky dependency down \(attempt 3\)/);
    expect(delays).toHaveLength(2);
    expect(delays[0]).toBeGreaterThanOrEqual(800);
    expect(delays[0]).toBeLessThanOrEqual(1200);
    expect(delays[1]).toBeGreaterThanOrEqual(1600);
    expect(delays[1]).toBeLessThanOrEqual(2400);
    expect(await effectsOf(entry.messageId)).toEqual([]);

    // Dead letters stay put however often the processor runs.
    clock.advance(3_600_000);
    await app.processor.runOnce();
    expect((await app.inbox.get(entry.id))!.status).toBe(InboxStatus.DeadLetter);
  });

  it('honours per-handler maxAttempts and backoff overrides', async () => {
    const handler = app.get(ShortLivedHandler);
    const before = handler.calls;
    const first = await receiveAndRun('test.short-lived', {});
    expect(first.status).toBe(InboxStatus.Failed);
    expect(first.nextRetryAt!.getTime() - clock.now().getTime()).toBe(10);
    clock.advance(10);
    await app.processor.runOnce();
    const dead = (await app.inbox.get(first.id))!;
    expect(dead.status).toBe(InboxStatus.DeadLetter);
    expect(dead.retryCount).toBe(2);
    expect(handler.calls - before).toBe(2);
  });

  it('dead-letters a PermanentError on the first attempt and rolls back the handler writes', async () => {
    const entry = await receiveAndRun('test.scripted', { permanent: true });
    expect(entry.status).toBe(InboxStatus.DeadLetter);
    expect(entry.retryCount).toBe(1);
    expect(entry.error).toBe('business rule violated');
    expect(await effectsOf(entry.messageId)).toEqual([]);
  });

  it('validates class payloads: valid ones arrive as instances, invalid ones are dead-lettered naming the properties', async () => {
    const handler = app.get(TransferHandler);
    const ok = await receiveAndRun('test.transfer', { account: 'acc-1', amount: 5 });
    expect(ok.status).toBe(InboxStatus.Completed);
    expect(handler.received.at(-1)).toMatchObject({ account: 'acc-1', amount: 5 });
    expect(handler.received.at(-1)!.constructor.name).toBe('TransferCommand');
    expect(await effectsOf(ok.messageId)).toEqual([{ attempt: 1, note: 'acc-1:5' }]);

    const calls = handler.received.length;
    const bad = await receiveAndRun('test.transfer', { account: '', amount: 0 });
    expect(bad.status).toBe(InboxStatus.DeadLetter);
    expect(bad.retryCount).toBe(1);
    expect(bad.error).toContain('account:');
    expect(bad.error).toContain('amount:');
    expect(handler.received.length).toBe(calls);
    expect(await effectsOf(bad.messageId)).toEqual([]);
  });

  it('leaves a command type that has no handler in this worker to a worker that has one', async () => {
    // Stored by a receive-only instance that accepts any type; this worker has no handler for it.
    await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload, received_at) VALUES ('orphan-1', 'nobody.handles', '{}', $1)`, [clock.now()]);
    await app.processor.runOnce();
    const entry = (await app.inbox.findByMessageId('orphan-1'))!;
    expect(entry).toMatchObject({ status: InboxStatus.Pending, retryCount: 0, error: null });
  });

  it('replays a dead letter back to Pending with retryCount 0 and the same messageId, then completes it', async () => {
    const dead = await receiveAndRun('test.scripted', { permanent: true });
    expect(dead.status).toBe(InboxStatus.DeadLetter);
    // The cause is fixed: flip the payload directly (corrected-payload replay is a separate feature).
    await sql(db.url, `UPDATE inbox_entries SET payload = '{}' WHERE id = $1`, [dead.id]);
    const replayed = await app.inbox.replay(dead.id);
    expect(replayed).toMatchObject({ id: dead.id, messageId: dead.messageId, status: InboxStatus.Pending, retryCount: 0, nextRetryAt: null });
    await app.processor.runOnce();
    const done = (await app.inbox.get(dead.id))!;
    expect(done.status).toBe(InboxStatus.Completed);
    expect(await effectsOf(dead.messageId)).toEqual([{ attempt: 1, note: null }]);
    // Deduplication still holds after the replay.
    expect((await app.inbox.receive({ messageId: dead.messageId, commandType: 'test.scripted', payload: {} })).duplicate).toBe(true);
  });

  it('replays a Failed entry, and refuses to replay a Completed one or a missing id', async () => {
    const failed = await receiveAndRun('test.scripted', { failUntilAttempt: 1 });
    expect(failed.status).toBe(InboxStatus.Failed);
    // Replay restarts the attempt count, so the scripted failure must go for it to succeed.
    await sql(db.url, `UPDATE inbox_entries SET payload = '{}' WHERE id = $1`, [failed.id]);
    expect((await app.inbox.replay(failed.id)).status).toBe(InboxStatus.Pending);
    await app.processor.runOnce();
    const done = (await app.inbox.get(failed.id))!;
    expect(done.status).toBe(InboxStatus.Completed);
    await expect(app.inbox.replay(done.id)).rejects.toMatchObject({ name: 'InvalidEntryStateError', status: 'completed' });
    await expect(app.inbox.replay('00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({ name: 'InboxEntryNotFoundError' });
  });

  it('processes due entries oldest first', async () => {
    const handler = app.get(ScriptedHandler);
    await app.close();
    // One at a time, so the order of execution is the order of claiming.
    app = await createTestApp({ url: db.url, handlers: HANDLERS, inbox: { ...INBOX, concurrency: 1, batchSize: 1, worker: false, acceptUnknownCommandTypes: false } });
    const ids = ['order-c', 'order-a', 'order-b'];
    for (const id of ids) {
      await app.inbox.receive({ messageId: id, commandType: 'test.scripted', payload: {} });
      clock.advance(5);
    }
    await app.close();
    // The spec's other tests go on with an application configured as before, one batch of one at a time.
    app = await createTestApp({ url: db.url, handlers: HANDLERS, inbox: { ...INBOX, concurrency: 1, batchSize: 1 } });
    await app.processor.runOnce();
    const fresh = app.get(ScriptedHandler);
    expect(fresh).not.toBe(handler);
    expect(fresh.calls.map((c) => c.messageId).filter((m) => m.startsWith('order-'))).toEqual(ids);
  });
});

describe('processing without prepared statements (for poolers that cannot keep them)', () => {
  let db: TestDatabase;
  let app: TestApp;

  beforeAll(async () => {
    db = await createTestDatabase('unprepared');
    await sql(db.url, EFFECTS_TABLE_SQL);
    app = await createTestApp({ url: db.url, handlers: [ScriptedHandler], inbox: { preparedStatements: false, maxAttempts: 1 } });
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('receives, deduplicates, completes and dead-letters exactly as with them', async () => {
    const ok = await app.inbox.receive({ messageId: 'u-1', commandType: 'test.scripted', payload: {} });
    const again = await app.inbox.receive({ messageId: 'u-1', commandType: 'test.scripted', payload: {} });
    const bad = await app.inbox.receive({ messageId: 'u-2', commandType: 'test.scripted', payload: { failUntilAttempt: 1 } });
    expect(again).toMatchObject({ duplicate: true, entry: { id: ok.entry.id } });
    await app.processor.runOnce();
    expect((await app.inbox.get(ok.entry.id))!.status).toBe(InboxStatus.Completed);
    expect((await app.inbox.get(bad.entry.id))!.status).toBe(InboxStatus.DeadLetter);
    const prepared = await app.dataSource.query(`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name LIKE 'nestjs_inbox%'`);
    expect(prepared).toEqual([{ n: 0 }]);
  });
});
