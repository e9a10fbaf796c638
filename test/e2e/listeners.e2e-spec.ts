import { Injectable } from '@nestjs/common';
import { InboxHandler, InboxStatus, OnInboxCompleted, type InboxCommandHandler, type InboxEvent } from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, ScriptedHandler } from '../fixtures/handlers';
import { CaptureLogger } from '../support/capture-logger';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** A completed-listener that never settles (a stuck webhook call, say). */
@Injectable()
class StuckListener {
  readonly seen: string[] = [];

  @OnInboxCompleted()
  onCompleted(event: InboxEvent): Promise<void> {
    this.seen.push(event.entry.messageId);
    return new Promise(() => undefined);
  }
}

/** Resolves with what `promise` gave, or with 'timed out' after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timed out'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<'timed out'>((resolve) => (timer = setTimeout(resolve, ms, 'timed out')))]).finally(() => clearTimeout(timer));
}

describe('outcome listeners stay off the critical path', () => {
  let db: TestDatabase;
  let app: TestApp | undefined;
  let logger: CaptureLogger;
  let seq = 0;

  beforeAll(async () => {
    db = await createTestDatabase('listeners');
    await sql(db.url, EFFECTS_TABLE_SQL);
  });

  beforeEach(async () => {
    logger = new CaptureLogger();
    app = await createTestApp({
      url: db.url,
      handlers: [ScriptedHandler, StuckListener],
      logger,
      inbox: { batchSize: 10, concurrency: 1, listenerTimeoutMs: 300, shutdownTimeoutMs: 2000 },
    });
  });

  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  afterAll(async () => {
    await db?.drop();
  });

  /** Stores entries (oldest first) without waking the processor, so one claim takes them all. */
  async function store(payloads: Array<Record<string, unknown>>): Promise<string[]> {
    const ids = payloads.map(() => `l-${++seq}`);
    await sql(
      db.url,
      `INSERT INTO inbox_entries (message_id, command_type, payload, received_at)
       SELECT m, 'test.scripted', p::jsonb, now() - interval '1 minute' + o * interval '1 ms'
       FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(m, p, o)`,
      [ids, payloads.map((p) => JSON.stringify(p))],
    );
    return ids;
  }

  const statusOf = async (messageId: string) =>
    (await sql<{ status: string }>(db.url, 'SELECT status FROM inbox_entries WHERE message_id = $1', [messageId]))[0].status;

  it('records a batch\'s failures and finishes the pass while a completed-listener hangs', async () => {
    const [ok, failing] = await store([{}, { alwaysFail: true }]);
    const pass = app!.processor.runOnce();
    await waitFor(async () => (await statusOf(failing)) === InboxStatus.Failed, 'the failed attempt to be recorded', 5_000);
    expect(await within(pass, 5_000)).toBe(2);
    expect(await statusOf(ok)).toBe(InboxStatus.Completed);
    expect(app!.get(StuckListener).seen).toEqual([ok]);
  });

  it('abandons a listener that does not settle within listenerTimeoutMs, with an error line', async () => {
    await store([{}]);
    await app!.processor.runOnce();
    const line = await waitFor(() => logger.find('error', /did not settle within 300 ms/)[0], 'the listener timeout to be logged', 5_000);
    expect(line.message).toContain('StuckListener.onCompleted');
    expect(line.message).toContain('completed');
  });

  it('shuts down although a listener never settles', async () => {
    const [ok] = await store([{}]);
    await app!.processor.runOnce();
    await waitFor(() => app!.get(StuckListener).seen.includes(ok), 'the listener to be called');
    const closing = app!.close();
    app = undefined;
    expect(await within(closing.then(() => 'closed'), 10_000)).toBe('closed');
  });
});

/** A value with no prototype: it cannot be turned into text (String() throws). */
const formless = () => Object.create(null) as object;

/** Throws a value that is not an Error and cannot be turned into text. */
@Injectable()
@InboxHandler('test.formless')
class FormlessHandler implements InboxCommandHandler<{ fail: boolean }> {
  execute(command: { fail: boolean }): Promise<void> {
    if (command.fail) throw formless();
    return Promise.resolve();
  }
}

/** A completed-listener that throws such a value. */
@Injectable()
class FormlessListener {
  @OnInboxCompleted()
  onCompleted(): void {
    throw formless();
  }
}

describe('thrown values that cannot be turned into text', () => {
  let db: TestDatabase;
  let app: TestApp;
  let logger: CaptureLogger;

  beforeAll(async () => {
    db = await createTestDatabase('listeners_formless');
    logger = new CaptureLogger();
    app = await createTestApp({ url: db.url, handlers: [FormlessHandler, FormlessListener], logger, inbox: { notify: false, concurrency: 1 } });
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it("record a handler's failure, and log a listener's", async () => {
    const failing = await app.inbox.receive({ messageId: 'formless-fail', commandType: 'test.formless', payload: { fail: true } });
    const completing = await app.inbox.receive({ messageId: 'formless-ok', commandType: 'test.formless', payload: { fail: false } });
    await app.processor.runOnce();
    expect(await app.inbox.get(failing.entry.id)).toMatchObject({ status: InboxStatus.Failed, retryCount: 1, error: '[object Object]' });
    expect((await app.inbox.get(completing.entry.id))!.status).toBe(InboxStatus.Completed);
    const line = await waitFor(() => logger.find('error', /FormlessListener.onCompleted failed/)[0], 'the listener failure to be logged', 5_000);
    expect(line.message).toContain('[object Object]');
  });
});
