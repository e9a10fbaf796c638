import { INBOX_LISTENER_METADATA } from '../inbox.constants';
import type { InboxEventType } from '../interfaces/inbox-event.interface';

function listenerFor(type: InboxEventType): MethodDecorator {
  return (_target, _key, descriptor) => {
    Reflect.defineMetadata(INBOX_LISTENER_METADATA, type, descriptor.value as object);
    return descriptor;
  };
}

/**
 * Calls the method with an `InboxEvent` after an entry was dead-lettered (by a worker or by hand),
 * once the new state is committed. Errors it throws are logged and change nothing.
 */
export const OnInboxDeadLetter = (): MethodDecorator => listenerFor('dead_letter');

/** Calls the method after an attempt failed and the entry was scheduled for a retry. */
export const OnInboxFailed = (): MethodDecorator => listenerFor('failed');

/** Calls the method after an entry was completed. */
export const OnInboxCompleted = (): MethodDecorator => listenerFor('completed');
