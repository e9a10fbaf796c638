import { resolveInboxOptions } from '../../lib/inbox-options';
import { InboxNotifier } from '../../lib/wake/notifier';

// The notifier's timing rules, on fake timers: which receive carries the notification and when a
// separate pg_notify goes out. (That notifications reach a worker elsewhere is tested against the
// database in test/e2e/notify.e2e-spec.ts.)
describe('InboxNotifier coalescing', () => {
  let sent: number;
  let notifier: InboxNotifier;

  beforeEach(() => {
    jest.useFakeTimers({ now: 1_000_000 });
    sent = 0;
    const pool = { query: async () => void sent++ };
    const dataSource = { driver: { master: pool } };
    notifier = new InboxNotifier(dataSource as never, resolveInboxOptions({ worker: false }));
  });

  afterEach(() => {
    notifier.beforeApplicationShutdown();
    jest.useRealTimers();
  });

  it('lets the first receive after a quiet spell carry the notification, and not the next one inside the spacing', () => {
    expect(notifier.takeInline()).toMatchObject({ channel: 'nestjs_inbox_inbox_entries', owes: false });
    expect(notifier.takeInline()).toBeUndefined();
    jest.advanceTimersByTime(2);
    expect(notifier.takeInline()).toMatchObject({ channel: 'nestjs_inbox_inbox_entries' });
  });

  it('folds the receives of an interval into one pg_notify when no receive goes out after them', async () => {
    notifier.settle(notifier.takeInline()!, true);
    for (let i = 0; i < 5; i++) notifier.notify();
    expect(sent).toBe(0);
    await jest.advanceTimersByTimeAsync(2);
    expect(sent).toBe(1);
    await jest.advanceTimersByTimeAsync(10);
    expect(sent).toBe(1);
  });

  it('lets a later receive statement carry what is owed instead of a separate pg_notify', async () => {
    notifier.settle(notifier.takeInline()!, true);
    notifier.notify(); // owed, spacing not over yet
    jest.advanceTimersByTime(1);
    expect(notifier.takeInline()).toBeUndefined();
    await jest.advanceTimersByTimeAsync(1); // spacing over: the timer sends it
    expect(sent).toBe(1);
    jest.advanceTimersByTime(2);
    notifier.notify();
    const ticket = notifier.takeInline(); // carries it
    expect(ticket).toMatchObject({ owes: true });
    notifier.settle(ticket!, true);
    await jest.advanceTimersByTimeAsync(10);
    expect(sent).toBe(1);
  });

  it('sends what was owed when the statement that took it is held up', async () => {
    notifier.settle(notifier.takeInline()!, true);
    jest.advanceTimersByTime(2);
    notifier.notify();
    expect(notifier.takeInline()).toBeDefined(); // and never settles in time (a lock on the same key)
    await jest.advanceTimersByTimeAsync(4);
    expect(sent).toBe(1);
  });

  it('hands on what was owed when the statement that took it stored nothing, and sends nothing when nothing was owed', async () => {
    notifier.settle(notifier.takeInline()!, false); // nothing owed: a duplicate
    await jest.advanceTimersByTimeAsync(10);
    expect(sent).toBe(0);
    notifier.notify(); // owed now; taken over by the next statement, which stores nothing
    notifier.settle(notifier.takeInline()!, false);
    await jest.advanceTimersByTimeAsync(10);
    expect(sent).toBe(1);
  });

  it('keeps the tickets of overlapping statements apart: a held-up one that stores nothing still hands on what it owed', async () => {
    notifier.settle(notifier.takeInline()!, true);
    jest.advanceTimersByTime(2);
    notifier.notify();
    const slow = notifier.takeInline()!; // owes, and is held up
    expect(slow.owes).toBe(true);
    // The clock moves on before its guard timer gets to run.
    const later = performance.now() + 2;
    const clock = jest.spyOn(performance, 'now').mockImplementation(() => later);
    const fast = notifier.takeInline()!;
    clock.mockRestore();
    expect(fast.owes).toBe(false);
    notifier.settle(fast, true); // must not disarm the slow statement's guard
    notifier.settle(slow, false); // a duplicate after all: what it owed goes out
    await jest.advanceTimersByTimeAsync(10);
    expect(sent).toBe(1);
  });

  it('sends nothing when notify is off', async () => {
    notifier = new InboxNotifier({} as never, resolveInboxOptions({ worker: false, notify: false }));
    expect(notifier.takeInline()).toBeUndefined();
    notifier.notify();
    await jest.advanceTimersByTimeAsync(10);
    expect(sent).toBe(0);
  });
});
