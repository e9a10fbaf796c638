/** Why an entry is in DeadLetter. */
export enum DeadLetterReason {
  /** Every allowed attempt failed with a transient error. */
  RetriesExhausted = 'retries_exhausted',
  /** The handler threw a PermanentError. */
  PermanentError = 'permanent_error',
  /** The payload failed the handler's class-validator rules. */
  InvalidPayload = 'invalid_payload',
  /** A worker claimed it but has no handler for its command type. */
  NoHandler = 'no_handler',
  /** The last allowed attempt ended with the worker gone (crash, kill, freeze): a poison message. */
  LeaseExpired = 'lease_expired',
  /** An operator dead-lettered it by hand. */
  Manual = 'manual',
}

export const DEAD_LETTER_REASONS: readonly DeadLetterReason[] = Object.values(DeadLetterReason);

/** How one attempt ended. */
export enum AttemptOutcome {
  Completed = 'completed',
  Failed = 'failed',
  DeadLettered = 'dead_lettered',
  LeaseExpired = 'lease_expired',
  TimedOut = 'timed_out',
}

/** What a history record is about: an attempt, or an operator's action. */
export enum HistoryEvent {
  Attempt = 'attempt',
  Replayed = 'replayed',
  Discarded = 'discarded',
  DeadLettered = 'dead_lettered',
}

/**
 * One record of an entry's history: a row of the append-only history table, or, for the attempt
 * that completed the entry, read from the entry itself (Completed is final).
 */
export interface InboxHistoryRecord {
  /** The history row's id; `<entry id>:completed` for the completing attempt. */
  id: string;
  entryId: string;
  event: HistoryEvent;
  /** Attempt number (attempts only). */
  attempt: number | null;
  outcome: AttemptOutcome | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  durationMs: number | null;
  errorClass: string | null;
  errorMessage: string | null;
  errorStack: string | null;
  workerId: string | null;
  /** Who asked (operator actions). */
  actor: string | null;
  /** Why (operator actions). */
  reason: string | null;
  /** The payload before a corrected-payload replay. */
  previousPayload: Record<string, unknown> | null;
  recordedAt: Date;
}
