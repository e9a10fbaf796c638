import { Injectable } from '@nestjs/common';
import { InboxHandler, InboxStatus, PermanentError, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { createTestApp, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

interface BatchPayload {
  fail?: 'transient' | 'permanent';
}

/** Writes an effect and notes the transaction it ran in. */
@Injectable()
@InboxHandler('test.batch', { backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 0 } })
class BatchHandler implements InboxCommandHandler<BatchPayload> {
  readonly runs: Array<{ messageId: string; txid: string }> = [];

  async execute(command: BatchPayload, context: InboxContext): Promise<void> {
    const [{ txid }] = (await context.manager.query('SELECT txid_current()::text AS txid')) as Array<{ txid: string }>;
    this.runs.push({ messageId: context.entry.messageId, txid });
    await context.manager.query('INSERT INTO batch_effects (message_id, txid) VALUES ($1, $2)', [context.entry.messageId, txid]);
    if (command.fail === 'permanent') throw new PermanentError('rule');
    if (command.fail === 'transient') throw new Error('blip');
  }
}

describe('batches', () => {
  let db: TestDatabase;
  let app: TestApp;

  beforeAll(async () => {
    db = await createTestDatabase('batching');
    await sql(db.url, 'CREATE TABLE batch_effects (message_id text NOT NULL, txid text NOT NULL)');
    app = await createTestApp({ url: db.url, handlers: [BatchHandler], inbox: { batchSize: 10, concurrency: 1 } });
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  /** Stores entries without waking the processor, so that one claim takes them all; the third element is how their last attempt ended. */
  const store = (rows: Array<[string, BatchPayload, string | null]>) =>
    sql(
      db.url,
      `INSERT INTO inbox_entries (message_id, command_type, payload, last_outcome, received_at)
       SELECT m, 'test.batch', p::jsonb, e, now() - (o || ' ms')::interval FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS x(m, p, e, o)`,
      [rows.map((r) => r[0]), rows.map((r) => JSON.stringify(r[1])), rows.map((r) => r[2]), rows.map((_, i) => 1000 - i)],
    );

  it('commits a batch in one transaction; a failing handler loses only its own writes and its neighbours are not charged', async () => {
    const payloads: BatchPayload[] = Array.from({ length: 10 }, (_, i) => (i === 3 ? { fail: 'transient' } : i === 6 ? { fail: 'permanent' } : {}));
    await store(payloads.map((p, i) => [`b-${i}`, p, null]));
    await app.processor.runOnce();

    const rows = await sql<{ message_id: string; status: string; retry_count: number }>(
      db.url,
      `SELECT message_id, status, retry_count FROM inbox_entries WHERE message_id LIKE 'b-%' ORDER BY message_id`,
    );
    const expected = payloads.map((p, i) => ({
      message_id: `b-${i}`,
      status: p.fail === 'transient' ? InboxStatus.Failed : p.fail === 'permanent' ? InboxStatus.DeadLetter : InboxStatus.Completed,
      retry_count: p.fail ? 1 : 0,
    }));
    expect(rows).toEqual(expected);
    // One effect per completed entry, none for the failed ones, all from one transaction.
    const effects = await sql<{ message_id: string; txid: string }>(db.url, `SELECT message_id, txid FROM batch_effects WHERE message_id LIKE 'b-%' ORDER BY message_id`);
    expect(effects.map((e) => e.message_id)).toEqual(expected.filter((e) => e.status === InboxStatus.Completed).map((e) => e.message_id));
    expect(new Set(effects.map((e) => e.txid)).size).toBe(1);
    // Neighbours completed on their first attempt: one attempt each in their history, the completing one.
    for (const messageId of ['b-0', 'b-9']) {
      const history = await app.inbox.history((await app.inbox.findByMessageId(messageId))!.id);
      expect(history.map((h) => [h.attempt, h.outcome])).toEqual([[1, 'completed']]);
    }
  });

  it('runs an entry whose last attempt crashed its worker first, alone, in a transaction of its own', async () => {
    const handler = app.get(BatchHandler);
    await store([
      ['s-0', {}, null],
      ['s-1', {}, 'lease_expired'],
      ['s-2', {}, null],
    ]);
    await app.processor.runOnce();
    const runs = handler.runs.filter((r) => r.messageId.startsWith('s-'));
    // The suspect runs alone, in a transaction of its own; the others together.
    expect(runs.map((r) => r.messageId).sort()).toEqual(['s-0', 's-1', 's-2']);
    const txOf = (id: string) => runs.find((r) => r.messageId === id)!.txid;
    expect(txOf('s-0')).toBe(txOf('s-2'));
    expect(txOf('s-1')).not.toBe(txOf('s-0'));
    const statuses = await sql<{ status: string }>(db.url, `SELECT status FROM inbox_entries WHERE message_id LIKE 's-%'`);
    expect(statuses.map((row) => row.status)).toEqual(['completed', 'completed', 'completed']);
  });

  it('still runs a poison message alone after it was dead-lettered by its last crash and replayed', async () => {
    const handler = app.get(BatchHandler);
    // A crash suspect whose last allowed attempt started alone and lost its worker: an expired lease on attempt 5 of 5.
    const [{ id }] = await sql<{ id: string }>(
      db.url,
      `INSERT INTO inbox_entries (message_id, command_type, payload, status, retry_count, locked_by, locked_until, lock_token, processing_started_at, received_at, last_outcome)
       VALUES ('p-0', 'test.batch', '{}', 'processing', 4, 'crashed-worker', now() - interval '1 s', gen_random_uuid(), now() - interval '61 s', now() - interval '2 min', 'lease_expired')
       RETURNING id`,
    );
    await app.processor.runOnce();
    const dead = (await app.inbox.get(id))!;
    expect(dead).toMatchObject({ status: InboxStatus.DeadLetter, deadLetterReason: 'lease_expired' });
    expect(dead.error).toMatch(/^Gave up after 5 attempt\(s\): Lease expired/);

    // Neighbours are due; the replay wakes the processor.
    await store([
      ['p-1', {}, null],
      ['p-2', {}, null],
    ]);
    await app.inbox.replay(id, { actor: 'ops', reason: 'the bug is fixed' });
    await app.processor.runOnce();
    const txOf = (messageId: string) => handler.runs.find((r) => r.messageId === messageId)?.txid;
    // The neighbours run together; the replayed poison message alone, in a transaction of its own.
    expect(txOf('p-1')).toBeDefined();
    expect(txOf('p-1')).toBe(txOf('p-2'));
    expect(txOf('p-0')).toBeDefined();
    expect(txOf('p-0')).not.toBe(txOf('p-1'));
  });
});
