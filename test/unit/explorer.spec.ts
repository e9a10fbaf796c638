import { Injectable, Scope } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { Test } from '@nestjs/testing';
import { InboxConfigurationError, InboxHandler, OnInboxCompleted, OnInboxDeadLetter, type InboxCommandHandler, type InboxEvent } from 'nestjs-inbox';
import { InboxExplorer } from '../../lib/discovery/inbox.explorer';
import { InboxListeners } from '../../lib/discovery/inbox-listeners';
import { INBOX_RESOLVED_OPTIONS } from '../../lib/inbox.constants';
import { resolveInboxOptions } from '../../lib/inbox-options';
import type { InboxModuleOptions } from '../../lib/interfaces/inbox-options.interface';

@Injectable()
@InboxHandler('orders.ship', { maxAttempts: 7, backoff: { initialDelayMs: 5 }, timeoutMs: 1000 })
class ShipHandler implements InboxCommandHandler {
  async execute(): Promise<void> {}
}

@Injectable()
@InboxHandler('orders.cancel')
class CancelHandler implements InboxCommandHandler {
  async execute(): Promise<void> {}
}

@Injectable()
@InboxHandler('orders.ship')
class SecondShipHandler implements InboxCommandHandler {
  async execute(): Promise<void> {}
}

@Injectable({ scope: Scope.REQUEST })
@InboxHandler('orders.audit')
class RequestScopedHandler implements InboxCommandHandler {
  async execute(): Promise<void> {}
}

@Injectable()
@InboxHandler('orders.forget')
class NoExecuteHandler {}

@Injectable()
class Alerts {
  readonly heard: string[] = [];

  @OnInboxDeadLetter()
  onDeadLetter(event: InboxEvent): void {
    this.heard.push(`dead:${event.entry.id}`);
  }

  @OnInboxCompleted()
  onCompleted(event: InboxEvent): void {
    this.heard.push(`completed:${event.entry.id}`);
  }

  notAListener(): void {}
}

/** Just the explorer, its listeners and the fixtures: no database, no processor. */
async function explore(providers: unknown[], options: InboxModuleOptions = {}) {
  const module = await Test.createTestingModule({
    imports: [DiscoveryModule],
    providers: [InboxExplorer, InboxListeners, { provide: INBOX_RESOLVED_OPTIONS, useValue: resolveInboxOptions(options) }, ...(providers as never[])],
  }).compile();
  await module.init();
  return module;
}

describe('InboxExplorer', () => {
  it('registers every @InboxHandler provider under its command type, its options merged over the module\'s', async () => {
    const module = await explore([ShipHandler, CancelHandler], { maxAttempts: 3, backoff: { multiplier: 3 } });
    const explorer = module.get(InboxExplorer);
    expect(explorer.commandTypes().sort()).toEqual(['orders.cancel', 'orders.ship']);
    expect(explorer.get('orders.ship')).toMatchObject({
      className: 'ShipHandler',
      maxAttempts: 7,
      timeoutMs: 1000,
      backoff: { initialDelayMs: 5, multiplier: 3, maxDelayMs: 300_000, jitter: 0.2 },
      payloadValidation: { whitelist: true, forbidNonWhitelisted: false },
    });
    expect(explorer.get('orders.ship')!.instance).toBe(module.get(ShipHandler));
    expect(explorer.get('orders.cancel')).toMatchObject({ maxAttempts: 3 });
    expect(explorer.get('orders.unknown')).toBeUndefined();
    await module.close();
  });

  it.each([
    ['two handlers of one type, naming both classes', [ShipHandler, SecondShipHandler], /ShipHandler and SecondShipHandler both handle "orders\.ship"/],
    ['a request-scoped handler', [RequestScopedHandler], /RequestScopedHandler handles "orders\.audit" but is request- or transient-scoped/],
    ['a handler without execute', [NoExecuteHandler], /NoExecuteHandler is decorated with @InboxHandler\("orders\.forget"\) but has no execute/],
  ])('fails the boot on %s', async (_name, providers, message) => {
    const booting = explore(providers);
    await expect(booting).rejects.toBeInstanceOf(InboxConfigurationError);
    await expect(explore(providers)).rejects.toThrow(message);
  });

  it('fails the boot on a handler timeout that is not below the lease', async () => {
    await expect(explore([ShipHandler], { leaseMs: 1000 })).rejects.toThrow(/timeoutMs.*must be smaller than leaseMs \(1000\)/);
  });

  it('finds @OnInbox… listeners on any provider and hands them the events', async () => {
    const module = await explore([Alerts]);
    const listeners = module.get(InboxListeners);
    expect(listeners.has('dead_letter')).toBe(true);
    expect(listeners.has('completed')).toBe(true);
    expect(listeners.has('failed')).toBe(false);
    listeners.emit({ type: 'dead_letter', entry: { id: 'e-1' } as never, reason: null, error: 'x' });
    listeners.emit({ type: 'completed', entry: { id: 'e-2' } as never, reason: null, error: null });
    await listeners.settle();
    expect(module.get(Alerts).heard).toEqual(['dead:e-1', 'completed:e-2']);
    await module.close();
  });
});
