import { IdempotencyConflictError, InboxRetention, InboxStatus } from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, ScriptedHandler } from '../fixtures/handlers';
import { createTestApp, ManualClock, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

const HOUR = 3_600_000;

describe('retention', () => {
  let db: TestDatabase;
  let app: TestApp;
  let retention: InboxRetention;
  const clock = new ManualClock();

  beforeAll(async () => {
    db = await createTestDatabase('retention');
    await sql(db.url, EFFECTS_TABLE_SQL);
    app = await createTestApp({
      url: db.url,
      handlers: [ScriptedHandler],
      inbox: { clock, retention: { payloadRetentionMs: 1 * HOUR, deduplicationWindowMs: 24 * HOUR, batchSize: 2 } },
    });
    retention = app.get(InboxRetention);
    // Five completed entries and two dead letters, all "old".
    for (let i = 0; i < 5; i++) await app.inbox.receive({ messageId: `old-${i}`, commandType: 'test.scripted', payload: { n: i } });
    for (let i = 0; i < 2; i++) await app.inbox.receive({ messageId: `dead-${i}`, commandType: 'test.scripted', payload: { permanent: true } });
    await app.processor.runOnce();
    expect(await app.inbox.countByStatus()).toMatchObject({ completed: 5, dead_letter: 2 });
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('keeps everything inside the payload retention time', async () => {
    expect(await retention.runOnce()).toEqual({ payloadsRemoved: 0, deleted: 0 });
  });

  it('removes completed payloads after payloadRetentionMs, in batches, and still recognises a late duplicate', async () => {
    clock.advance(2 * HOUR);
    expect(await retention.runOnce()).toEqual({ payloadsRemoved: 5, deleted: 0 });
    const stripped = (await app.inbox.findByMessageId('old-3'))!;
    expect(stripped).toMatchObject({ status: InboxStatus.Completed, payload: null });

    const handler = app.get(ScriptedHandler);
    const callsBefore = handler.calls.length;
    const late = await app.inbox.receive({ messageId: 'old-3', commandType: 'test.scripted', payload: { n: 3 } });
    expect(late).toMatchObject({ duplicate: true });
    expect(late.entry).toEqual(stripped); // the stored entry, payload removed

    await expect(app.inbox.receive({ messageId: 'old-3', commandType: 'test.scripted', payload: { n: 4 } })).rejects.toBeInstanceOf(
      IdempotencyConflictError,
    );
    await app.processor.runOnce();
    expect(handler.calls.length).toBe(callsBefore); // the late duplicate did not run again
    expect(await sql(db.url, `SELECT 1 FROM effects WHERE message_id = 'old-3'`)).toHaveLength(1);
  });

  it('never touches dead letters', async () => {
    const dead = (await app.inbox.findByMessageId('dead-0'))!;
    expect(dead.payload).toEqual({ permanent: true });
    clock.advance(365 * 24 * HOUR);
    await retention.runOnce();
    expect(await app.inbox.findByMessageId('dead-0')).toMatchObject({ status: InboxStatus.DeadLetter, payload: { permanent: true } });
    expect(await app.inbox.count({ status: InboxStatus.DeadLetter })).toBe(2);
  });

  it('deletes completed entries (with their history) only after the deduplication window', async () => {
    // The previous step jumped past the window: the five completed entries are gone.
    expect(await app.inbox.count({ status: InboxStatus.Completed })).toBe(0);
    expect(await sql(db.url, `SELECT 1 FROM inbox_entries_history h LEFT JOIN inbox_entries e ON e.id = h.entry_id WHERE e.id IS NULL`)).toEqual([]);
    // A fresh entry inside the window stays.
    await app.inbox.receive({ messageId: 'fresh', commandType: 'test.scripted', payload: {} });
    await app.processor.runOnce();
    clock.advance(2 * HOUR);
    expect(await retention.runOnce()).toEqual({ payloadsRemoved: 1, deleted: 0 });
    expect(await app.inbox.findByMessageId('fresh')).toMatchObject({ status: InboxStatus.Completed, payload: null });
  });
});
