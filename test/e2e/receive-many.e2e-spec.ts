import { Injectable } from '@nestjs/common';
import {
  IdempotencyConflictError,
  InboxArgumentError,
  InboxHandler,
  InboxStatus,
  UnknownCommandTypeError,
  type InboxCommandHandler,
  type InboxContext,
  type ReceiveManyResult,
} from 'nestjs-inbox';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

interface Step {
  account: string;
  n: number;
}

@Injectable()
@InboxHandler('many.plain')
class PlainHandler implements InboxCommandHandler<Step> {
  async execute(step: Step, { manager, entry }: InboxContext): Promise<void> {
    await manager.query('INSERT INTO many_effects (account, n, message_id) VALUES ($1, $2, $3)', [step.account, step.n, entry.messageId]);
  }
}

@Injectable()
@InboxHandler('many.keyed', { orderingKey: (step: Step) => step.account })
class KeyedHandler implements InboxCommandHandler<Step> {
  async execute(step: Step, { manager, entry }: InboxContext): Promise<void> {
    await manager.query('INSERT INTO many_effects (account, n, message_id) VALUES ($1, $2, $3)', [step.account, step.n, entry.messageId]);
  }
}

describe('InboxService.receiveMany', () => {
  let db: TestDatabase;
  let app: TestApp;
  let worker: TestApp;
  let sequence = 0;

  beforeAll(async () => {
    db = await createTestDatabase('receive_many');
    await sql(db.url, 'CREATE TABLE many_effects (id bigserial PRIMARY KEY, account text NOT NULL, n int NOT NULL, message_id text NOT NULL)');
    await sql(db.url, 'CREATE TABLE caller_rows (note text NOT NULL)');
    // Receives through an application without a worker; `worker` runs them only when driven.
    app = await createTestApp({ url: db.url, handlers: [PlainHandler, KeyedHandler], inbox: { worker: false, acceptUnknownCommandTypes: false } });
    worker = await createTestApp({ url: db.url, handlers: [PlainHandler, KeyedHandler], inbox: { workerId: 'many-worker', notify: false } });
  });

  afterAll(async () => {
    await worker?.close();
    await app?.close();
    await db?.drop();
  });

  const id = (label: string) => `${label}-${++sequence}`;
  const stored = async (messageIds: string[]) =>
    (await sql<{ message_id: string }>(db.url, 'SELECT message_id FROM inbox_entries WHERE message_id = ANY($1) ORDER BY message_id', [messageIds])).map((row) => row.message_id);
  const shape = (results: ReceiveManyResult[]) => results.map((result) => [result.index, result.status]);

  it('stores a batch and answers each command with its entry, in the order given', async () => {
    const messageIds = Array.from({ length: 100 }, () => id('batch'));
    const results = await app.inbox.receiveMany(messageIds.map((messageId, n) => ({ messageId, commandType: 'many.plain', payload: { account: 'a', n }, metadata: { n } })));
    expect(results.map((result) => result.status)).toEqual(messageIds.map(() => 'new'));
    for (const [n, result] of results.entries()) {
      if (result.status !== 'new') throw new Error('expected new');
      expect(result.index).toBe(n);
      expect(result.entry).toMatchObject({ messageId: messageIds[n], status: InboxStatus.Pending, payload: { account: 'a', n }, metadata: { n } });
      // As stored (its status may move on meanwhile: a worker of the file may run it).
      const { id, messageId, commandType, payload, metadata, receivedAt, orderingKey } = (await app.inbox.get(result.entry.id))!;
      expect({ id, messageId, commandType, payload, metadata, receivedAt, orderingKey }).toEqual({
        id: result.entry.id,
        messageId: result.entry.messageId,
        commandType: result.entry.commandType,
        payload: result.entry.payload,
        metadata: result.entry.metadata,
        receivedAt: result.entry.receivedAt,
        orderingKey: result.entry.orderingKey,
      });
    }
    expect(await stored(messageIds)).toEqual([...messageIds].sort());
  });

  it('answers duplicates, conflicts, invalid commands and repeats within the batch one by one, storing the rest', async () => {
    const [kept, taken, fresh, repeated, clashing] = [id('kept'), id('taken'), id('fresh'), id('repeated'), id('clashing')];
    const before = await app.inbox.receive({ messageId: kept, commandType: 'many.plain', payload: { account: 'b', n: 1 } });
    const other = await app.inbox.receive({ messageId: taken, commandType: 'many.plain', payload: { account: 'b', n: 2 } });
    const results = await app.inbox.receiveMany([
      { messageId: kept, commandType: 'many.plain', payload: { n: 1, account: 'b' } }, // the same command, keys in another order
      { messageId: taken, commandType: 'many.plain', payload: { account: 'b', n: 99 } }, // another payload under a used messageId
      { messageId: '', commandType: 'many.plain', payload: {} },
      { messageId: id('unknown'), commandType: 'many.nobody', payload: {} },
      { messageId: fresh, commandType: 'many.plain', payload: { account: 'b', n: 3 } },
      { messageId: repeated, commandType: 'many.plain', payload: { account: 'b', n: 4 } },
      { messageId: repeated, commandType: 'many.plain', payload: { n: 4, account: 'b' } },
      { messageId: clashing, commandType: 'many.plain', payload: { account: 'b', n: 5 } },
      { messageId: clashing, commandType: 'many.plain', payload: { account: 'b', n: 6 } },
    ]);
    expect(shape(results)).toEqual([
      [0, 'duplicate'],
      [1, 'conflict'],
      [2, 'invalid'],
      [3, 'invalid'],
      [4, 'new'],
      [5, 'new'],
      [6, 'duplicate'],
      [7, 'new'],
      [8, 'conflict'],
    ]);
    const entryOf = (n: number) => (results[n] as { entry: { id: string } }).entry.id;
    const errorOf = (n: number) => (results[n] as { error: Error }).error;
    expect(entryOf(0)).toBe(before.entry.id);
    expect(errorOf(1)).toBeInstanceOf(IdempotencyConflictError);
    expect(errorOf(1)).toMatchObject({ messageId: taken, existingEntryId: other.entry.id });
    expect(errorOf(2)).toBeInstanceOf(InboxArgumentError);
    expect(errorOf(2)).toMatchObject({ argument: 'command.messageId' });
    expect(errorOf(3)).toBeInstanceOf(UnknownCommandTypeError);
    expect(entryOf(6)).toBe(entryOf(5));
    expect(errorOf(8)).toMatchObject({ messageId: clashing, existingEntryId: entryOf(7) });
    expect(await stored([kept, taken, fresh, repeated, clashing])).toEqual([kept, taken, fresh, repeated, clashing].sort());
    expect((await app.inbox.findByMessageId(taken))!.payload).toEqual({ account: 'b', n: 2 });
    expect((await app.inbox.findByMessageId(clashing))!.payload).toEqual({ account: 'b', n: 5 });
  });

  it('stores nothing when all or nothing is asked for and one command is invalid or conflicts', async () => {
    const [first, second, taken] = [id('aon'), id('aon'), id('aon-taken')];
    await app.inbox.receive({ messageId: taken, commandType: 'many.plain', payload: { account: 'c', n: 1 } });
    const invalid = app.inbox.receiveMany(
      [
        { messageId: first, commandType: 'many.plain', payload: { account: 'c', n: 2 } },
        { messageId: second, commandType: 'many.plain', payload: 'not an object' as never },
      ],
      { allOrNothing: true },
    );
    await expect(invalid).rejects.toThrow(InboxArgumentError);
    await expect(invalid).rejects.toMatchObject({ argument: 'commands[1].payload' });
    const conflicting = app.inbox.receiveMany(
      [
        { messageId: first, commandType: 'many.plain', payload: { account: 'c', n: 2 } },
        { messageId: taken, commandType: 'many.plain', payload: { account: 'c', n: 3 } },
      ],
      { allOrNothing: true },
    );
    await expect(conflicting).rejects.toThrow(IdempotencyConflictError);
    // Two commands under one messageId in the batch itself: refused before anything is stored.
    const clashing = app.inbox.receiveMany(
      [
        { messageId: first, commandType: 'many.plain', payload: { account: 'c', n: 2 } },
        { messageId: second, commandType: 'many.plain', payload: { account: 'c', n: 4 } },
        { messageId: second, commandType: 'many.plain', payload: { account: 'c', n: 5 } },
      ],
      { allOrNothing: true },
    );
    await expect(clashing).rejects.toMatchObject({ argument: 'commands[2].messageId' });
    expect(await stored([first, second])).toEqual([]);
    // The same command twice is no conflict: stored once.
    const repeated = await app.inbox.receiveMany(
      [
        { messageId: second, commandType: 'many.plain', payload: { account: 'c', n: 4 } },
        { messageId: second, commandType: 'many.plain', payload: { n: 4, account: 'c' } },
      ],
      { allOrNothing: true },
    );
    expect(shape(repeated)).toEqual([
      [0, 'new'],
      [1, 'duplicate'],
    ]);
  });

  it("joins the caller's transaction: stored only if it commits, and all or nothing takes back only its own rows", async () => {
    const [rolledBack, committed, refused] = [id('tx'), id('tx'), id('tx')];
    const taken = id('tx-taken');
    await app.inbox.receive({ messageId: taken, commandType: 'many.plain', payload: { account: 'd', n: 0 } });
    await app.dataSource
      .transaction(async (manager) => {
        await app.inbox.receiveMany([{ messageId: rolledBack, commandType: 'many.plain', payload: { account: 'd', n: 1 } }], { manager });
        throw new Error('the caller changes its mind');
      })
      .catch(() => undefined);
    await app.dataSource.transaction(async (manager) => {
      await manager.query(`INSERT INTO caller_rows VALUES ('kept')`);
      await expect(
        app.inbox.receiveMany(
          [
            { messageId: refused, commandType: 'many.plain', payload: { account: 'd', n: 2 } },
            { messageId: taken, commandType: 'many.plain', payload: { account: 'd', n: 9 } },
          ],
          { manager, allOrNothing: true },
        ),
      ).rejects.toThrow(IdempotencyConflictError);
      await app.inbox.receiveMany([{ messageId: committed, commandType: 'many.plain', payload: { account: 'd', n: 3 } }], { manager });
    });
    expect(await stored([rolledBack, committed, refused])).toEqual([committed]);
    expect(await sql(db.url, 'SELECT note FROM caller_rows')).toEqual([{ note: 'kept' }]);
  });

  it('places the commands of an ordering key in the order given, and they run in that order', async () => {
    const account = id('acct');
    const messageIds = [1, 2, 3, 4].map(() => id('keyed'));
    const results = await app.inbox.receiveMany(messageIds.map((messageId, n) => ({ messageId, commandType: 'many.keyed', payload: { account, n } })));
    const entries = results.map((result) => (result as { entry: { orderingKey: string; orderingSeq: string; waiting: boolean } }).entry);
    expect(entries.map((entry) => [entry.orderingKey, entry.orderingSeq, entry.waiting])).toEqual([
      [account, '1', false],
      [account, '2', true],
      [account, '3', true],
      [account, '4', true],
    ]);
    await worker.processor.runOnce();
    const effects = await sql<{ n: number }>(db.url, 'SELECT n FROM many_effects WHERE account = $1 ORDER BY id', [account]);
    expect(effects.map((row) => row.n)).toEqual([0, 1, 2, 3]);
  });

  it('wakes the workers of other applications: a batch runs without waiting for a poll', async () => {
    const listening = await createTestApp({ url: db.url, handlers: [PlainHandler, KeyedHandler], inbox: { workerId: 'many-listener' } });
    try {
      await waitFor(async () => (await sql(db.url, `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'`)).length > 0, 'the worker to listen');
      const account = id('woken');
      await app.inbox.receiveMany([0, 1, 2].map((n) => ({ messageId: id('woken'), commandType: 'many.plain', payload: { account, n } })));
      // That worker polls once a minute: only the notification can have started it.
      await waitFor(async () => (await sql(db.url, 'SELECT 1 FROM many_effects WHERE account = $1', [account])).length === 3, 'the batch to run');
    } finally {
      await listening.close();
    }
  });

  it('answers a redelivery of a stored command as a duplicate, though another command with its messageId comes first in the batch', async () => {
    const messageId = id('redelivered');
    const { entry } = await app.inbox.receive({ messageId, commandType: 'many.plain', payload: { account: 'a', n: 1 } });
    const results = await app.inbox.receiveMany([
      { messageId, commandType: 'many.plain', payload: { account: 'a', n: 2 } },
      { messageId, commandType: 'many.plain', payload: { account: 'a', n: 1 } },
    ]);
    expect(shape(results)).toEqual([
      [0, 'conflict'],
      [1, 'duplicate'],
    ]);
    expect(results[1]).toMatchObject({ entry: { id: entry.id } });
  });

  it('stores all-or-nothing batches that name the same keys in another order side by side, without a deadlock', async () => {
    const outcomes: string[] = [];
    for (let round = 0; round < 3; round++) {
      const [a, b] = [id('first-key'), id('second-key')];
      // Several commands per key: each batch holds its first key while it stores the second.
      const batch = (accounts: string[]) => accounts.flatMap((account) => Array.from({ length: 20 }, (_, n) => ({ messageId: id('crossed'), commandType: 'many.keyed', payload: { account, n } })));
      const settled = await Promise.allSettled([app.inbox.receiveMany(batch([a, b]), { allOrNothing: true }), app.inbox.receiveMany(batch([b, a]), { allOrNothing: true })]);
      outcomes.push(...settled.map((outcome) => (outcome.status === 'fulfilled' ? 'stored' : `${(outcome.reason as Error).name}: ${(outcome.reason as Error).message}`)));
      // Each key numbered its 40 entries 1 to 40.
      const places = await sql<{ n: number; last: string }>(db.url, 'SELECT count(*)::int AS n, max(ordering_seq)::text AS last FROM inbox_entries WHERE ordering_key = ANY($1) GROUP BY ordering_key', [[a, b]]);
      expect(places).toEqual([
        { n: 40, last: '40' },
        { n: 40, last: '40' },
      ]);
    }
    expect(outcomes).toEqual(Array.from({ length: 6 }, () => 'stored'));
  });

  it("locks a new key's row as well as an existing one's, in key order: no deadlock with a transaction taking the same keys in key order", async () => {
    const [newer, existing] = [id('a-key'), id('b-key')];
    const command = (messageId: string, account: string) => ({ messageId, commandType: 'many.keyed', payload: { account, n: 0 } });
    await app.inbox.receive(command(id('existing'), existing));
    let resume!: () => void;
    const paused = new Promise<void>((resolve) => (resume = resolve));
    let tookFirst!: () => void;
    const first = new Promise<void>((resolve) => (tookFirst = resolve));
    // A caller's transaction takes the new key, then (a call later) the existing one: key order.
    const caller = app.dataSource.transaction(async (manager) => {
      await app.inbox.receiveMany([command(id('caller'), newer)], { manager });
      tookFirst();
      await paused;
      await app.inbox.receiveMany([command(id('caller'), existing)], { manager });
    });
    await first;
    // A batch naming both, in key order too: it must wait for the caller at the new key, holding nothing.
    const batch = app.inbox.receiveMany([command(id('batch'), newer), command(id('batch'), existing)], { allOrNothing: true });
    await waitFor(
      async () => (await sql<{ n: number }>(db.url, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`))[0].n > 0,
      'the batch to wait for the caller',
    );
    resume();
    const settled = await Promise.allSettled([caller, batch]);
    expect(settled.map((outcome) => (outcome.status === 'fulfilled' ? 'stored' : (outcome.reason as Error).message))).toEqual(['stored', 'stored']);
  });

  it('refuses what is not a batch of commands, storing nothing', async () => {
    await expect(app.inbox.receiveMany('x' as never)).rejects.toMatchObject({ argument: 'commands' });
    const tooMany = Array.from({ length: 1001 }, (_, n) => ({ messageId: `too-many-${n}`, commandType: 'many.plain', payload: {} }));
    await expect(app.inbox.receiveMany(tooMany)).rejects.toMatchObject({ argument: 'commands' });
    await expect(app.inbox.receiveMany([], { allOrNothing: 'yes' as never })).rejects.toMatchObject({ argument: 'options.allOrNothing' });
    await expect(app.inbox.receiveMany([], { manager: {} as never })).rejects.toMatchObject({ argument: 'options.manager' });
    expect(await app.inbox.receiveMany([])).toEqual([]);
    // A hole in a sparse array is a missing command, answered at its place like any invalid one.
    // eslint-disable-next-line no-sparse-arrays
    const sparse = [{ messageId: 'sparse-1', commandType: 'many.plain', payload: {} }, , { messageId: 'sparse-3', commandType: 'many.plain', payload: {} }];
    await expect(app.inbox.receiveMany(sparse as never, { allOrNothing: true })).rejects.toMatchObject({ argument: 'commands[1]' });
    expect(await stored(['sparse-1', 'sparse-3'])).toEqual([]);
    expect((await app.inbox.receiveMany(sparse as never)).map((result) => result.status)).toEqual(['new', 'invalid', 'new']);
    // More payload than one statement should carry (each payload within maxPayloadBytes).
    const text = 'x'.repeat(1_000_000);
    const huge = Array.from({ length: 70 }, (_, n) => ({ messageId: `huge-${n}`, commandType: 'many.plain', payload: { text } }));
    await expect(app.inbox.receiveMany(huge)).rejects.toMatchObject({ argument: 'commands' });
    expect(await stored(['huge-0'])).toEqual([]);
    expect(await stored(['too-many-0'])).toEqual([]);
  });
});
