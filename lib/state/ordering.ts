import { InboxStatus } from './inbox-state-machine';

/**
 * Ordering keys: entries that share a key (an aggregate's id, say) run one at a time, in the order
 * they were received, across every worker. Entries without a key are not affected.
 *
 * Each key has at most one **holder**: the entry whose turn it is. It is Pending, Processing or
 * Failed (waiting for its retry), or a dead letter that blocks the key. Every later entry of the key
 * is **waiting** (`waiting = true`) and is not claimed. When the holder is done — completed, skipped
 * as a dead letter, discarded — the key's earliest waiting entry becomes its holder (see
 * `InboxStatements.settleKeys`), in the same transaction.
 *
 *   receive ─► holder (the key was free) ─► … ─► completed ─┐
 *   receive ─► waiting ─────────────────────────────────────┴─► holder ─► … (the next in order)
 *
 *   holder dead-lettered ─┬─ policy `block`: it keeps holding the key; nothing later runs until an
 *                         │   operator replays it (it runs again, still first) or discards it
 *                         └─ policy `skip`: it is done; the key moves on
 *
 * A replayed or released entry keeps its place: a holder stays the holder; an entry replayed after
 * its key moved on waits for its turn by its sequence number.
 */

/** What a dead-lettered holder does to the later entries of its key. */
export type DeadLetterPolicy = 'block' | 'skip';

export const DEAD_LETTER_POLICIES: readonly DeadLetterPolicy[] = ['block', 'skip'];

/** The statuses of a holder that is not a dead letter (a blocking dead letter holds its key too). */
export const HOLDING_STATUSES = [InboxStatus.Pending, InboxStatus.Failed, InboxStatus.Processing] as const;

/** Whether a dead letter keeps holding its key, under the policy of its handler. */
export function blocksKeyWhenDeadLettered(policy: DeadLetterPolicy): boolean {
  return policy === 'block';
}
