import { Injectable, Logger } from '@nestjs/common';
import type { InboxEvent, InboxEventType } from './interfaces/inbox-event.interface';

type Listener = { name: string; call: (event: InboxEvent) => unknown };

/**
 * Delivers outcome events to the `@OnInbox…` methods found at boot. Listeners run one after the
 * other after the state is committed; a listener's error is logged and never touches the entry.
 */
@Injectable()
export class InboxEvents {
  private readonly logger = new Logger(InboxEvents.name);
  private readonly listeners = new Map<InboxEventType, Listener[]>();

  register(type: InboxEventType, listener: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  /** Lets callers skip building an event nobody listens to (the success path is hot). */
  has(type: InboxEventType): boolean {
    return (this.listeners.get(type)?.length ?? 0) > 0;
  }

  async emit(event: InboxEvent): Promise<void> {
    for (const listener of this.listeners.get(event.type) ?? []) {
      try {
        await listener.call(event);
      } catch (error) {
        this.logger.error(
          `Listener ${listener.name} failed on ${event.type} of inbox entry ${event.entry.id}: ${(error as Error)?.message ?? String(error)}`,
          (error as Error)?.stack,
        );
      }
    }
  }
}
