import type { InboxEntry } from '../store/inbox-entry.entity';
import type { DeadLetterReason } from '../state/inbox-state-machine';

export type InboxEventType = 'completed' | 'failed' | 'dead_letter';

/** What an `@OnInbox…` listener receives; `entry` is the state just committed. */
export interface InboxEvent {
  type: InboxEventType;
  entry: InboxEntry;
  /** Set for dead letters. */
  reason: DeadLetterReason | null;
  /** The failure's message (failed and dead-lettered entries). */
  error: string | null;
}
