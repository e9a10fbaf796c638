import type { AttemptOutcome, HistoryEvent } from '../state/inbox-state-machine';

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
