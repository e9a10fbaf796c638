import { Inject, Injectable, Logger } from '@nestjs/common';
import type { DataSource, QueryRunner } from 'typeorm';
import { backoffDelayMs } from './backoff';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from './inbox.constants';
import { HandlerTimeoutError, PayloadValidationError, PermanentError } from './errors/inbox.error';
import { InboxEvents } from './inbox.events';
import { InboxExplorer, type RegisteredInboxHandler } from './inbox.explorer';
import { AttemptOutcome, DeadLetterReason } from './inbox-history.types';
import { materializeCommand } from './inbox-payload';
import { destroyConnection, InboxSql, LEASE_EXPIRED_PREFIX, runQuery, toEntry, type InboxRow } from './inbox.sql';
import { InboxStatus } from './inbox-status.enum';
import type { InboxContext } from './interfaces/inbox-handler.interface';
import type { ResolvedInboxOptions } from './interfaces/inbox-options.interface';

/** Stored error messages and stack traces are cut to this many characters. */
const MAX_ERROR_LENGTH = 4000;
const MAX_STACK_LENGTH = 4000;

export class LeaseExpiredError extends Error {
  override readonly name = 'LeaseExpiredError';
}

class NoHandlerError extends PermanentError {}

/** One claimed entry on its way through a batch. */
interface Job {
  row: InboxRow;
  handler: RegisteredInboxHandler;
  command: unknown;
  startedAt: Date;
  finishedAt?: Date;
}

type GroupResult =
  | { committed: true; completed: Job[]; failed: Array<{ job: Job; error: unknown }> }
  | { committed: false; culprit?: { job: Job; error: unknown }; error?: unknown; rest: Job[] };

/**
 * Runs claimed entries. A batch runs in one transaction, optimistically without savepoints: its
 * handlers' writes and every entry's Completed status commit together, in one commit. When a
 * handler fails, the transaction rolls back, that attempt is recorded as failed (in its own
 * statement), and the rest of the batch runs again with a savepoint per entry, so that a failing
 * handler only loses its own writes. Entries whose last attempt crashed a worker run alone.
 */
@Injectable()
export class InboxExecutor {
  private readonly logger = new Logger('InboxProcessor');
  private readonly sql: InboxSql;
  /** Every connection held right now, so that shutdown can cut them when it runs out of time. */
  private readonly connections = new Set<QueryRunner>();
  private abandoning = false;

  constructor(
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly explorer: InboxExplorer,
    private readonly events: InboxEvents,
  ) {
    this.sql = new InboxSql(options.tableName, options.attemptHistory, options.preparedStatements);
  }

  /** Lends a tracked connection to `work` and always gives it back. */
  async withConnection<T>(work: (queryRunner: QueryRunner) => Promise<T>): Promise<T> {
    const queryRunner = this.dataSource.createQueryRunner();
    this.connections.add(queryRunner);
    try {
      return await work(queryRunner);
    } finally {
      this.connections.delete(queryRunner);
      await queryRunner.release();
    }
  }

  /** Shutdown ran out of time: cut every connection, so open transactions roll back and nothing hangs. */
  abandon(): void {
    this.abandoning = true;
    for (const queryRunner of this.connections) void destroyConnection(queryRunner, new Error('nestjs-inbox shutdown timeout'));
  }

  /** Executes one claimed batch (all rows share the claim's lock token). */
  async executeBatch(rows: InboxRow[]): Promise<void> {
    const suspects = rows.filter((row) => row.error?.startsWith(LEASE_EXPIRED_PREFIX));
    for (const row of suspects) await this.executeGroup([row]);
    const others = suspects.length ? rows.filter((row) => !suspects.includes(row)) : rows;
    if (others.length) await this.executeGroup(others);
  }

  private async executeGroup(rows: InboxRow[]): Promise<void> {
    const failures: FailedAttempt[] = [];
    let jobs: Job[] = [];
    for (const row of rows) {
      const startedAt = this.options.clock.now();
      const handler = this.explorer.get(row.command_type);
      if (!handler) {
        failures.push({ row, handler, error: new NoHandlerError(`No handler for command type "${row.command_type}" in this worker.`), startedAt });
        continue;
      }
      try {
        jobs.push({ row, handler, command: await materializeCommand(row.command_type, row.payload ?? {}, handler.payloadClass), startedAt });
      } catch (error) {
        failures.push({ row, handler, error, startedAt });
      }
    }
    let isolated = false;
    while (jobs.length > 0 && !this.abandoning) {
      const result = await this.withConnection((queryRunner) => this.runGroup(jobs, queryRunner, isolated && jobs.length > 1));
      if (this.abandoning) return; // leases will expire; nothing more to record from here
      if (result.committed) {
        await this.emitCompleted(result.completed);
        for (const { job, error } of result.failed) failures.push({ row: job.row, handler: job.handler, error, startedAt: job.startedAt });
        break;
      }
      if (result.culprit) {
        const { job, error } = result.culprit;
        failures.push({ row: job.row, handler: job.handler, error, startedAt: job.startedAt });
      } else if (isolated || jobs.length === 1) {
        // The transaction itself failed (commit, connection): every attempt in it failed.
        for (const job of jobs) failures.push({ row: job.row, handler: job.handler, error: result.error, startedAt: job.startedAt });
        break;
      }
      jobs = result.rest;
      isolated = true;
    }
    // In their own statement, after the batch's transaction: the handlers' writes are gone.
    if (failures.length > 0 && !this.abandoning) {
      for (const emit of await this.recordFailures(failures)) await emit();
    }
  }

  /**
   * One transaction over a group: lock the claimed rows (proving the claims are still ours), run
   * the handlers, complete the successful entries in one statement, commit.
   */
  private async runGroup(jobs: Job[], queryRunner: QueryRunner, savepoints: boolean): Promise<GroupResult> {
    const completed: Job[] = [];
    const failed: Array<{ job: Job; error: unknown }> = [];
    try {
      await queryRunner.startTransaction();
      const locked = await runQuery<{ id: string }>(queryRunner, this.sql.lockClaimed, [
        jobs.map((job) => job.row.id),
        jobs[0].row.lock_token,
        String(this.options.leaseMs),
      ]);
      const ours = new Set(locked.rows.map((row) => row.id));
      for (const [index, job] of jobs.entries()) {
        if (!ours.has(job.row.id)) {
          this.logger.warn(`Inbox entry ${job.row.id} (${job.row.command_type}): claim lost before the handler started; skipped.`);
          continue;
        }
        if (savepoints) await queryRunner.query('SAVEPOINT inbox_entry');
        try {
          job.startedAt = this.options.clock.now();
          await this.runHandler(job, queryRunner);
          job.finishedAt = this.options.clock.now();
          completed.push(job);
        } catch (error) {
          // A timeout cut the connection: the whole transaction is gone.
          if (!savepoints || queryRunner.isReleased) {
            await this.rollback(queryRunner, error);
            return { committed: false, culprit: { job, error }, rest: jobs.slice(0, index).concat(jobs.slice(index + 1)).filter((j) => ours.has(j.row.id)) };
          }
          await queryRunner.query('ROLLBACK TO SAVEPOINT inbox_entry');
          failed.push({ job, error });
        }
      }
      if (completed.length > 0) {
        const { affected } = await runQuery(queryRunner, this.sql.complete, this.completeParams(completed));
        if (affected !== completed.length) throw new LeaseExpiredError('claim lost while the handlers ran');
      }
      await queryRunner.commitTransaction();
      return { committed: true, completed, failed };
    } catch (error) {
      await this.rollback(queryRunner, error);
      return { committed: false, error, rest: jobs };
    }
  }

  private completeParams(jobs: Job[]): unknown[] {
    return [jobs.map((job) => job.row.id), jobs[0].row.lock_token, jobs.map((job) => job.finishedAt), jobs.map((job) => job.startedAt), this.options.workerId];
  }

  private async rollback(queryRunner: QueryRunner, cause: unknown): Promise<void> {
    if (!queryRunner.isTransactionActive || queryRunner.isReleased) return;
    await queryRunner.rollbackTransaction().catch(() => destroyConnection(queryRunner, toError(cause)));
  }

  /**
   * Runs the handler within its time limit. On overrun the connection is destroyed rather than
   * rolled back: the handler may still be running, and its later queries must fail, not autocommit.
   */
  private async runHandler(job: Job, queryRunner: QueryRunner): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const running = job.handler.instance.execute(job.command, this.contextFor(job.row, queryRunner));
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HandlerTimeoutError(job.handler.timeoutMs)), job.handler.timeoutMs);
    });
    try {
      await Promise.race([running, timedOut]);
    } catch (error) {
      if (error instanceof HandlerTimeoutError) {
        running.catch(() => undefined);
        await destroyConnection(queryRunner, error);
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  private contextFor(row: InboxRow, queryRunner: QueryRunner): InboxContext {
    return {
      manager: queryRunner.manager,
      entry: Object.freeze({
        id: row.id,
        messageId: row.message_id,
        commandType: row.command_type,
        attempt: row.retry_count + 1,
        correlationId: row.correlation_id,
        causationId: row.causation_id,
        metadata: row.metadata,
        receivedAt: row.received_at,
      }),
    };
  }

  private async emitCompleted(jobs: Job[]): Promise<void> {
    if (!this.events.has('completed')) return;
    for (const job of jobs) {
      const entry = toEntry({
        ...job.row,
        status: InboxStatus.Completed,
        processed_at: job.finishedAt!,
        processing_started_at: job.startedAt,
        processed_by: this.options.workerId,
        error: null,
        next_retry_at: null,
        locked_by: null,
        locked_until: null,
        lock_token: null,
      });
      await this.events.emit({ type: 'completed', entry, reason: null, error: null });
    }
  }

  /**
   * Records failed attempts in one statement of their own (the handlers' writes are already rolled
   * back), each with its history record: Failed with a backoff, or DeadLetter when the error is
   * permanent or the attempts are used up. With `on` (the lease sweep's transaction) the statement
   * joins that transaction. Returns the listener calls to make once the outcome is committed.
   */
  async recordFailures(items: FailedAttempt[], on?: QueryRunner): Promise<Array<() => Promise<void>>> {
    if (items.length === 0) return [];
    const failures = items.map((item) => this.describeFailure(item));
    const column = <K extends keyof DescribedFailure>(key: K) => failures.map((failure) => failure[key]);
    const params = [
      failures.map((f) => f.row.id),
      failures.map((f) => f.row.lock_token),
      column('status'),
      column('message'),
      column('nextRetryAt'),
      column('reason'),
      column('finishedAt'),
      column('outcome'),
      column('startedAt'),
      column('durationMs'),
      column('errorClass'),
      column('stack'),
      column('workerId'),
      column('rawMessage'),
    ];
    const { rows } = on
      ? await runQuery<{ id: string }>(on, this.sql.recordOutcomes, params)
      : await this.withConnection((queryRunner) => runQuery<{ id: string }>(queryRunner, this.sql.recordOutcomes, params));
    const recorded = new Set(rows.map((row) => row.id));
    return failures.flatMap((failure) => this.reportFailure(failure, recorded.has(failure.row.id)) ?? []);
  }

  /** Works out what a failed attempt means for its entry: Failed with a backoff, or DeadLetter. */
  private describeFailure({ row, handler, error, startedAt }: FailedAttempt): DescribedFailure {
    const failedAttempts = row.retry_count + 1;
    const maxAttempts = handler?.maxAttempts ?? this.explorer.maxAttemptsFor(row.command_type);
    const permanent = error instanceof PermanentError;
    const deadLetter = permanent || failedAttempts >= maxAttempts;
    const finishedAt = this.options.clock.now();
    const rawMessage = describe(error).slice(0, MAX_ERROR_LENGTH);
    const message = (deadLetter && !permanent ? `Gave up after ${failedAttempts} attempt(s): ${rawMessage}` : rawMessage).slice(0, MAX_ERROR_LENGTH);
    const backoff = handler?.backoff ?? this.explorer.backoffFor(row.command_type);
    return {
      row,
      error,
      failedAttempts,
      maxAttempts,
      permanent,
      status: deadLetter ? InboxStatus.DeadLetter : InboxStatus.Failed,
      reason: deadLetter ? deadLetterReasonOf(error) : null,
      message,
      rawMessage,
      nextRetryAt: deadLetter ? null : new Date(finishedAt.getTime() + backoffDelayMs(failedAttempts, backoff)),
      finishedAt,
      startedAt,
      durationMs: Math.max(0, finishedAt.getTime() - startedAt.getTime()),
      outcome: attemptOutcomeOf(error, deadLetter),
      errorClass: error instanceof Error ? error.name : typeof error,
      stack: stackOf(error)?.slice(0, MAX_STACK_LENGTH) ?? null,
      workerId: error instanceof LeaseExpiredError ? row.locked_by : this.options.workerId,
    };
  }

  /** Logs a recorded failure and returns the listener call for it, if anyone listens. */
  private reportFailure(failure: DescribedFailure, recorded: boolean): (() => Promise<void>) | undefined {
    const { row, status, reason, message, nextRetryAt } = failure;
    const label = `Inbox entry ${row.id} (${row.command_type}) attempt ${failure.failedAttempts}/${failure.maxAttempts}`;
    if (!recorded) {
      this.logger.warn(`${label} failed, but its claim was taken over meanwhile; outcome not recorded: ${message}`);
      return undefined;
    }
    if (status === InboxStatus.DeadLetter) {
      // The stack trace is in the entry's history; the log line stays one line.
      this.logger.error(`${label} dead-lettered (${reason}): ${message}`);
    } else {
      this.logger.warn(`${label} failed, retry at ${nextRetryAt!.toISOString()}: ${message}`);
    }
    const type = status === InboxStatus.DeadLetter ? 'dead_letter' : 'failed';
    if (!this.events.has(type)) return undefined;
    const entry = toEntry({
      ...row,
      status,
      retry_count: failure.failedAttempts,
      error: message,
      next_retry_at: nextRetryAt,
      dead_letter_reason: reason,
      dead_lettered_at: reason ? failure.finishedAt : null,
      locked_by: null,
      locked_until: null,
      lock_token: null,
    });
    return () => this.events.emit({ type, entry, reason, error: message });
  }
}

interface FailedAttempt {
  row: InboxRow;
  handler: RegisteredInboxHandler | undefined;
  error: unknown;
  startedAt: Date;
}

interface DescribedFailure {
  row: InboxRow;
  error: unknown;
  failedAttempts: number;
  maxAttempts: number;
  permanent: boolean;
  status: InboxStatus;
  reason: DeadLetterReason | null;
  message: string;
  rawMessage: string;
  nextRetryAt: Date | null;
  finishedAt: Date;
  startedAt: Date;
  durationMs: number;
  outcome: AttemptOutcome;
  errorClass: string;
  stack: string | null;
  workerId: string | null;
}

function deadLetterReasonOf(error: unknown): DeadLetterReason {
  if (error instanceof NoHandlerError) return DeadLetterReason.NoHandler;
  if (error instanceof PayloadValidationError) return DeadLetterReason.InvalidPayload;
  if (error instanceof PermanentError) return DeadLetterReason.PermanentError;
  if (error instanceof LeaseExpiredError) return DeadLetterReason.LeaseExpired;
  return DeadLetterReason.RetriesExhausted;
}

function attemptOutcomeOf(error: unknown, deadLettered: boolean): AttemptOutcome {
  if (deadLettered) return AttemptOutcome.DeadLettered;
  if (error instanceof LeaseExpiredError) return AttemptOutcome.LeaseExpired;
  if (error instanceof HandlerTimeoutError) return AttemptOutcome.TimedOut;
  return AttemptOutcome.Failed;
}

export function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

function toError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

export function stackOf(error: unknown): string | undefined {
  return error instanceof Error ? error.stack : undefined;
}
