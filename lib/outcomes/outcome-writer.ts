import { performance } from 'node:perf_hooks';
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { DataSource, QueryRunner } from 'typeorm';
import { InboxExplorer } from '../discovery/inbox.explorer';
import { InboxListeners } from '../discovery/inbox-listeners';
import { describeError, errorClassOf, errorStackOf } from '../errors/describe-error';
import { HandlerTimeoutError, LeaseExpiredError, PayloadValidationError, PermanentError } from '../errors/inbox.error';
import { INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { backoffDelayMs } from '../state/backoff';
import { decideFailure, DeadLetterReason, FailureKind, historyOutcome, InboxStatus, type FailureDecision } from '../state/inbox-state-machine';
import { blocksKeyWhenDeadLettered, type DeadLetterPolicy } from '../state/ordering';
import { newQueryRunner, runQuery } from '../store/connection';
import { clockTime } from '../store/database-clock';
import { isTransactionConflict } from '../store/database-errors';
import { toEntry, type InboxRow } from '../store/schema';
import { InboxStatements } from '../store/statements';
import { InboxMetrics } from '../telemetry/inbox-metrics';
import { InboxTracing, type AttemptSpan } from '../telemetry/inbox-tracing';

/** Stored error messages and stack traces are cut to this many characters. */
const MAX_ERROR_LENGTH = 4000;
const MAX_STACK_LENGTH = 4000;

/** A handler that returned; when it started and finished (`performance.now()`, monotonic). */
export interface CompletedAttempt {
  row: InboxRow;
  startedAt: number;
  finishedAt: number;
  /** When its batch was claimed (`performance.now()`). */
  claimedAt?: number;
  span?: AttemptSpan;
}

/** An attempt that failed; times are null for a lease expiry (from its stamped start until now). */
export interface FailedAttempt {
  row: InboxRow;
  error: unknown;
  startedAt: number | null;
  finishedAt: number | null;
  span?: AttemptSpan;
  /** False when its handler never ran (its command could not be made): no handler time to record. */
  handlerRan?: boolean;
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
    private readonly tracing: InboxTracing,
    private readonly metrics: InboxMetrics,
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

  /**
   * Hands the keys over whose holders this transaction finished (see state/ordering.ts): locks
   * their rows, then, in a statement that sees every receive committed before, gives each its
   * earliest waiting entry or frees it. Returns the entries that now hold a key.
   */
  async handOver(queryRunner: QueryRunner, keys: Iterable<string | null>): Promise<KeyHolder[]> {
    const distinct = [...new Set([...keys].filter((key): key is string => key !== null))].sort();
    if (distinct.length === 0) return [];
    await runQuery(queryRunner, this.sql.lockKeys, [distinct]);
    const { rows } = await runQuery<KeyHolder>(queryRunner, this.sql.settleKeys, [distinct, clockTime(this.options.clock)]);
    return rows;
  }

  /**
   * The batch that completed these has committed: end their spans, count them, tell the listeners
   * (`rows`: what the statement returned, when someone listens).
   */
  completed(rows: InboxRow[], attempts: CompletedAttempt[]): void {
    const now = performance.now();
    this.metrics.completed(attempts, (attempt) => attempt.row.command_type, (attempt) => (attempt.finishedAt - attempt.startedAt) / 1000);
    for (const attempt of attempts) {
      const { row } = attempt;
      this.tracing.endAttempt(attempt.span, 'completed');
      // The database's clock: the claim's time (its lease's start) and the time since, measured here.
      const claimedAt = this.claimTime(row);
      if (claimedAt !== null && attempt.claimedAt !== undefined) this.metrics.timings(row.command_type, claimedAt + (now - attempt.claimedAt) - row.received_at.getTime(), null);
      this.firstAttemptEnded(row);
    }
    for (const row of rows) this.listeners.emit({ type: 'completed', entry: toEntry(row), reason: null, error: null });
  }

  /**
   * An entry's first attempt has its outcome (completed, failed, or its worker gone): how long the
   * entry waited from its receive to that attempt's claim, on the database's clock. Timed here, not
   * when the attempt starts: an attempt handed back uncharged (its batch rolled back) counts for
   * nothing, and the next one is still the first.
   */
  private firstAttemptEnded(row: InboxRow): void {
    if (row.retry_count !== 0 || row.last_outcome !== null) return;
    const claimedAt = this.claimTime(row);
    if (claimedAt !== null) this.metrics.timings(row.command_type, null, claimedAt - row.received_at.getTime());
  }

  /** When the row was claimed, by the database's clock: its lease's end minus the lease. */
  private claimTime(row: InboxRow): number | null {
    return row.locked_until ? row.locked_until.getTime() - this.options.leaseMs : null;
  }

  /**
   * Records failed attempts in one statement of their own (a batch's writes are already rolled
   * back; a lease sweep holds no transaction), each Failed with its retry time or DeadLetter with
   * its reason, fenced by its claim's token; then logs them and tells the listeners.
   */
  async fail(queryRunner: QueryRunner, attempts: FailedAttempt[]): Promise<void> {
    if (attempts.length === 0) return;
    const failures = attempts.map((attempt) => this.describe(attempt));
    // A skipped dead letter is done with its key: the key is handed over in the same transaction.
    const skipped = failures.filter((f) => f.row.ordering_key !== null && f.decision.status === InboxStatus.DeadLetter && !f.blocksKey);
    let rows: InboxRow[];
    try {
      rows = skipped.length === 0
        ? await this.writeFailures(queryRunner, failures)
        : await inTransaction(queryRunner, async () => {
            const written = await this.writeFailures(queryRunner, failures);
            await this.handOver(queryRunner, skipped.map((f) => f.row.ordering_key));
            return written;
          });
    } catch (error) {
      for (const failure of failures) this.tracing.endAttempt(failure.span, 'not_recorded', failure.error);
      throw error;
    }
    const written = new Map(rows.map((row) => [row.id, row]));
    for (const failure of failures) this.report(failure, written.get(failure.row.id));
  }

  private async writeFailures(queryRunner: QueryRunner, failures: DescribedFailure[]): Promise<InboxRow[]> {
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
      column('blocksKey'),
    ]);
    return rows;
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
    // A crash suspect's worker may have run it: that was its first attempt.
    if (asSuspects) {
      const ids = new Set(released.map((row) => row.id));
      for (const row of rows) if (ids.has(row.id)) this.firstAttemptEnded(row);
    }
  }

  /**
   * An operator's replay (a corrected payload as JSON, or null); undefined when the status does not
   * allow it. Each operator action and its key's hand-over commit together.
   */
  async replay(on: DataSource, id: string, payloadJson: string | null, audit: Audit): Promise<InboxRow | undefined> {
    return this.operatorAction(on, 'replay', audit, this.sql.replay, [id, payloadJson, audit.actor, audit.reason, clockTime(this.options.clock)]);
  }

  /** One batch of an operator's bulk replay; the ids replayed. */
  replayBatch(on: DataSource, sql: string, params: unknown[], audit: Audit): Promise<string[]> {
    return this.bulkBatch(on, sql, params, audit, (commandType) => this.metrics.replayed(commandType));
  }

  /** One batch of an operator's bulk discard; the ids discarded. */
  discardBatch(on: DataSource, sql: string, params: unknown[], audit: Audit): Promise<string[]> {
    return this.bulkBatch(on, sql, params, audit, (commandType) => this.metrics.discarded(commandType));
  }

  /** A batch statement and its keys' hand-over in one transaction; each entry counted once committed. */
  private async bulkBatch(on: DataSource, sql: string, params: unknown[], audit: Audit, count: (commandType: string) => void): Promise<string[]> {
    const rows = await withQueryRunner(on, (queryRunner) =>
      inTransaction(queryRunner, async () => {
        const { rows } = await runQuery<{ id: string; ordering_key: string | null; command_type: string }>(queryRunner, sql, [
          ...params,
          audit.actor,
          audit.reason,
          clockTime(this.options.clock),
        ]);
        await this.handOver(queryRunner, rows.map((row) => row.ordering_key));
        return rows;
      }),
    );
    for (const row of rows) count(row.command_type);
    return rows.map((row) => row.id);
  }

  /** An operator's discard; undefined when the status does not allow it. */
  async discard(on: DataSource, id: string, audit: Audit): Promise<InboxRow | undefined> {
    return this.operatorAction(on, 'discard', audit, this.sql.discard, [id, clockTime(this.options.clock), audit.actor, audit.reason]);
  }

  /**
   * An operator's dead-letter; undefined when the status does not allow it. Whether it then holds
   * its ordering key is its command type's policy. Tells the listeners.
   */
  async deadLetter(on: DataSource, id: string, audit: Audit): Promise<InboxRow | undefined> {
    const row = await this.operatorAction(on, 'dead_letter', audit, async (queryRunner) => {
      const [current] = (await runQuery(queryRunner, this.sql.selectById, [id])).rows;
      const blocks = current !== undefined && blocksKeyWhenDeadLettered(this.policyOf(current.command_type));
      return [this.sql.deadLetter, [id, clockTime(this.options.clock), audit.actor, audit.reason, blocks]];
    });
    if (row) this.listeners.emit({ type: 'dead_letter', entry: toEntry(row), reason: DeadLetterReason.Manual, error: row.error });
    return row;
  }

  /**
   * One operator statement on one entry, and its key's hand-over, in one transaction; then its span
   * in the entry's trace and its count.
   */
  private async operatorAction(
    on: DataSource,
    action: OperatorActionName,
    audit: Audit,
    statement: string | ((queryRunner: QueryRunner) => Promise<[string, unknown[]]>),
    params: unknown[] = [],
  ): Promise<InboxRow | undefined> {
    const startedAt = Date.now();
    const row = await withQueryRunner(on, (queryRunner) =>
      inTransaction(queryRunner, async () => {
        const [sql, values] = typeof statement === 'string' ? [statement, params] : await statement(queryRunner);
        const [row] = (await runQuery(queryRunner, sql, values)).rows;
        if (!row) return undefined;
        const holders = await this.handOver(queryRunner, [row.ordering_key]);
        // Handed its key in the same transaction: it no longer waits.
        if (holders.some((holder) => holder.id === row.id)) row.waiting = false;
        return row;
      }),
    );
    if (!row) return undefined;
    this.tracing.operatorAction(action, row, audit.actor, startedAt);
    if (action === 'replay') this.metrics.replayed(row.command_type);
    else if (action === 'discard') this.metrics.discarded(row.command_type);
    else this.metrics.processed(row.command_type, 'dead_letter', null, null, DeadLetterReason.Manual);
    return row;
  }

  /**
   * The dead-letter policy of a command type: its handler's. An instance without the handler (a
   * worker of another deploy charging a crash, an operator's CLI) cannot know it, and its own
   * module default is no better a guess: it blocks, the one choice that never runs a later entry
   * of the key on top of a missing one (an operator can still discard the dead letter).
   */
  private policyOf(commandType: string): DeadLetterPolicy {
    return this.explorer.get(commandType)?.onDeadLetter ?? 'block';
  }

  /** The decision for a failed attempt, and what its records say about it. */
  private describe({ row, error, startedAt, finishedAt, span, handlerRan }: FailedAttempt): DescribedFailure {
    const handler = this.explorer.get(row.command_type);
    const attempt = row.retry_count + 1;
    const kind = failureKindOf(error);
    // The worker that ran the attempt decides by its handler; a crash suspect's lease expiry, seen
    // by any worker, by the attempts allowed that were stored when that attempt started.
    const ranHere = kind === FailureKind.LeaseExpired ? undefined : handler?.maxAttempts;
    const maxAttempts = ranHere ?? row.max_attempts ?? handler?.maxAttempts ?? this.options.maxAttempts;
    const backoff = handler?.backoff ?? this.options.backoff;
    const decision = decideFailure(kind, attempt, maxAttempts, () => backoffDelayMs(attempt, backoff));
    const rawMessage = describeError(error).slice(0, MAX_ERROR_LENGTH);
    const exhausted = decision.status === InboxStatus.DeadLetter && decision.reason !== DeadLetterReason.PermanentError && decision.reason !== DeadLetterReason.InvalidPayload;
    return {
      row,
      error,
      span,
      attempt,
      maxAttempts,
      decision,
      rawMessage,
      message: (exhausted ? `Gave up after ${attempt} attempt(s): ${rawMessage}` : rawMessage).slice(0, MAX_ERROR_LENGTH),
      startedAt,
      finishedAt,
      handlerRan: handlerRan !== false,
      errorClass: errorClassOf(error),
      stack: errorStackOf(error)?.slice(0, MAX_STACK_LENGTH) ?? null,
      workerId: kind === FailureKind.LeaseExpired ? row.locked_by : this.options.workerId,
      blocksKey: row.ordering_key !== null && decision.status === InboxStatus.DeadLetter && blocksKeyWhenDeadLettered(this.policyOf(row.command_type)),
    };
  }

  /** Logs a recorded failure and tells the listeners, from the row the statement wrote. */
  private report(failure: DescribedFailure, written: InboxRow | undefined): void {
    const { row, decision, message } = failure;
    const label = `Inbox entry ${row.id} (${row.command_type}) attempt ${failure.attempt}/${failure.maxAttempts}`;
    const outcome = !written ? 'not_recorded' : written.status === InboxStatus.DeadLetter ? 'dead_letter' : 'failed';
    const reason = written?.dead_letter_reason ?? null;
    this.tracing.endAttempt(failure.span, outcome, failure.error, reason);
    const seconds = !failure.handlerRan || failure.startedAt === null || failure.finishedAt === null ? null : (failure.finishedAt - failure.startedAt) / 1000;
    this.metrics.processed(row.command_type, outcome, seconds, failure.errorClass, reason);
    if (!written) {
      this.logger.warn(`${label} failed, but its claim was taken over meanwhile; outcome not recorded: ${message}`);
      return;
    }
    this.firstAttemptEnded(row);
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
  error: unknown;
  span: AttemptSpan | undefined;
  attempt: number;
  maxAttempts: number;
  decision: FailureDecision;
  message: string;
  rawMessage: string;
  startedAt: number | null;
  finishedAt: number | null;
  handlerRan: boolean;
  errorClass: string;
  stack: string | null;
  workerId: string | null;
  /** A dead letter that holds its ordering key (policy block). */
  blocksKey: boolean;
}

type OperatorActionName = 'replay' | 'discard' | 'dead_letter';

/** An entry that a hand-over made its key's holder. */
export interface KeyHolder {
  id: string;
  ordering_key: string;
  status: InboxStatus;
}

/** How many times a transaction of these runs when the server ends it to break a deadlock. */
const CONFLICT_ATTEMPTS = 3;

/**
 * Runs `work` in a transaction on the query runner (which must have none open). These
 * transactions (an operator's action, a skipped dead letter's record) lock an entry, then its
 * key; a batch's hand-over locks a key, then the key's next entry: when two cross, the server ends
 * one of them. Ended, this one runs again.
 */
async function inTransaction<T>(queryRunner: QueryRunner, work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    await queryRunner.startTransaction();
    try {
      const result = await work();
      await queryRunner.commitTransaction();
      return result;
    } catch (error) {
      if (queryRunner.isTransactionActive) await queryRunner.rollbackTransaction().catch(() => undefined);
      if (attempt < CONFLICT_ATTEMPTS && isTransactionConflict(error) && !queryRunner.isReleased) continue;
      throw error;
    }
  }
}

/** Runs `work` on a query runner of its own, released after. */
async function withQueryRunner<T>(dataSource: DataSource, work: (queryRunner: QueryRunner) => Promise<T>): Promise<T> {
  const queryRunner = newQueryRunner(dataSource);
  try {
    return await work(queryRunner);
  } finally {
    await queryRunner.release();
  }
}

/** What a thrown error means for the entry's fate. */
export function failureKindOf(error: unknown): FailureKind {
  if (error instanceof PayloadValidationError) return FailureKind.InvalidPayload;
  if (error instanceof PermanentError) return FailureKind.Permanent;
  if (error instanceof LeaseExpiredError) return FailureKind.LeaseExpired;
  if (error instanceof HandlerTimeoutError) return FailureKind.TimedOut;
  return FailureKind.Transient;
}

