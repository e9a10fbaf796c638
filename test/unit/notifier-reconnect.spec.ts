import { EventEmitter } from 'node:events';
import { resolveInboxOptions } from '../../lib/inbox-options';
import { InboxNotifier } from '../../lib/wake/notifier';

/** A LISTEN client whose connect takes `connectMs` (a remote server, TLS). */
let connectMs = 300;
class SlowClient extends EventEmitter {
  static made: SlowClient[] = [];
  connection = { stream: { destroy: () => undefined } };
  constructor() {
    super();
    SlowClient.made.push(this);
  }
  connect(): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, connectMs));
  }
  query(): Promise<unknown> {
    return Promise.resolve();
  }
  end(): Promise<void> {
    return Promise.resolve();
  }
}

describe('InboxNotifier reconnect phase', () => {
  beforeEach(() => {
    SlowClient.made = [];
    connectMs = 300;
  });

  it('does not drop a reconnect that had less than the check interval to finish', async () => {
    jest.useFakeTimers({ now: 1_000_000 });
    jest.spyOn(Math, 'random').mockReturnValue(0.5); // no jitter
    const dataSource = { driver: { master: { options: {} }, postgres: { Client: SlowClient } } };
    // leaseMs 2000: checks every 1000 ms.
    const notifier = new InboxNotifier(dataSource as never, resolveInboxOptions({ leaseMs: 2_000 }));
    void notifier.listen(() => undefined);
    await jest.advanceTimersByTimeAsync(connectMs + 10);
    expect(notifier.isListening).toBe(true);
    // The server ends the connection (a restart) 100 ms before a check is due, at t=1850: the
    // reconnect (first backoff 100 ms) starts at t=1950, 50 ms before the check at t=2000.
    await jest.advanceTimersByTimeAsync(1_850 - (connectMs + 10));
    SlowClient.made[0].emit('end');
    await jest.advanceTimersByTimeAsync(100 + connectMs + 50);
    // Connected 300 ms after it started, well within the 1000 ms the checks allow: not dropped.
    expect(SlowClient.made).toHaveLength(2);
    expect(notifier.isListening).toBe(true);
    await notifier.close();
    jest.useRealTimers();
    jest.restoreAllMocks();
  });

  it('gives a connect slower than the check interval the time a receive has', async () => {
    jest.useFakeTimers({ now: 1_000_000 });
    connectMs = 1_500;
    const dataSource = { driver: { master: { options: {} }, postgres: { Client: SlowClient } } };
    // Checks every 1000 ms; a receive waits up to 5000 ms for the database.
    const notifier = new InboxNotifier(dataSource as never, resolveInboxOptions({ leaseMs: 2_000, receiveTimeoutMs: 5_000 }));
    void notifier.listen(() => undefined);
    await jest.advanceTimersByTimeAsync(connectMs + 10);
    expect(notifier.isListening).toBe(true);
    expect(SlowClient.made).toHaveLength(1);
    await notifier.close();
    jest.useRealTimers();
  });
});
