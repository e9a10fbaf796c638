import { Injectable } from '@nestjs/common';
import {
  AttemptOutcome,
  DeadLetterReason,
  HistoryEvent,
  InboxArgumentError,
  InboxStatus,
  OnInboxCompleted,
  OnInboxDeadLetter,
  OnInboxFailed,
  PayloadValidationError,
  type InboxEntry,
  type InboxEvent,
} from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, ScriptedHandler, ShortLivedHandler, TransferHandler } from '../fixtures/handlers';
import { createTestApp, ManualClock, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** Listens to every outcome; throws on dead letters of one command type to prove errors are contained. */
@Injectable()
class OutcomeListener {
  readonly deadLetters: InboxEvent[] = [];
  readonly failures: InboxEvent[] = [];
  readonly completions: InboxEvent[] = [];
  /** What another connection saw of each dead letter's row while its listener ran. */
  readonly committedStatus = new Map<string, string>();
  databaseUrl?: string;

  @OnInboxDeadLetter()
  async onDeadLetter(event: InboxEvent): Promise<void> {
    this.deadLetters.push(event);
    if (event.entry.commandType === 'test.short-lived') throw new Error('listener exploded');
    const [row] = await sql<{ status: string }>(this.databaseUrl!, 'SELECT status FROM inbox_entries WHERE id = $1', [event.entry.id]);
    this.committedStatus.set(event.entry.id, row.status);
  }

  @OnInboxFailed()
  async onFailed(event: InboxEvent): Promise<void> {
    this.failures.push(event);
  }

  @OnInboxCompleted()
  onCompleted(event: InboxEvent): void {
    this.completions.push(event);
  }
}

describe('dead-letter operations', () => {
  let db: TestDatabase;
  let app: TestApp;
  let listener: OutcomeListener;
  const clock = new ManualClock();
  let seq = 0;

  beforeAll(async () => {
    db = await createTestDatabase('deadletters');
    await sql(db.url, EFFECTS_TABLE_SQL);
    app = await createTestApp({
      url: db.url,
      handlers: [ScriptedHandler, ShortLivedHandler, TransferHandler, OutcomeListener],
      inbox: { clock, maxAttempts: 2, backoff: { initialDelayMs: 100, maxDelayMs: 100, jitter: 0 }, workerId: 'dl-worker' },
    });
    listener = app.get(OutcomeListener);
    listener.databaseUrl = db.url;
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  async function run(commandType: string, payload: Record<string, unknown>, messageId = `dl-${++seq}`): Promise<InboxEntry> {
    const { entry } = await app.inbox.receive({ messageId, commandType, payload });
    await app.processor.runOnce();
    return (await app.inbox.get(entry.id))!;
  }

  /** Runs retries until the entry leaves Failed. */
  async function settle(entry: InboxEntry): Promise<InboxEntry> {
    let current = entry;
    while (current.status === InboxStatus.Failed) {
      clock.advance(current.nextRetryAt!.getTime() - clock.now().getTime());
      await app.processor.runOnce();
      current = (await app.inbox.get(entry.id))!;
    }
    return current;
  }

  describe('attempt history', () => {
    it('records a successful attempt', async () => {
      const entry = await run('test.scripted', {});
      const history = await app.inbox.history(entry.id);
      expect(history).toHaveLength(1);
      expect(history[0]).toMatchObject({
        entryId: entry.id,
        event: HistoryEvent.Attempt,
        attempt: 1,
        outcome: AttemptOutcome.Completed,
        workerId: 'dl-worker',
        errorClass: null,
      });
      expect(history[0].durationMs).toBe(history[0].finishedAt!.getTime() - history[0].startedAt!.getTime());
      // Completed is final: the completing attempt lives on the entry, the success path adds no history row.
      expect(history[0]).toMatchObject({ startedAt: entry.processingStartedAt, finishedAt: entry.processedAt, recordedAt: entry.processedAt });
      expect(entry.processedBy).toBe('dl-worker');
      expect(await sql(db.url, 'SELECT id FROM inbox_entries_history WHERE entry_id = $1', [entry.id])).toEqual([]);
    });

    it('lists failed attempts, then the one that completed the entry', async () => {
      const entry = await settle(await run('test.scripted', { failUntilAttempt: 1 }));
      expect(entry.status).toBe(InboxStatus.Completed);
      const history = await app.inbox.history(entry.id);
      expect(history.map((h) => [h.attempt, h.outcome])).toEqual([
        [1, AttemptOutcome.Failed],
        [2, AttemptOutcome.Completed],
      ]);
      expect(history[1].startedAt!.getTime()).toBeGreaterThanOrEqual(history[0].finishedAt!.getTime());
    });

    it('records each failed attempt with error class, message and a cut stack, then the dead-lettering one', async () => {
      const entry = await settle(await run('test.scripted', { alwaysFail: true }));
      expect(entry.status).toBe(InboxStatus.DeadLetter);
      const history = await app.inbox.history(entry.id);
      expect(history.map((h) => [h.attempt, h.outcome])).toEqual([
        [1, AttemptOutcome.Failed],
        [2, AttemptOutcome.DeadLetter],
      ]);
      expect(history[0].errorClass).toBe('Error');
      expect(history[0].errorMessage).toContain('flaky dependency down (attempt 1)');
      expect(history[0].errorStack).toContain('ScriptedHandler.execute');
      expect(history[0].errorStack!.length).toBeLessThanOrEqual(4000);
    });

    it('records an expired lease as its own outcome, with the worker that held it', async () => {
      // A crash suspect (its last attempt ended with its worker gone) that ran alone, started, and
      // whose worker vanished: Processing, lease in the past, nobody holding the row.
      const [{ id }] = await sql<{ id: string }>(
        db.url,
        `INSERT INTO inbox_entries (message_id, command_type, payload, status, locked_by, locked_until, lock_token, received_at, processing_started_at, last_outcome)
         VALUES ('dl-lease', 'test.scripted', '{"alwaysFail": true}', 'processing', 'gone-worker', $1, gen_random_uuid(), $1, $1, 'lease_expired') RETURNING id`,
        [new Date(clock.now().getTime() - 1)],
      );
      await app.processor.runOnce();
      const entry = await settle((await app.inbox.get(id))!);
      const history = await app.inbox.history(id);
      expect(history[0]).toMatchObject({ attempt: 1, outcome: AttemptOutcome.LeaseExpired, workerId: 'gone-worker', errorClass: 'LeaseExpiredError' });
      expect(history[0].errorMessage).toMatch(/Lease expired/);
      expect(entry.status).toBe(InboxStatus.DeadLetter);
      expect(entry.deadLetterReason).toBe(DeadLetterReason.RetriesExhausted); // the last attempt failed normally
    });

    it('hands a batch back uncharged, as crash suspects, when its worker vanished mid-batch', async () => {
      // One of a batch (nothing stamped): whose handler ran before the worker died is not known.
      const [{ id }] = await sql<{ id: string }>(
        db.url,
        `INSERT INTO inbox_entries (message_id, command_type, payload, status, locked_by, locked_until, lock_token, received_at)
         VALUES ('dl-batch', 'test.scripted', '{}', 'processing', 'gone-worker', $1, gen_random_uuid(), $1) RETURNING id`,
        [new Date(clock.now().getTime() - 1)],
      );
      await app.processor.runOnce();
      const entry = (await app.inbox.get(id))!;
      expect(entry).toMatchObject({ status: InboxStatus.Completed, retryCount: 0, lastOutcome: AttemptOutcome.Completed });
      const history = await app.inbox.history(id);
      expect(history.map((h) => [h.event, h.attempt, h.workerId])).toEqual([
        [HistoryEvent.Released, 1, 'gone-worker'],
        [HistoryEvent.Attempt, 1, 'dl-worker'],
      ]);
      expect(history[0].reason).toMatch(/worker was gone/);
    });

    it('hands a crash suspect back uncharged, still a suspect, when its worker vanished before its attempt started', async () => {
      // Claimed as a suspect (it ran alone), but its start was never stamped: its handler never ran.
      const [{ id }] = await sql<{ id: string }>(
        db.url,
        `INSERT INTO inbox_entries (message_id, command_type, payload, status, retry_count, locked_by, locked_until, lock_token, received_at, last_outcome)
         VALUES ('dl-unstarted', 'test.scripted', '{}', 'processing', 1, 'gone-worker', $1, gen_random_uuid(), $1, 'lease_expired') RETURNING id`,
        [new Date(clock.now().getTime() - 1)],
      );
      await app.processor.runOnce();
      const entry = (await app.inbox.get(id))!;
      expect(entry).toMatchObject({ status: InboxStatus.Completed, retryCount: 1 });
      const history = await app.inbox.history(id);
      expect(history.map((h) => [h.event, h.attempt, h.workerId])).toEqual([
        [HistoryEvent.Released, 2, 'gone-worker'],
        [HistoryEvent.Attempt, 2, 'dl-worker'],
      ]);
      expect(history[0].reason).toMatch(/before its attempt started/);
    });

    it('fails history() for a missing entry', async () => {
      await expect(app.inbox.history('00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({ name: 'InboxEntryNotFoundError' });
      await expect(app.inbox.history('nope')).rejects.toBeInstanceOf(InboxArgumentError);
    });
  });

  describe('dead-letter reasons', () => {
    it.each([
      ['permanent_error', 'test.scripted', { permanent: true }],
      ['invalid_payload', 'test.transfer', { account: '', amount: -1 }],
      ['retries_exhausted', 'test.scripted', { alwaysFail: true }],
    ])('records %s with the time it died', async (reason, commandType, payload) => {
      const entry = await settle(await run(commandType, payload));
      expect(entry.status).toBe(InboxStatus.DeadLetter);
      expect(entry.deadLetterReason).toBe(reason);
      expect(entry.deadLetteredAt).toEqual(clock.now());
    });

    it('never dead-letters a command type this worker has no handler for: it is left Pending for a worker that has', async () => {
      await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload, received_at) VALUES ('dl-orphan', 'nobody.handles', '{}', $1)`, [clock.now()]);
      await app.processor.runOnce();
      expect(await app.inbox.findByMessageId('dl-orphan')).toMatchObject({ status: InboxStatus.Pending, retryCount: 0, deadLetterReason: null });
    });

    it('records lease_expired when the last allowed attempt was a crash (a poison message)', async () => {
      const [{ id }] = await sql<{ id: string }>(
        db.url,
        `INSERT INTO inbox_entries (message_id, command_type, payload, status, retry_count, locked_by, locked_until, lock_token, received_at, processing_started_at, last_outcome)
         VALUES ('dl-poison', 'test.scripted', '{}', 'processing', 1, 'crashed-worker', $1, gen_random_uuid(), $1, $1, 'lease_expired') RETURNING id`,
        [new Date(clock.now().getTime() - 1)],
      );
      await app.processor.runOnce();
      const entry = (await app.inbox.get(id))!;
      expect(entry).toMatchObject({ status: InboxStatus.DeadLetter, deadLetterReason: DeadLetterReason.LeaseExpired, retryCount: 2 });
    });

    it('filters dead letters by reason', async () => {
      const permanent = await app.inbox.list({ status: InboxStatus.DeadLetter, deadLetterReason: DeadLetterReason.PermanentError });
      const dead = await run('test.scripted', { permanent: true });
      expect(permanent.map((e) => e.id)).not.toContain(dead.id);
      const afterwards = await app.inbox.list({ status: InboxStatus.DeadLetter, deadLetterReason: DeadLetterReason.PermanentError });
      expect(afterwards.map((e) => e.id)).toContain(dead.id);
      expect(afterwards.every((e) => e.deadLetterReason === DeadLetterReason.PermanentError)).toBe(true);
      expect(await app.inbox.count({ deadLetterReason: DeadLetterReason.PermanentError })).toBe(afterwards.length);
      await expect(app.inbox.list({ deadLetterReason: 'bored' as never })).rejects.toMatchObject({ argument: 'query.deadLetterReason' });
    });
  });

  describe('replay', () => {
    it('records who asked and why', async () => {
      const dead = await run('test.scripted', { permanent: true });
      const replayed = await app.inbox.replay(dead.id, { actor: 'alice', reason: 'rule relaxed (TICKET-1)' });
      expect(replayed).toMatchObject({ status: InboxStatus.Pending, retryCount: 0, deadLetterReason: null, messageId: dead.messageId });
      const history = await app.inbox.history(dead.id);
      expect(history.at(-1)).toMatchObject({ event: HistoryEvent.Replayed, actor: 'alice', reason: 'rule relaxed (TICKET-1)', previousPayload: null });
    });

    it('accepts a corrected payload that passes the handler validation, keeping the old one in the history', async () => {
      const dead = await run('test.transfer', { account: '', amount: 0 });
      expect(dead.deadLetterReason).toBe(DeadLetterReason.InvalidPayload);
      const replayed = await app.inbox.replay(dead.id, { actor: 'bob', reason: 'fixed account', payload: { account: 'acc-9', amount: 9 } });
      expect(replayed.payload).toEqual({ account: 'acc-9', amount: 9 });
      await app.processor.runOnce();
      const done = (await app.inbox.get(dead.id))!;
      expect(done.status).toBe(InboxStatus.Completed);
      const history = await app.inbox.history(dead.id);
      expect(history.find((h) => h.event === HistoryEvent.Replayed)).toMatchObject({ actor: 'bob', previousPayload: { account: '', amount: 0 } });
      expect(await sql(db.url, 'SELECT note FROM effects WHERE message_id = $1', [dead.messageId])).toEqual([{ note: 'acc-9:9' }]);
      // Still one entry for the key: deduplication holds (the corrected payload is now the stored one).
      expect((await app.inbox.receive({ messageId: dead.messageId, commandType: 'test.transfer', payload: { account: 'acc-9', amount: 9 } })).duplicate).toBe(true);
    });

    it('takes a late redelivery of the original message, after a corrected replay, for a duplicate', async () => {
      const original = { account: '', amount: 0 };
      const dead = await run('test.transfer', original);
      await app.inbox.replay(dead.id, { actor: 'bob', reason: 'fixed account', payload: { account: 'acc-7', amount: 7 } });
      await app.processor.runOnce();
      // The broker delivers the original once more: the same message, not a conflict.
      const again = await app.inbox.receive({ messageId: dead.messageId, commandType: 'test.transfer', payload: { amount: 0, account: '' } });
      expect(again).toMatchObject({ duplicate: true, entry: { id: dead.id, status: InboxStatus.Completed } });
      // Anything else under that key is still a conflict.
      await expect(
        app.inbox.receive({ messageId: dead.messageId, commandType: 'test.transfer', payload: { account: 'acc-8', amount: 8 } }),
      ).rejects.toMatchObject({ name: 'IdempotencyConflictError' });
      expect(await sql(db.url, 'SELECT note FROM effects WHERE message_id = $1', [dead.messageId])).toEqual([{ note: 'acc-7:7' }]);
    });

    it('refuses a corrected payload that fails validation, changing nothing', async () => {
      const dead = await run('test.transfer', { account: '', amount: 0 });
      await expect(app.inbox.replay(dead.id, { actor: 'bob', payload: { account: 'acc-1', amount: 'lots' } })).rejects.toBeInstanceOf(
        PayloadValidationError,
      );
      const after = (await app.inbox.get(dead.id))!;
      expect(after).toMatchObject({ status: InboxStatus.DeadLetter, payload: { account: '', amount: 0 } });
      expect((await app.inbox.history(dead.id)).some((h) => h.event === HistoryEvent.Replayed)).toBe(false);
      await expect(app.inbox.replay(dead.id, { actor: 'bob', payload: [] as never })).rejects.toMatchObject({ argument: 'options.payload' });
    });

    describe('in bulk', () => {
      const typeA = 'test.scripted';
      let before: Date;
      let between: Date;
      let after: Date;
      let round = 0;
      /** This test's fixture: its message ids carry the round. */
      let id: (name: string) => string;

      // Each test gets its own dead letters, received after every earlier test's: two with permanent
      // errors, then (later) two with exhausted retries and one of another type.
      beforeEach(async () => {
        const prefix = `bulk${++round}`;
        id = (name) => `${prefix}-${name}`;
        clock.advance(1_000);
        before = clock.now();
        for (let i = 0; i < 2; i++) await run(typeA, { permanent: true }, id(`perm-${i}`));
        clock.advance(60_000);
        between = clock.now();
        for (let i = 0; i < 2; i++) await settle(await run(typeA, { alwaysFail: true }, id(`exh-${i}`)));
        await settle(await run('test.short-lived', {}, id('short')));
        clock.advance(1_000);
        after = clock.now();
      });

      const statusOf = async (messageId: string) => (await app.inbox.findByMessageId(messageId))!.status;

      it('counts without changing anything on a dry run', async () => {
        const result = await app.inbox.replayMany({ deadLetterReason: DeadLetterReason.RetriesExhausted, receivedAfter: between, receivedBefore: after }, { actor: 'ops', dryRun: true });
        expect(result).toEqual({ matched: 3, replayed: 0, dryRun: true }); // exh-0, exh-1, short
        expect(await statusOf(id('exh-0'))).toBe(InboxStatus.DeadLetter);
      });

      it('replays by command type and received time, in batches, with an audit record each', async () => {
        const progress: Array<[number, number]> = [];
        const result = await app.inbox.replayMany(
          { commandType: typeA, receivedAfter: between, receivedBefore: after },
          { actor: 'ops', reason: 'dependency fixed', batchSize: 1, onProgress: (done, total) => progress.push([done, total]) },
        );
        expect(result).toEqual({ matched: 2, replayed: 2, dryRun: false });
        // A batch each; none more once the counted entries are done.
        expect(progress).toEqual([
          [1, 2],
          [2, 2],
        ]);
        // Replayed entries run again at once (and fail again: attempt 1 of 2 after the reset).
        await app.processor.runOnce();
        const replayed = await Promise.all([id('exh-0'), id('exh-1')].map(async (messageId) => (await app.inbox.findByMessageId(messageId))!));
        for (const entry of replayed) {
          expect(entry).toMatchObject({ status: InboxStatus.Failed, retryCount: 1 });
          const events = (await app.inbox.history(entry.id)).map((h) => h.event);
          expect(events).toEqual([HistoryEvent.Attempt, HistoryEvent.Attempt, HistoryEvent.Replayed, HistoryEvent.Attempt]);
          expect((await app.inbox.history(entry.id))[2]).toMatchObject({ actor: 'ops', reason: 'dependency fixed' });
        }
        for (const entry of replayed) await settle(entry);
        expect(await statusOf(id('perm-0'))).toBe(InboxStatus.DeadLetter); // received before `between`
        expect(await statusOf(id('short'))).toBe(InboxStatus.DeadLetter); // other command type
      });

      it('replays by reason', async () => {
        const result = await app.inbox.replayMany({ deadLetterReason: DeadLetterReason.PermanentError, receivedAfter: before, receivedBefore: between }, { actor: 'ops' });
        expect(result.replayed).toBe(2);
        await app.processor.runOnce(); // they ran again and failed permanently again
        for (const messageId of [id('perm-0'), id('perm-1')]) {
          const history = await app.inbox.history((await app.inbox.findByMessageId(messageId))!.id);
          expect(history.map((h) => h.event)).toEqual([HistoryEvent.Attempt, HistoryEvent.Replayed, HistoryEvent.Attempt]);
        }
      });

      it('replays by error text', async () => {
        const result = await app.inbox.replayMany({ errorContains: 'ALWAYS FAILS', receivedAfter: before, receivedBefore: after }, { actor: 'ops' }); // case-insensitive
        expect(result).toMatchObject({ matched: 1, replayed: 1 });
        await app.processor.runOnce();
        const history = await app.inbox.history((await app.inbox.findByMessageId(id('short')))!.id);
        expect(history.filter((h) => h.event === HistoryEvent.Replayed)).toHaveLength(1);
        expect((await app.inbox.replayMany({ errorContains: '%' }, { actor: 'ops', dryRun: true })).matched).toBe(0); // wildcards are literal
      });

      it('validates its arguments', async () => {
        await expect(app.inbox.replayMany({}, {} as never)).rejects.toMatchObject({ argument: 'options.actor' });
        await expect(app.inbox.replayMany({ status: InboxStatus.Completed }, { actor: 'x' })).rejects.toMatchObject({ argument: 'filter.status' });
        await expect(app.inbox.replayMany({ receivedAfter: 'yesterday' as never }, { actor: 'x' })).rejects.toMatchObject({ argument: 'filter.receivedAfter' });
        await expect(app.inbox.replayMany({}, { actor: 'x', batchSize: 0 })).rejects.toMatchObject({ argument: 'options.batchSize' });
        await expect(app.inbox.replayMany({}, { actor: 'x', dryRun: 'yes' as never })).rejects.toMatchObject({ argument: 'options.dryRun' });
      });

      it('refuses a misspelt filter field or a bad callback before it changes anything', async () => {
        const open = await app.inbox.count({ status: InboxStatus.DeadLetter, includeDiscarded: false });
        expect(open).toBeGreaterThan(1);
        // Dropped, the misspelt field would have left an empty filter: every dead letter.
        await expect(app.inbox.discardMany({ comandType: typeA } as never, { actor: 'ops' })).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'filter.comandType' });
        await expect(app.inbox.replayMany({ reason: 'x' } as never, { actor: 'ops' })).rejects.toMatchObject({ argument: 'filter.reason' });
        await expect(app.inbox.count({ stauts: InboxStatus.DeadLetter } as never)).rejects.toMatchObject({ argument: 'filter.stauts' });
        await expect(app.inbox.list({ limt: 5 } as never)).rejects.toMatchObject({ argument: 'query.limt' });
        await expect(app.inbox.discardMany({}, { actor: 'ops', batchSize: 1, onProgress: 'nope' } as never)).rejects.toMatchObject({ argument: 'options.onProgress' });
        // A missing filter is not the empty one (which means every dead letter): a bulk action needs it said.
        for (const missing of [undefined, null, [], [{ commandType: typeA }]]) {
          await expect(app.inbox.replayMany(missing as never, { actor: 'ops' })).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'filter' });
          await expect(app.inbox.discardMany(missing as never, { actor: 'ops' })).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'filter' });
        }
        await expect(app.inbox.count([] as never)).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'filter' });
        expect(await app.inbox.count({ status: InboxStatus.DeadLetter, includeDiscarded: false })).toBe(open);
      });
    });
  });

  it('refuses dates PostgreSQL cannot store as an argument error', async () => {
    // The earliest JavaScript date lies before PostgreSQL's earliest timestamp (4714 BC).
    const tooEarly = new Date(-8.64e15);
    const earliest = new Date(Date.UTC(-4713, 10, 24));
    await expect(app.inbox.list({ receivedBefore: tooEarly })).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'query.receivedBefore' });
    await expect(app.inbox.count({ receivedAfter: tooEarly })).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'filter.receivedAfter' });
    await expect(app.inbox.replayMany({ receivedBefore: new Date(earliest.getTime() - 1) }, { actor: 'ops', dryRun: true })).rejects.toMatchObject({
      name: 'InboxArgumentError',
      argument: 'filter.receivedBefore',
    });
    // The whole range PostgreSQL can store is accepted, up to the latest JavaScript date.
    const { entry } = await app.inbox.receive({ messageId: `dates-${++seq}`, commandType: 'test.scripted', payload: {} });
    const wide = await app.inbox.list({ receivedAfter: earliest, receivedBefore: new Date(8.64e15), limit: 1000 });
    expect(wide.map((e) => e.id)).toContain(entry.id);
  });

  describe('closing without running', () => {
    it('discards a dead letter: kept, distinguishable, out of bulk replays, audited', async () => {
      const dead = await run('test.scripted', { permanent: true }, 'dl-discard');
      const openDeadLetters = { commandType: 'test.scripted', errorContains: 'business rule', includeDiscarded: false, status: InboxStatus.DeadLetter };
      const openBefore = await app.inbox.count(openDeadLetters);
      const discarded = await app.inbox.discard(dead.id, { actor: 'carol', reason: 'duplicate order, refunded by hand' });
      expect(discarded.status).toBe(InboxStatus.DeadLetter);
      expect(discarded.discardedAt).toEqual(clock.now());
      expect(discarded.processedAt).toBeNull();
      expect((await app.inbox.history(dead.id)).at(-1)).toMatchObject({ event: HistoryEvent.Discarded, actor: 'carol' });
      expect(await app.inbox.count(openDeadLetters)).toBe(openBefore - 1);
      const dry = await app.inbox.replayMany({ commandType: 'test.scripted', deadLetterReason: DeadLetterReason.PermanentError }, { actor: 'x', dryRun: true });
      const withDiscarded = await app.inbox.count({ commandType: 'test.scripted', deadLetterReason: DeadLetterReason.PermanentError, status: InboxStatus.DeadLetter });
      expect(dry.matched).toBe(withDiscarded - 1);
      // Deduplication still holds.
      expect((await app.inbox.receive({ messageId: 'dl-discard', commandType: 'test.scripted', payload: { permanent: true } })).duplicate).toBe(true);
      // Not twice, not other states.
      await expect(app.inbox.discard(dead.id, { actor: 'carol' })).rejects.toMatchObject({ name: 'InvalidEntryStateError' });
      const done = await run('test.scripted', {});
      await expect(app.inbox.discard(done.id, { actor: 'carol' })).rejects.toMatchObject({ name: 'InvalidEntryStateError', status: 'completed' });
      await expect(app.inbox.discard('00000000-0000-4000-8000-000000000000', { actor: 'carol' })).rejects.toMatchObject({ name: 'InboxEntryNotFoundError' });
      await expect(app.inbox.discard(dead.id, {} as never)).rejects.toMatchObject({ argument: 'options.actor' });
    });

    it('dead-letters a Pending or Failed entry by hand, with the reason, and it never runs', async () => {
      const handler = app.get(ScriptedHandler);
      // Pending: stored behind the processor's back, due only in an hour, so that nothing claims it meanwhile.
      const [{ id }] = await sql<{ id: string }>(
        db.url,
        `INSERT INTO inbox_entries (message_id, command_type, payload, received_at) VALUES ('dl-manual', 'test.scripted', '{}', $1) RETURNING id`,
        [new Date(clock.now().getTime() + 3_600_000)],
      );
      const dead = await app.inbox.deadLetter(id, { actor: 'dave', reason: 'customer cancelled' });
      expect(dead).toMatchObject({ status: InboxStatus.DeadLetter, deadLetterReason: DeadLetterReason.Manual, error: 'Dead-lettered by dave: customer cancelled' });
      await app.processor.runOnce();
      expect(handler.calls.some((c) => c.messageId === 'dl-manual')).toBe(false);
      expect((await app.inbox.history(id)).at(-1)).toMatchObject({ event: HistoryEvent.DeadLetter, actor: 'dave', reason: 'customer cancelled' });
      await waitFor(() => listener.deadLetters.some((e) => e.entry.id === id), 'the manual dead letter to be heard');
      expect(listener.deadLetters.filter((e) => e.entry.id === id)).toHaveLength(1);

      const failed = await run('test.scripted', { failUntilAttempt: 1 });
      expect((await app.inbox.deadLetter(failed.id, { actor: 'dave' })).status).toBe(InboxStatus.DeadLetter);
      const completed = await run('test.scripted', {});
      await expect(app.inbox.deadLetter(completed.id, { actor: 'dave' })).rejects.toMatchObject({ name: 'InvalidEntryStateError' });
    });
  });

  describe('listeners', () => {
    it('fire once per dead letter, after the state is committed', async () => {
      const dead = await run('test.scripted', { permanent: true });
      // Inside the listener, another connection already saw the state it was told about: committed.
      const seen = await waitFor(() => listener.committedStatus.get(dead.id), 'the listener to look at the row');
      expect(seen).toBe(InboxStatus.DeadLetter);
      const events = listener.deadLetters.filter((e) => e.entry.id === dead.id);
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ type: 'dead_letter', reason: DeadLetterReason.PermanentError, error: 'business rule violated' });
      expect(events[0].entry).toMatchObject({ status: InboxStatus.DeadLetter, retryCount: 1 });
    });

    it('report failures and completions the same way', async () => {
      const entry = await settle(await run('test.scripted', { failUntilAttempt: 1 }));
      expect(entry.status).toBe(InboxStatus.Completed);
      await waitFor(() => listener.completions.some((e) => e.entry.id === entry.id), 'the completion to be heard');
      expect(listener.failures.filter((e) => e.entry.id === entry.id)).toHaveLength(1);
      expect(listener.completions.filter((e) => e.entry.id === entry.id)).toHaveLength(1);
      // The event carries the row as written: the completing attempt's times are set.
      expect(listener.completions.find((e) => e.entry.id === entry.id)!.entry).toMatchObject({ processedAt: entry.processedAt, processingStartedAt: entry.processingStartedAt });
    });

    it('a throwing listener does not affect the entry or the processing', async () => {
      const dead = await settle(await run('test.short-lived', {}));
      expect(dead.status).toBe(InboxStatus.DeadLetter);
      await waitFor(() => listener.deadLetters.some((e) => e.entry.id === dead.id), 'the dead letter to be heard');
      expect(listener.deadLetters.filter((e) => e.entry.id === dead.id)).toHaveLength(1);
      const next = await run('test.scripted', {});
      expect(next.status).toBe(InboxStatus.Completed);
    });
  });
});
