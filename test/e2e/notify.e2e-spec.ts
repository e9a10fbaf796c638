import { InboxStatus } from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, ScriptedHandler } from '../fixtures/handlers';
import { InboxNotifier } from '../../lib/wake/notifier';
import { CaptureLogger } from '../support/capture-logger';
import { proxyFor, type TcpProxy } from '../support/tcp-proxy';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

describe('cross-instance wake-up', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let api: TestApp;
  let worker: TestApp;

  beforeAll(async () => {
    db = await createTestDatabase('notify');
    await sql(db.url, EFFECTS_TABLE_SQL);
    proxy = proxyFor(db.url);
    const proxied = await proxy.start(db.url);
    // The worker polls once an hour: only a notification can make it run a command quickly.
    worker = await createTestApp({ url: proxied, handlers: [ScriptedHandler], inbox: { pollIntervalMs: 3_600_000 } });
    api = await createTestApp({ url: db.url, inbox: { worker: false } });
  });

  afterAll(async () => {
    await api?.close();
    await worker?.close();
    await proxy?.close();
    await db?.drop();
  });

  const statusOf = async (id: string) => (await api.inbox.get(id))?.status;

  it('a command received by a receive-only instance is run at once by a worker elsewhere', async () => {
    // Let the worker's listener connect (its first pass runs right after LISTEN succeeds).
    await waitFor(() => worker.get(InboxNotifier).isListening, 'the worker to listen');
    const { entry } = await api.inbox.receive({ messageId: 'n-1', commandType: 'test.scripted', payload: {} });
    await waitFor(async () => (await statusOf(entry.id)) === InboxStatus.Completed, 'the worker to run the command', 5_000);
  });

  it('announces every command of a burst: receives inside the spacing are folded into a later notification', async () => {
    const received = await Promise.all(
      Array.from({ length: 30 }, (_, i) => api.inbox.receive({ messageId: `burst-${i}`, commandType: 'test.scripted', payload: {} })),
    );
    // Duplicates carry no notification of their own; the burst must still be announced.
    await Promise.all(received.map(({ entry }) => api.inbox.receive({ messageId: entry.messageId, commandType: 'test.scripted', payload: {} })));
    const last = await api.inbox.receive({ messageId: 'burst-last', commandType: 'test.scripted', payload: {} });
    await waitFor(
      async () => (await Promise.all([...received, last].map(({ entry }) => statusOf(entry.id)))).every((status) => status === InboxStatus.Completed),
      'the worker to run the whole burst',
      5_000,
    );
  });

  it('keeps listening after the connection to the database was cut', async () => {
    proxy.set('refuse');
    const { entry: during } = await api.inbox.receive({ messageId: 'n-2', commandType: 'test.scripted', payload: {} });
    proxy.set('forward');
    // On reconnecting, the listener wakes the worker, which finds the command received meanwhile.
    await waitFor(async () => (await statusOf(during.id)) === InboxStatus.Completed, 'the command received during the cut', 15_000);
    const { entry: after } = await api.inbox.receive({ messageId: 'n-3', commandType: 'test.scripted', payload: {} });
    await waitFor(async () => (await statusOf(after.id)) === InboxStatus.Completed, 'the command received after the cut', 5_000);
  });

  it('notices a LISTEN connection that went silent, and listens again on a new one', async () => {
    const logger = new CaptureLogger();
    const own = proxyFor(db.url);
    // Checks its LISTEN connection every half lease; polls once an hour.
    const deaf = await createTestApp({ url: await own.start(db.url), handlers: [ScriptedHandler], logger, inbox: { pollIntervalMs: 3_600_000, leaseMs: 1_000 } });
    try {
      await waitFor(() => deaf.get(InboxNotifier).isListening, 'the worker to listen');
      // Every connection open now goes silent, as after a NAT forgot them: no answer, no error.
      // New connections work.
      own.set('blackhole');
      own.set('forward');
      await waitFor(() => logger.find('log', /notification listener reconnected/).length > 0, 'the listener to reconnect', 10_000);
      expect(logger.find('warn', /notification listener lost its connection.*no answer/)).toHaveLength(1);
      // Heard: the command runs without a poll (its pool's silent connections are ended within a lease).
      const { entry } = await api.inbox.receive({ messageId: 'n-silent', commandType: 'test.scripted', payload: {} });
      await waitFor(async () => (await statusOf(entry.id)) === InboxStatus.Completed, 'the command received after the listener came back', 15_000);
    } finally {
      await deaf.close();
      await own.close();
    }
  });

  it('announces commands though the wall clock was set back since the last announcement', async () => {
    const wallClock = Date.now.bind(Date);
    await waitFor(() => worker.get(InboxNotifier).isListening, 'the worker to listen');
    const { entry: before } = await api.inbox.receive({ messageId: 'n-clock-before', commandType: 'test.scripted', payload: {} });
    await waitFor(async () => (await statusOf(before.id)) === InboxStatus.Completed, 'the command received before the clock moved', 5_000);
    // The machine's clock is set back an hour (a correction, a restored snapshot).
    jest.spyOn(Date, 'now').mockImplementation(() => wallClock() - 3_600_000);
    try {
      const { entry: after } = await api.inbox.receive({ messageId: 'n-clock-after', commandType: 'test.scripted', payload: {} });
      await waitFor(async () => (await statusOf(after.id)) === InboxStatus.Completed, 'the command received after the clock moved', 5_000);
    } finally {
      jest.restoreAllMocks();
    }
  });
});
