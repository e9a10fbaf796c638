import { Inject, Injectable, Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import { describeError, errorStackOf } from '../errors/describe-error';
import { INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { InboxEvent, InboxEventType } from '../interfaces/inbox-event.interface';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';

type Listener = { name: string; call: (event: InboxEvent) => unknown };

/**
 * Delivers outcome events to the `@OnInbox…` methods found at boot, after the state is committed.
 * Delivery happens off the worker's critical path: `emit` returns at once, the listeners of one
 * event run one after the other, each abandoned (with an error line) if it has not settled within
 * `listenerTimeoutMs`. A listener's error is logged and never touches the entry.
 */
@Injectable()
export class InboxListeners implements BeforeApplicationShutdown {
  private readonly logger = new Logger(InboxListeners.name);
  private readonly listeners = new Map<InboxEventType, Listener[]>();
  private readonly deliveries = new Set<Promise<void>>();

  constructor(@Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions) {}

  register(type: InboxEventType, listener: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  /** Lets callers skip building an event nobody listens to (the success path is hot). */
  has(type: InboxEventType): boolean {
    return (this.listeners.get(type)?.length ?? 0) > 0;
  }

  /** Hands the event to its listeners in the background; never throws, never waits. */
  emit(event: InboxEvent): void {
    const listeners = this.listeners.get(event.type);
    if (!listeners?.length) return;
    const delivery: Promise<void> = this.deliver(event, listeners).finally(() => this.deliveries.delete(delivery));
    this.deliveries.add(delivery);
  }

  /** Resolves once every delivery under way has ended (each is bounded by the listener timeout). */
  async settle(): Promise<void> {
    while (this.deliveries.size > 0) await Promise.allSettled([...this.deliveries]);
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.settle();
  }

  private async deliver(event: InboxEvent, listeners: Listener[]): Promise<void> {
    for (const listener of listeners) await this.call(listener, event);
  }

  private call(listener: Listener, event: InboxEvent): Promise<void> {
    const timeoutMs = this.options.listenerTimeoutMs;
    const about = `${event.type} of inbox entry ${event.entry.id}`;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.logger.error(`Listener ${listener.name} did not settle within ${timeoutMs} ms on ${about}; abandoned.`);
        resolve();
      }, timeoutMs);
      Promise.resolve()
        .then(() => listener.call(event))
        .then(
          () => {
            clearTimeout(timer);
            resolve();
          },
          (error: unknown) => {
            clearTimeout(timer);
            this.logger.error(`Listener ${listener.name} failed on ${about}: ${describeError(error)}`, errorStackOf(error));
            resolve();
          },
        );
    });
  }
}
