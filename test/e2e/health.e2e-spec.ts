import { Controller, Get, Injectable, Module } from '@nestjs/common';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import { InboxArgumentError, InboxHandler, PermanentError, type InboxCommandHandler } from 'nestjs-inbox';
import { InboxHealthIndicator } from 'nestjs-inbox/terminus';
import { createTestApp, ManualClock, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, type TestDatabase } from '../support/test-database';
import { proxyFor, type TcpProxy } from '../support/tcp-proxy';

@Injectable()
@InboxHandler('health.refused')
class RefusingHandler implements InboxCommandHandler<object> {
  async execute(): Promise<void> {
    throw new PermanentError('refused');
  }
}

/** A health controller as an application writes one with Terminus. */
@Controller('health')
class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly inbox: InboxHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  check() {
    return this.health.check([() => this.inbox.isHealthy('inbox', { maxOldestDueAgeMs: 60_000, maxSnapshotAgeMs: 0, timeoutMs: 1_000 })]);
  }
}

@Module({ imports: [TerminusModule], controllers: [HealthController], providers: [InboxHealthIndicator] })
class HealthModule {}

describe('health: the inbox as a Terminus health indicator', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let app: TestApp;
  let indicator: InboxHealthIndicator;
  const clock = new ManualClock();
  let seq = 0;

  beforeAll(async () => {
    db = await createTestDatabase('health');
    proxy = proxyFor(db.url);
    const proxiedUrl = await proxy.start(db.url);
    app = await createTestApp({ url: proxiedUrl, handlers: [RefusingHandler], imports: [HealthModule], inbox: { clock } });
    indicator = app.get(InboxHealthIndicator);
    await waitFor(async () => (await indicator.isHealthy('inbox')).inbox.listening === true, 'the LISTEN connection');
  });

  afterAll(async () => {
    proxy.set('forward');
    await app?.close();
    await proxy?.close();
    await db?.drop();
  });

  afterEach(() => proxy.set('forward'));

  it('is up with its figures while the worker runs and the database answers', async () => {
    const result = await indicator.isHealthy('inbox', { maxSnapshotAgeMs: 0 });
    expect(result.inbox).toMatchObject({ status: 'up', processorRunning: true, listening: true, databaseReachable: true, expiredLeases: 0 });
    expect(result.inbox).not.toHaveProperty('reason');
  });

  it('goes down with a reason when the database goes away, and comes back up', async () => {
    proxy.set('refuse');
    const down = await indicator.isHealthy('inbox', { maxSnapshotAgeMs: 0, timeoutMs: 1_000 });
    expect(down.inbox.status).toBe('down');
    expect(down.inbox.databaseReachable).toBe(false);
    expect(String(down.inbox.reason)).toContain('the database does not answer');
    // Through Terminus as an application calls it: the check fails with the same reason.
    await expect(app.get(HealthController).check()).rejects.toMatchObject({ response: { status: 'error', error: { inbox: { status: 'down' } } } });
    proxy.set('forward');
    const up = await waitFor(async () => {
      const result = await indicator.isHealthy('inbox', { maxSnapshotAgeMs: 0 });
      return result.inbox.status === 'up' && result.inbox.listening === true ? result : null;
    }, 'the inbox to be healthy again');
    expect(up.inbox.databaseReachable).toBe(true);
  });

  it('comes back up soon after a database that went silent answers again', async () => {
    proxy.set('blackhole');
    const down = await indicator.isHealthy('inbox', { maxSnapshotAgeMs: 0, timeoutMs: 500 });
    expect(down.inbox).toMatchObject({ status: 'down', databaseReachable: false });
    proxy.set('forward');
    // The reads left on the silent connections give them up (receiveTimeoutMs, 5 s here) instead
    // of holding every later check until the operating system drops the sockets.
    await waitFor(async () => (await indicator.isHealthy('inbox', { maxSnapshotAgeMs: 0, timeoutMs: 500 })).inbox.status === 'up', 'the inbox to be healthy again', 12_000);
  });

  it('is down while the oldest due entry waits longer than its threshold', async () => {
    const receiver = await createTestApp({ url: db.url, handlers: [RefusingHandler], inbox: { worker: false, notify: false, clock } });
    try {
      // Stored an hour ago by the database's (test) clock, and not yet claimed.
      clock.advance(-3_600_000);
      await receiver.inbox.receive({ messageId: `late-${++seq}`, commandType: 'health.refused', payload: {} });
      clock.advance(3_600_000);
      const late = await indicator.isHealthy('inbox', { maxOldestDueAgeMs: 60_000, maxSnapshotAgeMs: 0 });
      expect(late.inbox.status).toBe('down');
      expect(String(late.inbox.reason)).toMatch(/oldest due entry has waited 36000\d\d ms \(threshold 60000 ms\)/);
      const lenient = await indicator.isHealthy('inbox', { maxOldestDueAgeMs: 7_200_000, maxSnapshotAgeMs: 0 });
      expect(lenient.inbox.status).toBe('up');
    } finally {
      await receiver.close();
      await app.processor.runOnce();
    }
  });

  it('is degraded when more entries were dead-lettered since the last check than allowed', async () => {
    await indicator.isHealthy('inbox', { maxSnapshotAgeMs: 0 }); // the previous check
    clock.advance(1); // the test clock stands still; the database's moves on
    await app.inbox.receive({ messageId: `refused-${++seq}`, commandType: 'health.refused', payload: {} });
    await app.inbox.receive({ messageId: `refused-${++seq}`, commandType: 'health.refused', payload: {} });
    await waitFor(async () => (await app.inbox.countByStatus()).dead_letter >= 2 + deadBefore, 'two new dead letters');
    const result = await indicator.isHealthy('inbox', { maxNewDeadLetters: 1, maxSnapshotAgeMs: 0 });
    expect(result.inbox).toMatchObject({ status: 'degraded', newDeadLetters: 2 });
    expect(String(result.inbox.reason)).toContain('2 entr(ies) dead-lettered since the previous check (threshold 1)');
    const next = await indicator.isHealthy('inbox', { maxNewDeadLetters: 1, maxSnapshotAgeMs: 0 });
    expect(next.inbox).toMatchObject({ status: 'up', newDeadLetters: 0 });
  });

  it('refuses a threshold it does not know, or a negative one', async () => {
    await expect(indicator.isHealthy('inbox', { maxOldestDueAge: 5 } as never)).rejects.toThrow(InboxArgumentError);
    await expect(indicator.isHealthy('inbox', { maxExpiredLeases: -1 })).rejects.toThrow('thresholds.maxExpiredLeases');
    // Longer than a timer keeps, longer than a day of figures: refused, not misread.
    await expect(indicator.isHealthy('inbox', { timeoutMs: 3e9 })).rejects.toThrow('thresholds.timeoutMs');
    await expect(indicator.isHealthy('inbox', { maxSnapshotAgeMs: 1e16 })).rejects.toThrow('thresholds.maxSnapshotAgeMs');
  });

  let deadBefore = 0;
  beforeEach(async () => {
    deadBefore = (await app.inbox.countByStatus()).dead_letter;
  });
});
