import {
  IdempotencyConflictError,
  InboxArgumentError,
  InboxStatus,
  UnknownCommandTypeError,
} from 'nestjs-inbox';
import { QueryFailedError } from 'typeorm';
import { EFFECTS_TABLE_SQL, ScriptedHandler, TransferHandler } from '../fixtures/handlers';
import { createTestApp, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

describe('InboxService.receive', () => {
  let db: TestDatabase;
  let app: TestApp;

  beforeAll(async () => {
    db = await createTestDatabase('receive');
    await sql(db.url, EFFECTS_TABLE_SQL);
    // A worker that never polls on its own: these specs look at stored entries only.
    app = await createTestApp({ url: db.url, handlers: [ScriptedHandler, TransferHandler], inbox: { worker: false, acceptUnknownCommandTypes: false } });
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  const count = async () => Number((await sql<{ n: string }>(db.url, 'SELECT count(*) AS n FROM inbox_entries'))[0].n);

  it('stores a Pending entry with its envelope', async () => {
    const { entry, duplicate } = await app.inbox.receive({
      messageId: 'receive-1',
      commandType: 'test.scripted',
      payload: { a: 1 },
      correlationId: 'corr-1',
      causationId: 'cause-1',
      metadata: { source: 'http' },
    });
    expect(duplicate).toBe(false);
    expect(entry).toMatchObject({
      messageId: 'receive-1',
      commandType: 'test.scripted',
      payload: { a: 1 },
      status: InboxStatus.Pending,
      retryCount: 0,
      correlationId: 'corr-1',
      causationId: 'cause-1',
      metadata: { source: 'http' },
      processedAt: null,
    });
    expect(entry.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(await app.inbox.get(entry.id)).toEqual(entry);
    expect(await app.inbox.findByMessageId('receive-1')).toEqual(entry);
  });

  it('returns the stored entry for a repeated messageId, whatever the key order of the payload', async () => {
    const first = await app.inbox.receive({ messageId: 'dup-1', commandType: 'test.scripted', payload: { a: 1, b: [1, 2] }, metadata: { trace: null, n: 1 }, correlationId: 'c-1' });
    const again = await app.inbox.receive({ messageId: 'dup-1', commandType: 'test.scripted', payload: { b: [1, 2], a: 1 } });
    expect(again.duplicate).toBe(true);
    expect(again.entry.id).toBe(first.entry.id);
    // The stored entry, column for column (it comes back from the receive statement as jsonb).
    expect(again.entry).toEqual(await app.inbox.get(first.entry.id));
    expect(again.entry).toMatchObject({ payload: { a: 1, b: [1, 2] }, metadata: { trace: null, n: 1 }, correlationId: 'c-1', causationId: null });
    expect(again.entry.receivedAt).toBeInstanceOf(Date);
    expect((await sql(db.url, `SELECT 1 FROM inbox_entries WHERE message_id = 'dup-1'`)).length).toBe(1);
  });

  it('stores exactly one entry under 20 concurrent identical receives', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, () => app.inbox.receive({ messageId: 'race-1', commandType: 'test.scripted', payload: { x: 1 } })),
    );
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    expect(new Set(results.map((r) => r.entry.id)).size).toBe(1);
    expect((await sql(db.url, `SELECT 1 FROM inbox_entries WHERE message_id = 'race-1'`)).length).toBe(1);
  });

  it('rejects a reused messageId with another payload or command type as IdempotencyConflictError', async () => {
    await app.inbox.receive({ messageId: 'conflict-1', commandType: 'test.scripted', payload: { amount: 1 } });
    await expect(
      app.inbox.receive({ messageId: 'conflict-1', commandType: 'test.scripted', payload: { amount: 2 } }),
    ).rejects.toBeInstanceOf(IdempotencyConflictError);
    await expect(
      app.inbox.receive({ messageId: 'conflict-1', commandType: 'test.transfer', payload: { amount: 1 } }),
    ).rejects.toBeInstanceOf(IdempotencyConflictError);
    const stored = await app.inbox.findByMessageId('conflict-1');
    expect(stored?.payload).toEqual({ amount: 1 });
  });

  it('treats a stored row with neither payload nor digest as a conflict, not as a new entry', async () => {
    await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ('bare-1', 'test.scripted', NULL)`);
    await expect(app.inbox.receive({ messageId: 'bare-1', commandType: 'test.scripted', payload: {} })).rejects.toBeInstanceOf(IdempotencyConflictError);
  });

  it("fails inside the caller's transaction with TypeORM's QueryFailedError, as the caller's own queries do", async () => {
    await expect(
      app.dataSource.transaction(async (manager) => {
        await manager.query('SELECT 1 / 0').catch(() => undefined); // the transaction is now aborted
        await app.inbox.receive({ messageId: 'tx-aborted', commandType: 'test.scripted', payload: {} }, { manager });
      }),
    ).rejects.toBeInstanceOf(QueryFailedError);
    expect(await app.inbox.findByMessageId('tx-aborted')).toBeNull();
  });

  it('joins the caller transaction: a rollback removes the entry, a commit keeps it', async () => {
    await expect(
      app.dataSource.transaction(async (manager) => {
        await app.inbox.receive({ messageId: 'tx-rollback', commandType: 'test.scripted', payload: {} }, { manager });
        throw new Error('caller rolls back');
      }),
    ).rejects.toThrow('caller rolls back');
    expect(await app.inbox.findByMessageId('tx-rollback')).toBeNull();

    await app.dataSource.transaction(async (manager) => {
      await app.inbox.receive({ messageId: 'tx-commit', commandType: 'test.scripted', payload: {} }, { manager });
      // Invisible to others until the caller commits.
      expect(await app.inbox.findByMessageId('tx-commit')).toBeNull();
    });
    expect(await app.inbox.findByMessageId('tx-commit')).not.toBeNull();
  });

  it('rejects a command type without a handler, storing nothing', async () => {
    const before = await count();
    await expect(app.inbox.receive({ messageId: 'unknown-1', commandType: 'nobody.handles', payload: {} })).rejects.toBeInstanceOf(
      UnknownCommandTypeError,
    );
    expect(await count()).toBe(before);
  });

  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const invalid: Array<[string, unknown, string]> = [
    ['no command', undefined, 'command'],
    ['empty messageId', { messageId: '', commandType: 'test.scripted', payload: {} }, 'command.messageId'],
    ['over-long messageId', { messageId: 'x'.repeat(256), commandType: 'test.scripted', payload: {} }, 'command.messageId'],
    ['numeric messageId', { messageId: 42, commandType: 'test.scripted', payload: {} }, 'command.messageId'],
    ['NUL in messageId', { messageId: 'a\u0000b', commandType: 'test.scripted', payload: {} }, 'command.messageId'],
    ['empty commandType', { messageId: 'm', commandType: '', payload: {} }, 'command.commandType'],
    ['array payload', { messageId: 'm', commandType: 'test.scripted', payload: [1] }, 'command.payload'],
    ['string payload', { messageId: 'm', commandType: 'test.scripted', payload: 'hello' }, 'command.payload'],
    ['null payload', { messageId: 'm', commandType: 'test.scripted', payload: null }, 'command.payload'],
    ['circular payload', { messageId: 'm', commandType: 'test.scripted', payload: circular }, 'command.payload'],
    ['BigInt payload', { messageId: 'm', commandType: 'test.scripted', payload: { n: BigInt(1) } }, 'command.payload'],
    // Stored as null, as {}: not the command that was given.
    ['NaN inside payload', { messageId: 'm', commandType: 'test.scripted', payload: { amount: NaN, note: null } }, 'command.payload.amount'],
    ['Infinity in a payload array', { messageId: 'm', commandType: 'test.scripted', payload: { rates: [1, -Infinity] } }, 'command.payload.rates[1]'],
    ['Map inside payload', { messageId: 'm', commandType: 'test.scripted', payload: { lines: new Map([['a', 1]]) } }, 'command.payload.lines'],
    ['Set inside metadata', { messageId: 'm', commandType: 'test.scripted', payload: {}, metadata: { tags: new Set(['a']) } }, 'command.metadata.tags'],
    ['huge payload', { messageId: 'm', commandType: 'test.scripted', payload: { blob: 'x'.repeat(1_100_000) } }, 'command.payload'],
    ['NUL inside payload', { messageId: 'm', commandType: 'test.scripted', payload: { s: 'a\u0000' } }, 'command.payload'],
    ['array metadata', { messageId: 'm', commandType: 'test.scripted', payload: {}, metadata: [] }, 'command.metadata'],
    ['over-long correlationId', { messageId: 'm', commandType: 'test.scripted', payload: {}, correlationId: 'c'.repeat(300) }, 'command.correlationId'],
    ['numeric causationId', { messageId: 'm', commandType: 'test.scripted', payload: {}, causationId: 7 }, 'command.causationId'],
  ];

  it.each(invalid)('rejects %s with InboxArgumentError on that argument, storing nothing', async (_label, command, argument) => {
    const before = await count();
    const attempt = app.inbox.receive(command as never);
    await expect(attempt).rejects.toBeInstanceOf(InboxArgumentError);
    await expect(attempt).rejects.toMatchObject({ argument });
    expect(await count()).toBe(before);
  });

  it('rejects an options.manager that is not an EntityManager', async () => {
    await expect(
      app.inbox.receive({ messageId: 'bad-manager', commandType: 'test.scripted', payload: {} }, { manager: {} as never }),
    ).rejects.toMatchObject({ argument: 'options.manager' });
  });

  it('stores strings crafted as SQL verbatim', async () => {
    const evil = `x'); DROP TABLE inbox_entries; --`;
    const { entry } = await app.inbox.receive({
      messageId: evil,
      commandType: 'test.scripted',
      payload: { [evil]: evil },
      correlationId: evil,
      causationId: evil,
      metadata: { evil, [evil]: [evil] },
    });
    const stored = (await app.inbox.findByMessageId(evil))!;
    expect(stored).toMatchObject({ id: entry.id, messageId: evil, correlationId: evil, causationId: evil, payload: { [evil]: evil }, metadata: { evil, [evil]: [evil] } });
    await expect(app.inbox.receive({ messageId: 'sql-type', commandType: `x' OR '1'='1`, payload: {} })).rejects.toBeInstanceOf(UnknownCommandTypeError);
    expect(await app.inbox.list({ commandType: `test.scripted' OR '1'='1`, limit: 5 })).toEqual([]);
  });

  it('lists and counts by status', async () => {
    const { entry } = await app.inbox.receive({ messageId: 'listed-1', commandType: 'test.scripted', payload: {} });
    const pending = await app.inbox.list({ status: InboxStatus.Pending, commandType: 'test.scripted', limit: 1000 });
    expect(pending.map((e) => e.id)).toContain(entry.id);
    expect(pending.every((e) => e.status === InboxStatus.Pending && e.commandType === 'test.scripted')).toBe(true);
    const counts = await app.inbox.countByStatus();
    expect(counts).toEqual({
      pending: await count(),
      processing: 0,
      completed: 0,
      failed: 0,
      dead_letter: 0,
    });
    await expect(app.inbox.list({ limit: 0 })).rejects.toMatchObject({ argument: 'query.limit' });
    await expect(app.inbox.list({ status: 'nope' as never })).rejects.toMatchObject({ argument: 'query.status' });
    await expect(app.inbox.get('not-a-uuid')).rejects.toBeInstanceOf(InboxArgumentError);
    expect(await app.inbox.get('00000000-0000-4000-8000-000000000000')).toBeNull();
  });
});
