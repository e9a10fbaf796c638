import { DEFAULT_BACKOFF, InboxConfigurationError, InboxHandler } from 'nestjs-inbox';
import { resolveInboxOptions } from '../../lib/inbox-options';

describe('resolveInboxOptions', () => {
  it('applies the documented defaults', () => {
    const options = resolveInboxOptions({});
    expect(options).toMatchObject({
      maxAttempts: 5,
      backoff: { initialDelayMs: 1000, multiplier: 2, maxDelayMs: 300_000, jitter: 0.2 },
      pollIntervalMs: 1000,
      batchSize: 20,
      concurrency: 4,
      leaseMs: 60_000,
      worker: true,
      shutdownTimeoutMs: 10_000,
      tableName: 'inbox_entries',
      acceptUnknownCommandTypes: false,
      maxPayloadBytes: 1_048_576,
      preparedStatements: true,
      notify: true,
      unclaimedWarningMs: 300_000,
      listenerTimeoutMs: 10_000,
      payloadValidation: { whitelist: true, forbidNonWhitelisted: false },
      onDeadLetter: 'block',
    });
    expect(options.workerId).toMatch(/:\d+:[0-9a-f]{6}$/);
    expect(options.clock.now()).toBeInstanceOf(Date);
  });

  it('accepts unknown command types by default only on receive-only instances', () => {
    expect(resolveInboxOptions({ worker: false }).acceptUnknownCommandTypes).toBe(true);
    expect(resolveInboxOptions({ worker: false, acceptUnknownCommandTypes: false }).acceptUnknownCommandTypes).toBe(false);
  });

  it('merges a partial backoff with the defaults', () => {
    expect(resolveInboxOptions({ backoff: { jitter: 0 } }).backoff).toEqual({ ...DEFAULT_BACKOFF, jitter: 0 });
  });

  it('accepts schema-qualified table names', () => {
    expect(resolveInboxOptions({ tableName: 'orders.inbox' }).tableName).toBe('orders.inbox');
  });

  it.each([
    [{ maxAttempts: 0 }, 'maxAttempts'],
    [{ maxAttempts: 2.5 }, 'maxAttempts'],
    [{ backoff: { initialDelayMs: -1 } }, 'backoff.initialDelayMs'],
    [{ backoff: { multiplier: 0.9 } }, 'backoff.multiplier'],
    [{ backoff: { maxDelayMs: 10, initialDelayMs: 100 } }, 'backoff.maxDelayMs'],
    [{ backoff: { jitter: 1.5 } }, 'backoff.jitter'],
    [{ backoff: { factor: 2 } }, 'backoff.factor'],
    [{ backoff: 5 }, 'backoff'],
    [{ pollIntervalMs: 0 }, 'pollIntervalMs'],
    [{ batchSize: 0 }, 'batchSize'],
    [{ concurrency: 0 }, 'concurrency'],
    [{ leaseMs: 10 }, 'leaseMs'],
    // Longer than a Node timer keeps (about 24.8 days): it would fire at once.
    [{ leaseMs: 30 * 86_400_000 }, 'leaseMs'],
    [{ shutdownTimeoutMs: 30 * 86_400_000 }, 'shutdownTimeoutMs'],
    [{ retention: { intervalMs: 30 * 86_400_000 } }, 'retention.intervalMs'],
    [{ listenerTimeoutMs: 30 * 86_400_000 }, 'listenerTimeoutMs'],
    [{ workerId: 'worker\u0000a' }, 'workerId'],
    [{ worker: 1 }, 'worker'],
    [{ shutdownTimeoutMs: -5 }, 'shutdownTimeoutMs'],
    [{ tableName: 'Inbox' }, 'tableName'],
    [{ tableName: 'inbox"; DROP TABLE users; --' }, 'tableName'],
    [{ tableName: '' }, 'tableName'],
    [{ acceptUnknownCommandTypes: 'yes' }, 'acceptUnknownCommandTypes'],
    [{ maxPayloadBytes: 0 }, 'maxPayloadBytes'],
    [{ workerId: '' }, 'workerId'],
    [{ preparedStatements: 'off' }, 'preparedStatements'],
    [{ clock: Date }, 'clock'],
    [{ unclaimedWarningMs: -1 }, 'unclaimedWarningMs'],
    [{ listenerTimeoutMs: 0 }, 'listenerTimeoutMs'],
    [{ payloadValidation: true }, 'payloadValidation'],
    [{ payloadValidation: { whitelist: 'yes' } }, 'payloadValidation.whitelist'],
    [{ payloadValidation: { strict: true } }, 'payloadValidation.strict'],
    [{ tableName: `a.${'b'.repeat(56)}` }, 'tableName'],
    [{ retries: 3 }, 'retries'],
    [{ onDeadLetter: 'park' }, 'onDeadLetter'],
  ])('rejects %j naming "%s"', (options, name) => {
    expect(() => resolveInboxOptions(options as never)).toThrow(InboxConfigurationError);
    expect(() => resolveInboxOptions(options as never)).toThrow(`"${name}"`);
  });

  it.each([
    [{ orderingKey: 'accountId' }, /orderingKey must be a function/],
    [{ onDeadLetter: 'park' }, /onDeadLetter/],
    [{ keyBy: () => 'k' }, /unknown option "keyBy"/],
  ])('rejects the handler option %j', (options, message) => {
    expect(() => InboxHandler('orders.ship', options as never)).toThrow(InboxConfigurationError);
    expect(() => InboxHandler('orders.ship', options as never)).toThrow(message);
  });

  it('rejects a non-object', () => {
    expect(() => resolveInboxOptions('fast' as never)).toThrow(InboxConfigurationError);
  });
});
