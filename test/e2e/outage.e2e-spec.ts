import { Injectable, type LoggerService } from '@nestjs/common';
import {
  InboxHandler,
  InboxStatus,
  InboxUnavailableError,
  type InboxCommandHandler,
  type InboxContext,
} from 'nestjs-inbox';
import { Gate } from '../fixtures/gated-handler';
import { EFFECTS_TABLE_SQL, ScriptedHandler } from '../fixtures/handlers';
import { proxyFor, type TcpProxy } from '../support/tcp-proxy';
import { createTestApp, ManualClock, waitFor } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** Keeps what the processor logs, so a spec can count outage messages. */
class RecordingLogger implements LoggerService {
  readonly lines: string[] = [];
  log(message: string) {
    this.lines.push(`log ${message}`);
  }
  error(message: string) {
    this.lines.push(`error ${message}`);
  }
  warn(message: string) {
    this.lines.push(`warn ${message}`);
  }
  count(pattern: RegExp): number {
    return this.lines.filter((line) => pattern.test(line)).length;
  }
}

/** Writes an effect, then waits at a gate; the first attempt outlives its timeout. */
@Injectable()
@InboxHandler('test.slow', { timeoutMs: 200 })
class SlowHandler implements InboxCommandHandler {
  gate = new Gate();
  lateWriteError?: unknown;
  attempts: number[] = [];

  async execute(_command: unknown, context: InboxContext): Promise<void> {
    this.attempts.push(context.entry.attempt);
    await context.manager.query('INSERT INTO effects (message_id, attempt, note) VALUES ($1, $2, $3)', [
      context.entry.messageId,
      context.entry.attempt,
      'before the gate',
    ]);
    if (context.entry.attempt > 1) return;
    await this.gate.opened;
    // Too late: the attempt timed out. This write must fail, not autocommit.
    await context.manager
      .query('INSERT INTO effects (message_id, attempt, note) VALUES ($1, $2, $3)', [context.entry.messageId, context.entry.attempt, 'late'])
      .catch((error: unknown) => (this.lateWriteError = error));
  }
}

/** Waits in a statement on the server (a lock, a long query) well past its time limit. */
@Injectable()
@InboxHandler('test.stuck', { timeoutMs: 300, maxAttempts: 3, backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 0 } })
class StuckStatementHandler implements InboxCommandHandler {
  async execute(_command: unknown, context: InboxContext): Promise<void> {
    await context.manager.query('SELECT pg_sleep(30)');
  }
}

describe('database outages and timeouts', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let proxiedUrl: string;

  beforeAll(async () => {
    db = await createTestDatabase('outage');
    await sql(db.url, EFFECTS_TABLE_SQL);
    proxy = proxyFor(db.url);
    proxiedUrl = await proxy.start(db.url);
  });

  afterEach(() => proxy.set('forward'));

  afterAll(async () => {
    await proxy?.close();
    await db?.drop();
  });

  const stored = async (messageId: string) =>
    (await sql(db.url, 'SELECT 1 FROM inbox_entries WHERE message_id = $1', [messageId])).length;

  it('fails receive fast with InboxUnavailableError while the server is down, storing nothing', async () => {
    const app = await createTestApp({ url: proxiedUrl, handlers: [ScriptedHandler], inbox: { worker: false, acceptUnknownCommandTypes: false } });
    try {
      proxy.set('refuse');
      const started = Date.now();
      await expect(app.inbox.receive({ messageId: 'down-1', commandType: 'test.scripted', payload: {} })).rejects.toBeInstanceOf(
        InboxUnavailableError,
      );
      expect(Date.now() - started).toBeLessThan(5_000);
      proxy.set('forward');
      expect(await stored('down-1')).toBe(0);
      // The same call succeeds once the server is back, on the same application.
      const { duplicate } = await app.inbox.receive({ messageId: 'down-1', commandType: 'test.scripted', payload: {} });
      expect(duplicate).toBe(false);
    } finally {
      await app.close();
    }
  });

  it('fails receive after receiveTimeoutMs when the database does not answer, storing nothing', async () => {
    const app = await createTestApp({
      url: proxiedUrl,
      handlers: [ScriptedHandler],
      inbox: { worker: false, acceptUnknownCommandTypes: false, receiveTimeoutMs: 300 },
    });
    try {
      proxy.set('blackhole');
      const started = Date.now();
      const attempt = app.inbox.receive({ messageId: 'silent-1', commandType: 'test.scripted', payload: {} });
      await expect(attempt).rejects.toBeInstanceOf(InboxUnavailableError);
      await expect(attempt).rejects.toThrow(/receiveTimeoutMs \(300 ms\)/);
      expect(Date.now() - started).toBeLessThan(2_000);
      proxy.set('forward');
      expect(await stored('silent-1')).toBe(0);
    } finally {
      await app.close();
    }
  });

  it('ends a worker connection that went silent, and runs on new ones', async () => {
    const status = async (messageId: string) => (await sql<{ status: string }>(db.url, 'SELECT status FROM inbox_entries WHERE message_id = $1', [messageId]))[0]?.status;
    const app = await createTestApp({ url: proxiedUrl, handlers: [ScriptedHandler], inbox: { pollIntervalMs: 20, leaseMs: 1_000, notify: false, shutdownTimeoutMs: 1_000 } });
    try {
      await app.inbox.receive({ messageId: 'silent-before', commandType: 'test.scripted', payload: {} });
      await waitFor(async () => (await status('silent-before')) === InboxStatus.Completed, 'a first command run, so that the pool holds connections');
      // Every connection open now goes silent, as after a NAT forgot them: no answer, no error.
      // New connections work.
      proxy.set('blackhole');
      proxy.set('forward');
      // Stored behind the worker's back: its polls find it, on whichever connection the pool lends.
      await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ('silent-after', 'test.scripted', '{}')`);
      await waitFor(async () => (await status('silent-after')) === InboxStatus.Completed, 'the command to run on a connection that answers', 20_000);
    } finally {
      await app.close();
    }
  });

  it('resumes after an outage though the wall clock was set back meanwhile', async () => {
    const status = async (messageId: string) => (await sql<{ status: string }>(db.url, 'SELECT status FROM inbox_entries WHERE message_id = $1', [messageId]))[0]?.status;
    const app = await createTestApp({ url: proxiedUrl, handlers: [ScriptedHandler], inbox: { pollIntervalMs: 20, notify: false } });
    const wallClock = Date.now.bind(Date);
    try {
      proxy.set('refuse');
      await waitFor(() => app.processor.state.failedPasses > 0, 'a pass to fail on the outage');
      // The machine's clock is set back an hour (a correction, a restored snapshot) during the outage.
      jest.spyOn(Date, 'now').mockImplementation(() => wallClock() - 3_600_000);
      proxy.set('forward');
      await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ('clock-set-back', 'test.scripted', '{}')`);
      await waitFor(async () => (await status('clock-set-back')) === InboxStatus.Completed, 'the polls to run the command after the outage');
    } finally {
      jest.restoreAllMocks();
      await app.close();
    }
  });

  it('keeps the processor alive through an outage, logging once per outage, and resumes without a restart', async () => {
    const logger = new RecordingLogger();
    const app = await createTestApp({ url: proxiedUrl, handlers: [ScriptedHandler], inbox: { pollIntervalMs: 20 } });
    app.module.useLogger(logger);
    try {
      proxy.set('refuse');
      // Several failed passes (backoff 20, 40, 80 ms ...): still one error line.
      await waitFor(() => logger.count(/cannot reach the database/) === 1, 'the outage to be noticed');
      await waitFor(async () => {
        await app.processor.runOnce();
        return app.processor.state.failedPasses >= 3;
      }, 'a few failed passes');
      expect(logger.count(/cannot reach the database/)).toBe(1);

      // Stored behind the proxy's back while the app cannot see the server.
      await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ('after-outage', 'test.scripted', '{}')`);
      proxy.set('forward');
      await waitFor(
        async () => (await sql<{ status: string }>(db.url, `SELECT status FROM inbox_entries WHERE message_id = 'after-outage'`))[0].status === InboxStatus.Completed,
        'the entry to be processed after the outage',
      );
      await waitFor(() => logger.count(/reaches the database again/) === 1, 'the recovery to be logged');
      expect(app.processor.state).toEqual({ running: true, databaseReachable: true, failedPasses: 0 });
      expect(logger.count(/cannot reach the database/)).toBe(1);
    } finally {
      await app.close();
    }
  });

  it('fails an overrunning handler: its writes roll back, late writes fail, and the retry completes', async () => {
    const clock = new ManualClock();
    const app = await createTestApp({ url: db.url, handlers: [SlowHandler], inbox: { clock } });
    try {
      const handler = app.get(SlowHandler);
      const { entry } = await app.inbox.receive({ messageId: 'slow-timeout', commandType: 'test.slow', payload: {} });
      await waitFor(async () => (await app.inbox.get(entry.id))?.status === InboxStatus.Failed, 'the first attempt to time out');
      const failed = (await app.inbox.get(entry.id))!;
      expect(failed.error).toMatch(/timed out after 200 ms/);
      handler.gate.open();
      await waitFor(() => handler.lateWriteError, 'the late write to fail');

      clock.advance(2_000); // past the first backoff
      await app.processor.runOnce();
      expect((await app.inbox.get(entry.id))?.status).toBe(InboxStatus.Completed);
      expect(handler.attempts).toEqual([1, 2]);
      expect(await sql(db.url, `SELECT attempt, note FROM effects WHERE message_id = 'slow-timeout'`)).toEqual([
        { attempt: 2, note: 'before the gate' },
      ]);
    } finally {
      await app.close();
    }
  });

  it("ends the server's work of a handler that overran its time in a statement: its locks go, its failure is recorded", async () => {
    const app = await createTestApp({ url: db.url, handlers: [StuckStatementHandler], inbox: { notify: false } });
    try {
      const { entry } = await app.inbox.receive({ messageId: 'stuck-statement', commandType: 'test.stuck', payload: {} });
      const pass = app.processor.runOnce();
      // Recorded once the server let go of the batch's lock on the entry: seconds, not the 30 s of the statement.
      await waitFor(async () => (await app.inbox.get(entry.id))?.status === InboxStatus.Failed, 'the timed-out attempt to be recorded', 5_000);
      expect((await app.inbox.get(entry.id))!.error).toMatch(/timed out after 300 ms/);
      expect(await sql(db.url, `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(30)%'`)).toEqual([]);
      await pass;
    } finally {
      await app.close();
    }
  });

  it('shuts down within shutdownTimeoutMs while the database is down', async () => {
    const app = await createTestApp({ url: proxiedUrl, handlers: [ScriptedHandler], inbox: { pollIntervalMs: 20, shutdownTimeoutMs: 500 } });
    proxy.set('blackhole');
    // A pass is now stuck on a connection that never answers.
    const stuck = app.processor.runOnce();
    const started = Date.now();
    await app.close();
    expect(Date.now() - started).toBeLessThan(3_000);
    await stuck; // the cut connection ended the pass too
  });
});
