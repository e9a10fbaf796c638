import { Injectable } from '@nestjs/common';
import {
  HistoryEvent,
  InboxArgumentError,
  InboxHandler,
  InboxRetention,
  InboxStatus,
  OrderingKeyMismatchError,
  PermanentError,
  type InboxCommandHandler,
  type InboxContext,
  type InboxEntry,
} from 'nestjs-inbox';
import { Client } from 'pg';
import { createTestApp, ManualClock, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

interface Step {
  account: string;
  n: number;
  /** once: fails its first attempt (transient); permanent: a PermanentError until replayed with `fixed`. */
  fail?: 'once' | 'permanent';
  fixed?: boolean;
  /** Keeps the handler busy, so that runs of different keys overlap. */
  sleepMs?: number;
}

interface Run {
  key: string;
  messageId: string;
  n: number;
  attempt: number;
  start: number;
  end: number;
}

const RETRY_MS = 60_000;

/** Records every run (committed or not) in memory, and each committed one in `step_effects`. */
@Injectable()
class Runs {
  readonly all: Run[] = [];
  /** Runs that wait until the test lets them go on, by account and step. */
  private readonly gates = new Map<string, Promise<void>>();

  /** Makes step `n` of `account` wait, once it runs, until the returned function is called. */
  hold(account: string, n: number): () => void {
    let release!: () => void;
    this.gates.set(`${account}/${n}`, new Promise<void>((resolve) => (release = resolve)));
    return release;
  }

  async run(command: Step, { manager, entry }: InboxContext): Promise<void> {
    const run: Run = { key: command.account, messageId: entry.messageId, n: command.n, attempt: entry.attempt, start: performance.now(), end: 0 };
    this.all.push(run);
    try {
      await this.gates.get(`${command.account}/${command.n}`);
      if (command.sleepMs) await new Promise((resolve) => setTimeout(resolve, command.sleepMs));
      if (command.fail === 'once' && entry.attempt === 1) throw new Error('dependency blip');
      if (command.fail === 'permanent' && !command.fixed) throw new PermanentError('insufficient funds');
      await manager.query('INSERT INTO step_effects (account, n, message_id) VALUES ($1, $2, $3)', [command.account, command.n, entry.messageId]);
    } finally {
      run.end = performance.now();
    }
  }

  of(key: string): Run[] {
    return this.all.filter((run) => run.key === key);
  }
}

/** The key is the account, derived from the payload; a dead-lettered holder blocks its key (the default). */
@Injectable()
@InboxHandler('order.step', { maxAttempts: 3, backoff: { initialDelayMs: RETRY_MS, maxDelayMs: RETRY_MS, jitter: 0 }, orderingKey: (step: Step) => step.account })
class StepHandler implements InboxCommandHandler<Step> {
  constructor(private readonly runs: Runs) {}
  execute(command: Step, context: InboxContext): Promise<void> {
    return this.runs.run(command, context);
  }
}

/** The same, but a dead-lettered holder lets its key move on. */
@Injectable()
@InboxHandler('order.skip', { maxAttempts: 1, orderingKey: (step: Step) => step.account, onDeadLetter: 'skip' })
class SkipHandler implements InboxCommandHandler<Step> {
  constructor(private readonly runs: Runs) {}
  execute(command: Step, context: InboxContext): Promise<void> {
    return this.runs.run(command, context);
  }
}

/** No derived key: callers pass it, or not. */
@Injectable()
@InboxHandler('order.free')
class FreeHandler implements InboxCommandHandler<Step> {
  constructor(private readonly runs: Runs) {}
  execute(command: Step, context: InboxContext): Promise<void> {
    return this.runs.run(command, context);
  }
}

describe('ordering keys', () => {
  const clock = new ManualClock();
  let db: TestDatabase;
  // Commands arrive through an application that does not process them (it has the handlers, so it
  // derives their keys), and `worker.processor.runOnce()` runs them: nothing runs in between.
  let app: TestApp;
  let worker: TestApp;
  let runs: Runs;
  let sequence = 0;

  beforeAll(async () => {
    db = await createTestDatabase('ordering');
    // `tx`: the transaction that wrote the effect (a key's run commits in its batch's transaction).
    await sql(db.url, 'CREATE TABLE step_effects (id bigserial PRIMARY KEY, account text NOT NULL, n int NOT NULL, message_id text NOT NULL, tx bigint NOT NULL DEFAULT txid_current())');
    const handlers = [Runs, StepHandler, SkipHandler, FreeHandler];
    app = await createTestApp({ url: db.url, handlers, inbox: { clock, worker: false, notify: false } });
    worker = await createTestApp({
      url: db.url,
      handlers,
      inbox: { clock, notify: false, batchSize: 5, concurrency: 4, workerId: 'ordering-worker' },
      typeorm: { extra: { max: 8 } },
    });
    runs = worker.get(Runs);
    // The pass every worker starts at boot is over before the first command arrives.
    await worker.processor.runOnce();
  });

  afterAll(async () => {
    await worker?.close();
    await app?.close();
    await db?.drop();
  });

  /** A key of its own for each test. */
  const newKey = () => `acct-${++sequence}`;

  async function send(commandType: string, step: Step, orderingKey?: string): Promise<InboxEntry> {
    const { entry } = await app.inbox.receive({ messageId: `${step.account}-${step.n}-${commandType}`, commandType, payload: { ...step }, orderingKey });
    return entry;
  }

  const effects = async (key: string) =>
    (await sql<{ n: number }>(db.url, 'SELECT n FROM step_effects WHERE account = $1 ORDER BY id', [key])).map((row) => row.n);
  const entryOf = async (key: string, n: number, commandType = 'order.step') => (await app.inbox.findByMessageId(`${key}-${n}-${commandType}`))!;

  it('runs the entries of one key one at a time, in the order received, while other keys run side by side', async () => {
    const keys = [newKey(), newKey(), newKey()];
    // Interleaved, as they would arrive from several aggregates at once.
    for (let n = 1; n <= 8; n++) for (const account of keys) await send('order.step', { account, n, sleepMs: 5 });
    await worker.processor.runOnce();
    for (const key of keys) {
      expect(await effects(key)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      const ofKey = runs.of(key);
      expect(ofKey.map((run) => run.n)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      // One at a time: each run starts after the one before it finished.
      for (let i = 1; i < ofKey.length; i++) expect(ofKey[i].start).toBeGreaterThanOrEqual(ofKey[i - 1].end);
    }
    // Across keys, runs overlapped: the keys did not wait for each other.
    const all = keys.flatMap((key) => runs.of(key));
    const overlapping = all.some((a) => all.some((b) => a.key !== b.key && a.start < b.end && b.start < a.end));
    expect(overlapping).toBe(true);
  });

  const transactions = async (key: string) =>
    (await sql<{ n: number }>(db.url, 'SELECT count(DISTINCT tx)::int AS n FROM step_effects WHERE account = $1', [key]))[0].n;

  it("claims the entries waiting behind a key's head with it, and runs them after it in one transaction", async () => {
    const key = newKey();
    for (let n = 1; n <= 5; n++) await send('order.step', { account: key, n });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2, 3, 4, 5]);
    expect(await transactions(key)).toBe(1);
    const ofKey = runs.of(key);
    for (let i = 1; i < ofKey.length; i++) expect(ofKey[i].start).toBeGreaterThanOrEqual(ofKey[i - 1].end);
    expect((await entryOf(key, 5)).waiting).toBe(false);
  });

  it("fills a claim with the oldest key's whole run before taking the heads of younger keys", async () => {
    // batchSize 5: the first key's head and the 3 behind it fill 4 places, the second key's head the
    // fifth; the third key is left to the next claim, which takes its whole run. The second key's
    // head is held until the third key is done: the order of the claims after the first then does
    // not depend on which batch ends first (its run, 2 to 4, is one claim once the head is done).
    const keys = [newKey(), newKey(), newKey()];
    for (let n = 1; n <= 4; n++) for (const account of keys) await send('order.step', { account, n });
    const release = runs.hold(keys[1], 1);
    const pass = worker.processor.runOnce();
    try {
      await waitFor(async () => (await effects(keys[2])).length === 4, "the third key's run");
    } finally {
      release();
      await pass;
    }
    for (const key of keys) expect(await effects(key)).toEqual([1, 2, 3, 4]);
    expect(await transactions(keys[0])).toBe(1);
    expect(await transactions(keys[1])).toBe(2);
    expect(await transactions(keys[2])).toBe(1);
  });

  it("stops a key's run at an entry that fails: the entries behind it go back, still waiting, without running", async () => {
    const key = newKey();
    await send('order.step', { account: key, n: 1 });
    await send('order.step', { account: key, n: 2, fail: 'once' });
    await send('order.step', { account: key, n: 3 });
    await send('order.step', { account: key, n: 4 });
    await worker.processor.runOnce();
    // The head's effect committed (once); the failed entry holds the key for its retry.
    expect(await effects(key)).toEqual([1]);
    expect(await entryOf(key, 2)).toMatchObject({ status: InboxStatus.Failed, retryCount: 1, waiting: false });
    for (const n of [3, 4]) expect(await entryOf(key, n)).toMatchObject({ status: InboxStatus.Pending, waiting: true, retryCount: 0, lockedBy: null });
    expect(runs.of(key).map((run) => run.n)).not.toContain(3);
    const history = await app.inbox.history((await entryOf(key, 3)).id);
    expect(history.find((record) => record.event === HistoryEvent.Released)?.reason).toBe('an earlier entry of its ordering key did not complete in its batch');
    clock.advance(RETRY_MS);
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2, 3, 4]);
    expect(runs.of(key).filter((run) => run.n >= 2).map((run) => [run.n, run.attempt])).toEqual([
      [2, 1],
      [2, 2],
      [3, 1],
      [4, 1],
    ]);
  });

  it('ends a run at an entry an operator dead-lettered while it waited (policy block): it then holds the key', async () => {
    const key = newKey();
    for (let n = 1; n <= 4; n++) await send('order.step', { account: key, n });
    const third = await entryOf(key, 3);
    expect(await app.inbox.deadLetter(third.id, { actor: 'ops', reason: 'wrong amount' })).toMatchObject({ blocksKey: true, waiting: true });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2]);
    const blocked = (await app.inbox.blockedKeys()).find((b) => b.orderingKey === key)!;
    expect(blocked).toMatchObject({ waiting: 1, blockedBy: { id: third.id } });
    await app.inbox.discard(third.id, { actor: 'ops' });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2, 4]);
  });

  it('runs a holder before an earlier entry replayed behind it, and a skipped dead letter left waiting does not strand its key', async () => {
    const key = newKey();
    // 1 (policy skip) is dead-lettered and skipped; the key moves on to 2, which fails once and holds it.
    await send('order.skip', { account: key, n: 1, fail: 'permanent' });
    await send('order.step', { account: key, n: 2, fail: 'once' });
    await send('order.step', { account: key, n: 3 });
    await worker.processor.runOnce();
    expect(await entryOf(key, 1, 'order.skip')).toMatchObject({ status: InboxStatus.DeadLetter, blocksKey: false });
    expect(await entryOf(key, 2)).toMatchObject({ status: InboxStatus.Failed, waiting: false });
    // 1 is replayed, still failing: it waits behind the holder, 2, by its earlier place.
    expect(await app.inbox.replay((await entryOf(key, 1, 'order.skip')).id, { actor: 'ops' })).toMatchObject({ waiting: true });
    const before = runs.of(key).length;
    clock.advance(RETRY_MS);
    await worker.processor.runOnce();
    // The holder ran first, then 1 (dead-lettered again and skipped; 2's writes rolled back with its
    // failure, so 2 ran again alone), then 3; nothing is left waiting.
    expect(runs.of(key).slice(before).map((run) => run.n)).toEqual([2, 1, 2, 3]);
    expect(await effects(key)).toEqual([2, 3]);
    expect(await entryOf(key, 1, 'order.skip')).toMatchObject({ status: InboxStatus.DeadLetter, waiting: false });
    expect(await entryOf(key, 3)).toMatchObject({ status: InboxStatus.Completed });
  });

  it('stores the place of each entry and whether it waits', async () => {
    const key = newKey();
    const first = await send('order.step', { account: key, n: 1 });
    const second = await send('order.step', { account: key, n: 2 });
    expect(first).toMatchObject({ orderingKey: key, orderingSeq: '1', waiting: false });
    expect(second).toMatchObject({ orderingKey: key, orderingSeq: '2', waiting: true });
    expect(await app.inbox.get(second.id)).toMatchObject({ orderingKey: key, orderingSeq: '2', waiting: true, status: InboxStatus.Pending });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2]);
  });

  it('keeps later entries waiting while the holder waits for its retry, then runs them in order after it', async () => {
    const key = newKey();
    await send('order.step', { account: key, n: 1, fail: 'once' });
    await send('order.step', { account: key, n: 2 });
    await send('order.step', { account: key, n: 3 });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([]);
    expect(await entryOf(key, 1)).toMatchObject({ status: InboxStatus.Failed, retryCount: 1, waiting: false });
    expect(await entryOf(key, 2)).toMatchObject({ status: InboxStatus.Pending, waiting: true });
    // Its history says why it has not run.
    const history = await app.inbox.history((await entryOf(key, 2)).id);
    expect(history.at(-1)).toMatchObject({ event: HistoryEvent.Waiting });
    expect(history.at(-1)!.reason).toContain(`messageId ${key}-1-order.step`);
    expect(history.at(-1)!.reason).toContain('failed');
    clock.advance(RETRY_MS);
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2, 3]);
    expect(runs.of(key).map((run) => [run.n, run.attempt])).toEqual([
      [1, 1],
      [1, 2],
      [2, 1],
      [3, 1],
    ]);
  });

  it('blocks a key behind a dead-lettered holder (policy block) until it is replayed, and the replay runs first', async () => {
    const key = newKey();
    const head = await send('order.step', { account: key, n: 1, fail: 'permanent' });
    await send('order.step', { account: key, n: 2 });
    await send('order.step', { account: key, n: 3 });
    await worker.processor.runOnce();
    expect(await app.inbox.get(head.id)).toMatchObject({ status: InboxStatus.DeadLetter, blocksKey: true, waiting: false });
    expect(await effects(key)).toEqual([]);
    const blocked = (await app.inbox.blockedKeys()).find((b) => b.orderingKey === key)!;
    expect(blocked).toMatchObject({ orderingKey: key, waiting: 2 });
    expect(blocked.blockedBy.id).toBe(head.id);
    expect((await app.inbox.blockedKeys({ commandType: 'order.skip' })).map((b) => b.orderingKey)).not.toContain(key);
    const history = await app.inbox.history((await entryOf(key, 3)).id);
    expect(history.at(-1)!.reason).toMatch(/dead-lettered \(permanent_error\); the key is blocked/);

    // Still blocked after another pass.
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([]);

    // A correction may not move the entry to another key.
    await expect(app.inbox.replay(head.id, { actor: 'ops', payload: { account: `${key}-other`, n: 1, fixed: true } })).rejects.toMatchObject({
      argument: 'options.payload',
      message: expect.stringContaining('a corrected payload must keep the key'),
    });
    const replayed = await app.inbox.replay(head.id, { actor: 'ops', reason: 'funds added', payload: { account: key, n: 1, fail: 'permanent', fixed: true } });
    expect(replayed).toMatchObject({ status: InboxStatus.Pending, waiting: false, blocksKey: false });
    expect((await app.inbox.blockedKeys()).map((b) => b.orderingKey)).not.toContain(key);
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2, 3]);
  });

  it('frees a blocked key when its dead letter is discarded: the next entry runs', async () => {
    const key = newKey();
    const head = await send('order.step', { account: key, n: 1, fail: 'permanent' });
    await send('order.step', { account: key, n: 2 });
    await worker.processor.runOnce();
    expect(await entryOf(key, 2)).toMatchObject({ waiting: true });
    const discarded = await app.inbox.discard(head.id, { actor: 'ops', reason: 'duplicate order' });
    expect(discarded).toMatchObject({ blocksKey: false, waiting: false });
    // Discarding handed the key over in the same transaction.
    expect(await entryOf(key, 2)).toMatchObject({ status: InboxStatus.Pending, waiting: false });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([2]);
  });

  it("wakes the workers when a discard, a bulk discard or a dead letter by hand hands a key on: the next entry runs without waiting for a poll", async () => {
    const handlers = [Runs, StepHandler, SkipHandler, FreeHandler];
    // Both notify (the spec's own applications do not); the worker polls once a minute.
    const operator = await createTestApp({ url: db.url, handlers, inbox: { clock, worker: false } });
    const listening = await createTestApp({ url: db.url, handlers, inbox: { clock, workerId: 'ordering-listener' } });
    try {
      await waitFor(async () => (await sql(db.url, `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'`)).length > 0, 'the worker to listen');
      const [discarded, bulk, byHand] = [newKey(), newKey(), newKey()];
      for (const key of [discarded, bulk]) {
        await send('order.step', { account: key, n: 1, fail: 'permanent' });
        await send('order.step', { account: key, n: 2 });
      }
      await worker.processor.runOnce();
      await operator.inbox.discard((await entryOf(discarded, 1)).id, { actor: 'ops' });
      await waitFor(async () => (await effects(discarded)).length === 1, 'the entry after the discarded one', 5_000);
      await operator.inbox.discardMany({ commandType: 'order.step', payload: { account: bulk } }, { actor: 'ops' });
      await waitFor(async () => (await effects(bulk)).length === 1, 'the entry after the discarded ones', 5_000);
      // Under skip, a holder dead-lettered by hand lets the key go to the next entry.
      const byHandHolder = await send('order.skip', { account: byHand, n: 1 });
      await send('order.skip', { account: byHand, n: 2 });
      await operator.inbox.deadLetter(byHandHolder.id, { actor: 'ops' });
      await waitFor(async () => (await effects(byHand)).length === 1, 'the entry after the one dead-lettered by hand', 5_000);
      expect(await effects(byHand)).toEqual([2]);
    } finally {
      await listening.close();
      await operator.close();
    }
  });

  it('lets the key move on past a dead-lettered holder under policy skip', async () => {
    const key = newKey();
    const head = await send('order.skip', { account: key, n: 1, fail: 'permanent' });
    await send('order.skip', { account: key, n: 2 });
    await send('order.skip', { account: key, n: 3 });
    await worker.processor.runOnce();
    expect(await app.inbox.get(head.id)).toMatchObject({ status: InboxStatus.DeadLetter, blocksKey: false });
    expect(await effects(key)).toEqual([2, 3]);
    expect((await app.inbox.blockedKeys()).map((b) => b.orderingKey)).not.toContain(key);
  });

  it('replays a skipped dead letter: it takes a free key at once, and waits for its turn on a busy one', async () => {
    const key = newKey();
    const skipped = await send('order.skip', { account: key, n: 1, fail: 'permanent' });
    await send('order.skip', { account: key, n: 2 });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([2]);
    // The key is free: the replayed entry holds it as soon as the replay commits.
    expect(await app.inbox.replay(skipped.id, { actor: 'ops', payload: { account: key, n: 1, fixed: true } })).toMatchObject({ waiting: false });
    // Another entry of the key arrives before a worker ran the replayed one: it waits behind it.
    const later = await send('order.skip', { account: key, n: 3 });
    expect(later).toMatchObject({ waiting: true });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([2, 1, 3]);
  });

  it('derives the key from the payload, refuses another one, and leaves keyless commands unordered', async () => {
    const key = newKey();
    expect(await send('order.step', { account: key, n: 1 }, key)).toMatchObject({ orderingKey: key });
    await expect(send('order.step', { account: key, n: 2 }, 'someone-else')).rejects.toBeInstanceOf(OrderingKeyMismatchError);
    await expect(send('order.step', { account: key, n: 3 }, 'someone-else')).rejects.toMatchObject({ argument: 'command.orderingKey' });
    await expect(app.inbox.receive({ messageId: `${key}-x`, commandType: 'order.step', payload: { n: 1 } })).rejects.toThrow(
      /handler of "order\.step" derived an unusable key/,
    );
    await expect(send('order.free', { account: key, n: 9 }, '')).rejects.toBeInstanceOf(InboxArgumentError);
    await expect(send('order.free', { account: key, n: 9 }, 'k'.repeat(256))).rejects.toMatchObject({ argument: 'command.orderingKey' });
    await expect(send('order.free', { account: key, n: 9 }, 42 as never)).rejects.toMatchObject({ argument: 'command.orderingKey' });
    await expect(send('order.free', { account: key, n: 9 }, 'k\uD800')).rejects.toMatchObject({ argument: 'command.orderingKey' });
    await expect(app.inbox.blockedKeys({ limit: 0 })).rejects.toMatchObject({ argument: 'query.limit' });
    await expect(app.inbox.blockedKeys({ commandType: '' })).rejects.toMatchObject({ argument: 'query.commandType' });
    expect(await send('order.free', { account: key, n: 10 })).toMatchObject({ orderingKey: null, orderingSeq: null, waiting: false });
    // Nothing half-written: the refused commands were not stored.
    expect(await app.inbox.findByMessageId(`${key}-2-order.step`)).toBeNull();
    await worker.processor.runOnce();
  });

  it('takes an explicit key for a type whose handler derives none', async () => {
    const key = newKey();
    await send('order.free', { account: 'ignored', n: 1, fail: 'once' }, key);
    await send('order.free', { account: 'ignored', n: 2 }, key);
    const second = await app.inbox.findByMessageId('ignored-2-order.free');
    expect(second).toMatchObject({ orderingKey: key, waiting: true });
    await worker.processor.runOnce();
    expect(await app.inbox.get(second!.id)).toMatchObject({ status: InboxStatus.Pending, waiting: true });
    clock.advance(RETRY_MS);
    await worker.processor.runOnce();
    expect(await app.inbox.get(second!.id)).toMatchObject({ status: InboxStatus.Completed });
  });

  it('treats a redelivery with the same key as a duplicate, and one with another key as a conflict', async () => {
    const key = newKey();
    const step = { account: 'free', n: 1 };
    const { entry } = await app.inbox.receive({ messageId: `${key}-dup`, commandType: 'order.free', payload: step, orderingKey: key });
    expect(await app.inbox.receive({ messageId: `${key}-dup`, commandType: 'order.free', payload: step, orderingKey: key })).toMatchObject({
      duplicate: true,
      // Its place as a new entry gives it: a bigint comes back as text.
      entry: { id: entry.id, orderingKey: key, orderingSeq: '1' },
    });
    await expect(app.inbox.receive({ messageId: `${key}-dup`, commandType: 'order.free', payload: step, orderingKey: `${key}-other` })).rejects.toMatchObject({
      name: 'IdempotencyConflictError',
    });
    // The duplicate took no place in the key's order: the next entry is the second.
    const { entry: next } = await app.inbox.receive({ messageId: `${key}-next`, commandType: 'order.free', payload: step, orderingKey: key });
    expect(next).toMatchObject({ orderingSeq: '2', waiting: true });
    await worker.processor.runOnce();
  });

  /** Backends of this database waiting for a lock. */
  const lockWaiters = async () =>
    (await sql<{ n: number }>(db.url, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`))[0].n;

  it('leaves a key as it found it when a concurrent receive of the same messageId wins, whatever holds the key meanwhile', async () => {
    const key = newKey();
    const step = { account: 'free', n: 1 };
    // The receiver gives up soon: a receive that would wait for another's transaction fails quickly.
    const impatient = await createTestApp({ url: db.url, handlers: [Runs, StepHandler, SkipHandler, FreeHandler], inbox: { clock, worker: false, notify: false, receiveTimeoutMs: 1_000 } });
    const first = app.dataSource.createQueryRunner();
    const other = impatient.dataSource.createQueryRunner();
    try {
      // A caller's transaction stores the messageId (under another key) and has not committed yet.
      await first.startTransaction();
      await app.inbox.receive({ messageId: `${key}-raced`, commandType: 'order.free', payload: step, orderingKey: `${key}-first` }, { manager: first.manager });
      // The same messageId under this key, outside any transaction: it waits for that one.
      const raced = impatient.inbox.receive({ messageId: `${key}-raced`, commandType: 'order.free', payload: step, orderingKey: key }).then(
        () => 'stored',
        (error: Error) => error.name,
      );
      await waitFor(async () => (await lockWaiters()) >= 1, 'the racing receive waiting for the first transaction');
      // Another caller's transaction receives a command of this key and keeps its transaction open.
      await other.startTransaction();
      let otherDone = false;
      const received = impatient.inbox.receive({ messageId: `${key}-next`, commandType: 'order.free', payload: step, orderingKey: key }, { manager: other.manager }).finally(() => (otherDone = true));
      await waitFor(async () => otherDone || (await lockWaiters()) >= 2, 'the second receive stored or queued behind the first');
      await first.commitTransaction();
      // The racing receive lost: another key under the same messageId is a conflict.
      expect(await raced).toBe('IdempotencyConflictError');
      await received;
      await other.commitTransaction();
    } finally {
      if (first.isTransactionActive) await first.rollbackTransaction();
      if (other.isTransactionActive) await other.rollbackTransaction();
      await first.release();
      await other.release();
      await impatient.close();
    }
    // The command of this key holds it and runs: nothing was left to hold the key in its place.
    expect(await app.inbox.findByMessageId(`${key}-next`)).toMatchObject({ orderingSeq: '1', waiting: false });
    await worker.processor.runOnce();
    expect(await app.inbox.findByMessageId(`${key}-next`)).toMatchObject({ status: InboxStatus.Completed });
    expect(await sql(db.url, `SELECT "busy" FROM inbox_entries_keys WHERE "ordering_key" = $1`, [key])).toEqual([{ busy: false }]);
  });

  it('numbers two receives racing for a new key one after the other: the first holds it, the second waits', async () => {
    const key = newKey();
    const caller = app.dataSource.createQueryRunner();
    try {
      await caller.startTransaction();
      await app.inbox.receive({ messageId: `${key}-1-order.free`, commandType: 'order.free', payload: { account: key, n: 1 }, orderingKey: key }, { manager: caller.manager });
      const second = app.inbox.receive({ messageId: `${key}-2-order.free`, commandType: 'order.free', payload: { account: key, n: 2 }, orderingKey: key });
      await waitFor(async () => (await lockWaiters()) >= 1, 'the second receive waiting for the first transaction');
      await caller.commitTransaction();
      expect((await second).entry).toMatchObject({ orderingSeq: '2', waiting: true });
    } finally {
      if (caller.isTransactionActive) await caller.rollbackTransaction();
      await caller.release();
    }
    expect(await entryOf(key, 1, 'order.free')).toMatchObject({ orderingSeq: '1', waiting: false });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2]);
  });

  describe('when a hand-over and an operator lock the same key and entry in turn', () => {
    // A hand-over locks the key, then its next entry; an operator's action locks its entry, then
    // its key. A third transaction holding the next entry lines the two up so that they cross,
    // and the server ends one of them: the one that began to wait first.
    let blocker: Client;
    beforeEach(async () => {
      blocker = new Client({ connectionString: db.url });
      await blocker.connect();
    });
    afterEach(() => blocker.end());

    const holdRow = async (id: string) => {
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM inbox_entries WHERE id = $1 FOR UPDATE', [id]);
    };

    it("completes the holder whose batch the server ended, uncharged, and the operator's action goes through", async () => {
      const key = newKey();
      // One entry per claim, so that the second entry is not in the first one's batch; and no
      // handler for the second's type, so that it is never claimed here, whichever transaction
      // the server lets go first.
      const serial = await createTestApp({ url: db.url, handlers: [Runs, SkipHandler], inbox: { clock, notify: false, batchSize: 1, concurrency: 1, workerId: 'serial-worker' } });
      try {
        const serialRuns = serial.get(Runs);
        await serial.processor.runOnce();
        await send('order.skip', { account: key, n: 1 });
        const second = await send('order.free', { account: key, n: 2 }, key);
        const letGo = serialRuns.hold(key, 1);
        const pass = serial.processor.runOnce();
        try {
          await waitFor(() => serialRuns.of(key).length > 0, 'the first entry running');
          await holdRow(second.id);
          const action = app.inbox.deadLetter(second.id, { actor: 'ops' });
          await waitFor(async () => (await lockWaiters()) >= 1, 'the operator waiting for the second entry');
          letGo();
          await waitFor(async () => (await lockWaiters()) >= 2, "the batch's hand-over waiting for the second entry");
          await blocker.query('COMMIT');
          expect(await action).toMatchObject({ status: InboxStatus.DeadLetter, deadLetterReason: 'manual' });
        } finally {
          letGo();
          await pass;
        }
        // maxAttempts 1: a charge would have made the first entry a dead letter.
        expect(await entryOf(key, 1, 'order.skip')).toMatchObject({ status: InboxStatus.Completed, retryCount: 0 });
        expect(await effects(key)).toEqual([1]);
      } finally {
        await serial.close();
      }
    });

    it('runs the operator action the server ended again', async () => {
      const key = newKey();
      // The first entry holds the key as a blocking dead letter; the second waits behind it.
      await send('order.step', { account: key, n: 1, fail: 'permanent' });
      const second = await send('order.step', { account: key, n: 2 });
      await worker.processor.runOnce();
      const first = await entryOf(key, 1);
      expect(first).toMatchObject({ status: InboxStatus.DeadLetter, blocksKey: true });
      await holdRow(second.id);
      const deadLettered = app.inbox.deadLetter(second.id, { actor: 'ops' });
      await waitFor(async () => (await lockWaiters()) >= 1, 'the dead-lettering waiting for the second entry');
      // The discard hands the key over to the second entry: it waits for that entry too.
      const discarded = app.inbox.discard(first.id, { actor: 'ops' });
      await waitFor(async () => (await lockWaiters()) >= 2, "the discard's hand-over waiting for the second entry");
      await blocker.query('COMMIT');
      expect(await discarded).toMatchObject({ status: InboxStatus.DeadLetter, discardedAt: expect.any(Date) });
      expect(await deadLettered).toMatchObject({ status: InboxStatus.DeadLetter, deadLetterReason: 'manual' });
      // The second entry, dead-lettered by hand under block, now holds the key.
      expect(await app.inbox.blockedKeys()).toEqual(expect.arrayContaining([expect.objectContaining({ orderingKey: key, blockedBy: expect.objectContaining({ id: second.id }) })]));
    });
  });

  it("sets a key's row right when it says free while an entry holds the key, and the receive then waits", async () => {
    const key = newKey();
    await send('order.free', { account: key, n: 1 }, key);
    // A row out of step with the entries (written by hand here): free, while the first entry holds the key.
    await sql(db.url, `UPDATE inbox_entries_keys SET "busy" = false WHERE "ordering_key" = $1`, [key]);
    expect(await send('order.free', { account: key, n: 2 }, key)).toMatchObject({ orderingSeq: '2', waiting: true });
    expect(await sql(db.url, `SELECT "busy" FROM inbox_entries_keys WHERE "ordering_key" = $1`, [key])).toEqual([{ busy: true }]);
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2]);
  }, 15_000);

  it("keeps a key held when a worker without the holder's handler charges its last crash, whatever that worker's own default", async () => {
    const key = newKey();
    // A worker of another deploy: no handler for order.step, and `skip` as its module default.
    const other = await createTestApp({ url: db.url, handlers: [Runs, FreeHandler], inbox: { clock, notify: false, workerId: 'other-deploy', onDeadLetter: 'skip' } });
    try {
      const head = await send('order.step', { account: key, n: 1 });
      await send('order.step', { account: key, n: 2 });
      // Its last allowed attempt ran alone as a crash suspect, started, and its worker vanished.
      await sql(
        db.url,
        `UPDATE inbox_entries SET status = 'processing', locked_by = 'gone', locked_until = $2, lock_token = gen_random_uuid(),
           retry_count = 2, max_attempts = 3, last_outcome = 'lease_expired', processing_started_at = $2 WHERE id = $1`,
        [head.id, new Date(clock.now().getTime() - 1)],
      );
      await other.processor.runOnce();
      expect(await app.inbox.get(head.id)).toMatchObject({ status: InboxStatus.DeadLetter, deadLetterReason: 'lease_expired', blocksKey: true });
      await worker.processor.runOnce();
      expect(await effects(key)).toEqual([]);
    } finally {
      await other.close();
    }
  });

  it('dead-letters a waiting entry by hand: under block it stops its key when its turn comes, under skip it is passed over', async () => {
    const blockKey = newKey();
    await send('order.step', { account: blockKey, n: 1 });
    const blockWaiting = await send('order.step', { account: blockKey, n: 2 });
    await send('order.step', { account: blockKey, n: 3 });
    expect(await app.inbox.deadLetter(blockWaiting.id, { actor: 'ops' })).toMatchObject({ blocksKey: true, waiting: true });

    const skipKey = newKey();
    await send('order.skip', { account: skipKey, n: 1 });
    const skipWaiting = await send('order.skip', { account: skipKey, n: 2 });
    await send('order.skip', { account: skipKey, n: 3 });
    expect(await app.inbox.deadLetter(skipWaiting.id, { actor: 'ops' })).toMatchObject({ blocksKey: false, waiting: false });

    await worker.processor.runOnce();
    expect(await effects(blockKey)).toEqual([1]);
    expect((await app.inbox.blockedKeys()).find((b) => b.orderingKey === blockKey)).toMatchObject({ waiting: 1, blockedBy: { id: blockWaiting.id } });
    expect(await effects(skipKey)).toEqual([1, 3]);
  });

  it('dead-letters the holder by hand under block, and the key waits for it', async () => {
    const key = newKey();
    const head = await send('order.step', { account: key, n: 1 });
    await send('order.step', { account: key, n: 2 });
    expect(await app.inbox.deadLetter(head.id, { actor: 'ops', reason: 'hold on' })).toMatchObject({ blocksKey: true, waiting: false });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([]);
    await app.inbox.replay(head.id, { actor: 'ops' });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2]);
  });

  it('replays dead letters in bulk without breaking the order of their keys', async () => {
    const keys = [newKey(), newKey()];
    for (const account of keys) {
      await send('order.step', { account, n: 1, fail: 'permanent' });
      await send('order.step', { account, n: 2 });
    }
    await worker.processor.runOnce();
    const result = await app.inbox.replayMany({ commandType: 'order.step', errorContains: 'insufficient funds' }, { actor: 'ops', batchSize: 1 });
    expect(result.replayed).toBeGreaterThanOrEqual(2);
    for (const account of keys) {
      expect(await entryOf(account, 1)).toMatchObject({ status: InboxStatus.Pending, waiting: false });
      expect(await entryOf(account, 2)).toMatchObject({ waiting: true });
    }
    // They fail again (the payload is still wrong), and block again: the successors never ran.
    await worker.processor.runOnce();
    for (const account of keys) expect(await effects(account)).toEqual([]);
  });

  it("replays a key's skipped dead letters in bulk in the key's order, whichever batch each falls in", async () => {
    // A key whose second dead letter has the smaller id (ids are random): batches walking ids would
    // replay it first, and it would take the free key ahead of the first.
    let key = '';
    for (let i = 0; i < 40 && key === ''; i++) {
      const candidate = newKey();
      const first = await send('order.skip', { account: candidate, n: 1, fail: 'permanent' });
      const second = await send('order.skip', { account: candidate, n: 2, fail: 'permanent' });
      if (second.id < first.id) key = candidate;
    }
    expect(key).not.toBe('');
    await worker.processor.runOnce();
    const result = await app.inbox.replayMany({ commandType: 'order.skip', payload: { account: key } }, { actor: 'ops', batchSize: 1 });
    expect(result).toMatchObject({ matched: 2, replayed: 2 });
    await worker.processor.runOnce();
    // Their first runs, then the replayed ones: in the key's order both times.
    expect(runs.of(key).map((run) => run.n)).toEqual([1, 2, 1, 2]);
  });

  it('keeps a key held through an expired lease on its holder, and resumes in order', async () => {
    const key = newKey();
    const head = await send('order.step', { account: key, n: 1 });
    await send('order.step', { account: key, n: 2 });
    // The holder's worker claimed it and vanished: Processing, lease in the past, nobody holding the row.
    await sql(
      db.url,
      `UPDATE inbox_entries SET status = 'processing', locked_by = 'gone', locked_until = $2, lock_token = gen_random_uuid() WHERE id = $1`,
      [head.id, new Date(clock.now().getTime() - 1)],
    );
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2]);
    expect(runs.of(key).map((run) => run.n)).toEqual([1, 2]);
  });

  it('never removes what orders others, nor the row of a key while a dead letter of it remains', async () => {
    const key = newKey();
    const head = await send('order.step', { account: key, n: 1, fail: 'permanent' });
    await send('order.step', { account: key, n: 2 });
    await worker.processor.runOnce();
    const retention = worker.get(InboxRetention);
    clock.advance(365 * 24 * 3_600_000);
    await retention.runOnce();
    // The blocking dead letter and the entry waiting behind it are still there; the key is still busy.
    expect(await app.inbox.get(head.id)).toMatchObject({ status: InboxStatus.DeadLetter, blocksKey: true });
    expect(await entryOf(key, 2)).toMatchObject({ waiting: true });
    expect(await sql(db.url, 'SELECT busy FROM inbox_entries_keys WHERE ordering_key = $1', [key])).toEqual([{ busy: true }]);
    await app.inbox.discard(head.id, { actor: 'ops' });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([2]);
    clock.advance(365 * 24 * 3_600_000);
    await retention.runOnce();
    // The discarded dead letter can still be replayed: its key keeps numbering after it.
    expect(await sql(db.url, 'SELECT last_seq::int FROM inbox_entries_keys WHERE ordering_key = $1', [key])).toEqual([{ last_seq: 2 }]);
    expect(await send('order.step', { account: key, n: 3 })).toMatchObject({ orderingSeq: '3', waiting: false });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([2, 3]);
  });

  it('forgets a key that has been free for the deduplication window; received again, it starts a new row', async () => {
    const key = newKey();
    await send('order.step', { account: key, n: 1 });
    await worker.processor.runOnce();
    clock.advance(365 * 24 * 3_600_000);
    const { keysRemoved } = await worker.get(InboxRetention).runOnce();
    expect(keysRemoved).toBeGreaterThan(0);
    expect(await sql(db.url, 'SELECT 1 FROM inbox_entries_keys WHERE ordering_key = $1', [key])).toEqual([]);
    expect(await send('order.step', { account: key, n: 2 })).toMatchObject({ orderingSeq: '1', waiting: false });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2]);
  });

  it('replays a skipped dead letter long after, before the entries received since, though its key was free for the window', async () => {
    const key = newKey();
    await send('order.skip', { account: key, n: 1 });
    await send('order.skip', { account: key, n: 2 });
    const third = await send('order.skip', { account: key, n: 3, fail: 'permanent' });
    await worker.processor.runOnce();
    expect(await effects(key)).toEqual([1, 2]);
    clock.advance(365 * 24 * 3_600_000);
    await worker.get(InboxRetention).runOnce();
    for (const n of [11, 12, 13, 14]) await send('order.skip', { account: key, n });
    await app.inbox.replay(third.id, { actor: 'ops', payload: { account: key, n: 3, fail: 'permanent', fixed: true } });
    await worker.processor.runOnce();
    // The first of the new ones held the key; the replayed one comes next, before the later ones.
    expect(await effects(key)).toEqual([1, 2, 11, 3, 12, 13, 14]);
  });
});
