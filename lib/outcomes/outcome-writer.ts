import { performance } from 'node:perf_hooks';
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { DataSource, QueryRunner } from 'typeorm';
import { InboxExplorer } from '../discovery/inbox.explorer';
import { InboxListeners } from '../discovery/inbox-listeners';
import { HandlerTimeoutError, LeaseExpiredError, PayloadValidationError, PermanentError } from '../errors/inbox.error';
import { INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { backoffDelayMs } from '../state/backoff';
import { decideFailure, DeadLetterReason, FailureKind, historyOutcome, InboxStatus, type FailureDecision } from '../state/inbox-state-machine';
import { runQuery } from '../store/connection';
import { clockTime } from '../store/database-clock';
import { toEntry, type InboxRow } from '../store/schema';
import { InboxStatements } from '../store/statements';

/** Stored error messages and stack traces are cut to this many characters. */
const MAX_ERROR_LENGTH = 4000;
const MAX_STACK_LENGTH = 4000;

/** A handler that returned; when it started and finished (`performance.now()`, monotonic). */
export interface CompletedAttempt {
  row: InboxRow;
  startedAt: number;
  finishedAt: number;
}

/** An attempt that failed; times are null for a lease expiry (from its stamped start until now). */
export interface FailedAttempt {
  row: InboxRow;
  error: unknown;
  startedAt: number | null;
  finishedAt: number | null;
}

/** Who asks for an operator action, and why. */
export interface Audit {
  actor: string | null;
  reason: string | null;
}

/**
 * Writes every outcome of an entry — completion, failed attempts (from a handler or an expired
 * lease), claims handed back, and the operators' replay, discard and dead-letter — with its
 * history record, in one statement each, and tells the listeners from the rows those statements
 * returned. A failed attempt's fate is the state machine's decision (`decideFailure`).
 */
@Injectable()
export class OutcomeWriter {
  private readonly logger = new Logger('InboxProcessor');

  constructor(
    private readonly sql: InboxStatements,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly explorer: InboxExplorer,
    private readonly listeners: InboxListeners,
  ) {}

  /**
   * Completes a batch's entries inside its transaction (with the handlers' writes). Returns the
   * rows written when someone listens, for `completed` once the transaction has committed.
   */
  async complete(queryRunner: QueryRunner, attempts: CompletedAttempt[]): Promise<InboxRow[]> {
    const statement = this.listeners.has('completed') ? this.sql.completeReturning : this.sql.complete;
    const now = performance.now();
    const { rows, affected } = await runQuery(queryRunner, statement, [
      attempts.map((attempt) => attempt.row.id),
      attempts[0].row.lock_token,
      attempts.map((attempt) => now - attempt.startedAt),
      attempts.map((attempt) => now - attempt.finishedAt),
      this.options.workerId,
      clockTime(this.options.clock),
    ]);
    // A claim taken over meanwhile: the whole batch rolls back rather than complete what is not ours.
    if (affected !== attempts.length) throw new LeaseExpiredError('claim lost while the handlers ran');
    return rows;
  }

  /** The batch that completed these has committed: tell the listeners. */
  completed(rows: InboxRow[]): void {
    for (const row of rows) this.listeners.emit({ type: 'completed', entry: toEntry(row), reason: null, error: null });
  }

  /**
   * Records failed attempts in one statement of their own (a batch's writes are already rolled
   * back; a lease sweep holds no transaction), each Failed with its retry time or DeadLetter with
   * its reason, fenced by its claim's token; then logs them and tells the listeners.
   */
  async fail(queryRunner: QueryRunner, attempts: FailedAttempt[]): Promise<void> {
    if (attempts.length === 0) return;
    const failures = attempts.map((attempt) => this.describe(attempt));
    const column = <K extends keyof DescribedFailure>(key: K) => failures.map((failure) => failure[key]);
    const now = performance.now();
    const ago = (at: number | null) => (at === null ? null : now - at);
    const { rows } = await runQuery(queryRunner, this.sql.fail, [
      failures.map((f) => f.row.id),
      failures.map((f) => f.row.lock_token),
      failures.map((f) => f.decision.status),
      column('message'),
      failures.map((f) => (f.decision.status === InboxStatus.Failed ? f.decision.retryDelayMs : null)),
      failures.map((f) => (f.decision.status === InboxStatus.DeadLetter ? f.decision.reason : null)),
      failures.map((f) => historyOutcome(f.decision)),
      failures.map((f) => ago(f.startedAt)),
      failures.map((f) => ago(f.finishedAt)),
      column('errorClass'),
      column('stack'),
      column('workerId'),
      column('rawMessage'),
      failures.map((f) => f.decision.ended),
      clockTime(this.options.clock),
    ]);
    const written = new Map(rows.map((row) => [row.id, row]));
    for (const failure of failures) this.report(failure, written.get(failure.row.id));
  }

  /**
   * Hands claims back uncharged (see decideLeaseExpiry); `asSuspects` marks them crash suspects,
   * to run alone next time. Recorded in their history with `why`.
   */
  async release(queryRunner: QueryRunner, rows: InboxRow[], asSuspects: boolean, why: string): Promise<void> {
    if (rows.length === 0) return;
    const { rows: released } = await runQuery(queryRunner, this.sql.release, [
      rows.map((row) => row.id),
      rows.map((row) => row.lock_token),
      asSuspects,
      rows.map((row) => row.locked_by),
      why,
      clockTime(this.options.clock),
    ]);
    const next = asSuspects ? 'handed back uncharged, to run alone' : 'handed back uncharged';
    for (const row of released) this.logger.warn(`Inbox entry ${row.id} (${row.command_type}): ${why}; ${next}.`);
  }

  /** An operator's replay (a corrected payload as JSON, or null); undefined when the status does not allow it. */
  async replay(on: DataSource, id: string, payloadJson: string | null, audit: Audit): Promise<InboxRow | undefined> {
    const { rows } = await runQuery(on, this.sql.replay, [id, payloadJson, audit.actor, audit.reason, clockTime(this.options.clock)]);
    return rows[0];
  }

  /** One batch of an operator's bulk replay; the ids replayed. */
  async replayBatch(on: DataSource, sql: string, params: unknown[], audit: Audit): Promise<string[]> {
    const { rows } = await runQuery<{ id: string }>(on, sql, [...params, audit.actor, audit.reason, clockTime(this.options.clock)]);
    return rows.map((row) => row.id);
  }

  /** An operator's discard; undefined when the status does not allow it. */
  async discard(on: DataSource, id: string, audit: Audit): Promise<InboxRow | undefined> {
    const { rows } = await runQuery(on, this.sql.discard, [id, clockTime(this.options.clock), audit.actor, audit.reason]);
    return rows[0];
  }

  /** An operator's dead-letter; undefined when the status does not allow it. Tells the listeners. */
  async deadLetter(on: DataSource, id: string, audit: Audit): Promise<InboxRow | undefined> {
    const { rows } = await runQuery(on, this.sql.deadLetter, [id, clockTime(this.options.clock), audit.actor, audit.reason]);
    const [row] = rows;
    if (row) this.listeners.emit({ type: 'dead_letter', entry: toEntry(row), reason: DeadLetterReason.Manual, error: row.error });
    return row;
  }

  /** The decision for a failed attempt, and what its records say about it. */
  private describe({ row, error, startedAt, finishedAt }: FailedAttempt): DescribedFailure {
    const handler = this.explorer.get(row.command_type);
    const attempt = row.retry_count + 1;
    const kind = failureKindOf(error);
    // The worker that ran the attempt decides by its handler; a crash suspect's lease expiry, seen
    // by any worker, by the attempts allowed that were stored when that attempt started.
    const ranHere = kind === FailureKind.LeaseExpired ? undefined : handler?.maxAttempts;
    const maxAttempts = ranHere ?? row.max_attempts ?? handler?.maxAttempts ?? this.options.maxAttempts;
    const backoff = handler?.backoff ?? this.options.backoff;
    const decision = decideFailure(kind, attempt, maxAttempts, () => backoffDelayMs(attempt, backoff));
    const rawMessage = describe(error).slice(0, MAX_ERROR_LENGTH);
    const exhausted = decision.status === InboxStatus.DeadLetter && decision.reason !== DeadLetterReason.PermanentError && decision.reason !== DeadLetterReason.InvalidPayload;
    return {
      row,
      attempt,
      maxAttempts,
      decision,
      rawMessage,
      message: (exhausted ? `Gave up after ${attempt} attempt(s): ${rawMessage}` : rawMessage).slice(0, MAX_ERROR_LENGTH),
      startedAt,
      finishedAt,
      errorClass: error instanceof Error ? error.name : typeof error,
      stack: (error instanceof Error ? error.stack : undefined)?.slice(0, MAX_STACK_LENGTH) ?? null,
      workerId: kind === FailureKind.LeaseExpired ? row.locked_by : this.options.workerId,
    };
  }

  /** Logs a recorded failure and tells the listeners, from the row the statement wrote. */
  private report(failure: DescribedFailure, written: InboxRow | undefined): void {
    const { row, decision, message } = failure;
    const label = `Inbox entry ${row.id} (${row.command_type}) attempt ${failure.attempt}/${failure.maxAttempts}`;
    if (!written) {
      this.logger.warn(`${label} failed, but its claim was taken over meanwhile; outcome not recorded: ${message}`);
      return;
    }
    if (decision.status === InboxStatus.DeadLetter) {
      // The stack trace is in the entry's history; the log line stays one line.
      this.logger.error(`${label} dead-lettered (${decision.reason}): ${message}`);
    } else {
      this.logger.warn(`${label} failed, retry at ${written.next_retry_at?.toISOString()}: ${message}`);
    }
    const type = written.status === InboxStatus.DeadLetter ? 'dead_letter' : 'failed';
    this.listeners.emit({ type, entry: toEntry(written), reason: written.dead_letter_reason, error: written.error });
  }
}

interface DescribedFailure {
  row: InboxRow;
  attempt: number;
  maxAttempts: number;
  decision: FailureDecision;
  message: string;
  rawMessage: string;
  startedAt: number | null;
  finishedAt: number | null;
  errorClass: string;
  stack: string | null;
  workerId: string | null;
}

/** What a thrown error means for the entry's fate. */
export function failureKindOf(error: unknown): FailureKind {
  if (error instanceof PayloadValidationError) return FailureKind.InvalidPayload;
  if (error instanceof PermanentError) return FailureKind.Permanent;
  if (error instanceof LeaseExpiredError) return FailureKind.LeaseExpired;
  if (error instanceof HandlerTimeoutError) return FailureKind.TimedOut;
  return FailureKind.Transient;
}

export function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
