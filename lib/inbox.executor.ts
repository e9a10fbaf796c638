import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { DataSource, QueryRunner } from 'typeorm';
import { backoffDelayMs } from './backoff';
import { clockTime } from './database-clock';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from './inbox.constants';
import { AbortedTransactionError, HandlerTimeoutError, PayloadValidationError, PermanentError } from './errors/inbox.error';
import { InboxEvents } from './inbox.events';
import { InboxExplorer, type RegisteredInboxHandler } from './inbox.explorer';
import { AttemptOutcome, DeadLetterReason } from './inbox-history.types';
import { materializeCommand } from './inbox-payload';
import { destroyConnection, InboxSql, runQuery, toEntry, type InboxRow } from './inbox.sql';
import { InboxStatus } from './inbox-status.enum';
import type { InboxContext } from './interfaces/inbox-handler.interface';
import type { ResolvedInboxOptions } from './interfaces/inbox-options.interface';

/** Stored error messages and stack traces are cut to this many characters. */
const MAX_ERROR_LENGTH = 4000;
const MAX_STACK_LENGTH = 4000;

export class LeaseExpiredError extends Error {
  override readonly name = 'LeaseExpiredError';
}

/** One claimed entry on its way through a batch. */
interface Job {
  row: InboxRow;
  handler: RegisteredInboxHandler;
  command: unknown;
  /** When its handler started, and for how long it ran: ms after the batch's start (monotonic). */
  startMs: number;
  durationMs: number;
}

type GroupResult =
  | { committed: true; completed: InboxRow[]; failed: Array<{ job: Job; error: unknown }> }
  | { committed: false; culprit?: { job: Job; error: unknown }; error?: unknown; rest: Job[] };

/** What the processor asks for: up to `limit` due entries, crash suspects or the others. */
export interface ClaimRequest {
  limit: number;
  suspects: boolean;
}

/** A batch under way: `claimed` settles when the claim has answered, `done` when the batch is over. */
export interface RunningBatch {
  claimed: Promise<number>;
  done: Promise<void>;
}

/**
 * Runs claimed entries. A batch holds one connection from its claim to its last outcome: claim,
 * start (both committed on their own), then one transaction, optimistically without savepoints:
 * its handlers' writes and every entry's Completed status commit together, in one commit. When a
 * handler fails, the transaction rolls back, that attempt is recorded as failed (in its own
 * statement), and the rest of the batch runs again with a savepoint per entry, so that a failing
 * handler only loses its own writes.
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

  /**
   * Takes a connection, claims due entries on it and runs them. The claim comes only once the
   * connection is in hand, so no lease runs while a batch waits for the pool.
   */
  run(request: ClaimRequest): RunningBatch {
    let reportClaimed!: (count: number) => void;
    let failClaim!: (error: unknown) => void;
    const claimed = new Promise<number>((resolve, reject) => {
      reportClaimed = resolve;
      failClaim = reject;
    });
    let answered = false;
    const done = this.withConnection(async (queryRunner) => {
      const rows = await this.claim(queryRunner, request);
      answered = true;
      reportClaimed(rows.length);
      if (rows.length > 0) await this.executeClaimed(rows, queryRunner);
    });
    // Until the claim has answered, a failure (no connection, say) is the claim's; after, the batch's.
    return {
      claimed,
      done: done.catch((error: unknown) => {
        if (!answered) return failClaim(error);
        throw error;
      }),
    };
  }

  private async claim(queryRunner: QueryRunner, { limit, suspects }: ClaimRequest): Promise<InboxRow[]> {
    const params = [clockTime(this.options.clock), limit, this.options.workerId, `${this.options.leaseMs} milliseconds`, randomUUID(), this.explorer.commandTypes()];
    const { rows } = await runQuery(queryRunner, suspects ? this.sql.claimSuspects : this.sql.claim, params);
    return rows.sort((a, b) => dueTime(a) - dueTime(b));
  }

  /** Starts the attempts (a committed fact from here on), then runs them. */
  private async executeClaimed(rows: InboxRow[], queryRunner: QueryRunner): Promise<void> {
    const handled = rows.filter((row) => this.explorer.get(row.command_type));
    // Claims only take types this worker handles; a handler missing here would be a bug: hand back.
    if (handled.length < rows.length) await this.release(rows.filter((row) => !handled.includes(row)), queryRunner);
    if (handled.length === 0) return;
    const { rows: started } = await runQuery<{ id: string }>(queryRunner, this.sql.start, [
      handled.map((row) => row.id),
      handled[0].lock_token,
      handled.map((row) => this.explorer.get(row.command_type)!.maxAttempts),
      clockTime(this.options.clock),
    ]);
    const batchStart = performance.now();
    const ours = new Set(started.map((row) => row.id));
    const lost = handled.filter((row) => !ours.has(row.id));
    for (const row of lost) this.logger.warn(`Inbox entry ${row.id} (${row.command_type}): claim taken over before its attempt started; skipped.`);
    const running = lost.length ? handled.filter((row) => ours.has(row.id)) : handled;
    if (running.length > 0) await this.executeGroup(running, queryRunner, batchStart);
  }

  private async release(rows: InboxRow[], queryRunner: QueryRunner): Promise<void> {
    await runQuery(queryRunner, this.sql.release, [rows.map((row) => row.id), rows.map((row) => row.lock_token)]);
    for (const row of rows) this.logger.warn(`Inbox entry ${row.id}: no handler for "${row.command_type}" in this worker; claim handed back.`);
  }

  private async executeGroup(rows: InboxRow[], batchConnection: QueryRunner, batchStart: number): Promise<void> {
    const failures: FailedAttempt[] = [];
    let jobs: Job[] = [];
    for (const row of rows) {
      const handler = this.explorer.get(row.command_type)!;
      const startMs = performance.now() - batchStart;
      try {
        const command = await materializeCommand(row.command_type, row.payload ?? {}, handler.payloadClass, handler.payloadValidation);
        jobs.push({ row, handler, command, startMs, durationMs: 0 });
      } catch (error) {
        failures.push({ row, handler, error, startMs, durationMs: performance.now() - batchStart - startMs });
      }
    }
    let completed: InboxRow[] = [];
    let isolated = false;
    while (jobs.length > 0 && !this.abandoning) {
      const savepoints = isolated && jobs.length > 1;
      const result = await this.onConnection(batchConnection, (queryRunner) => this.runGroup(jobs, queryRunner, savepoints, batchStart));
      if (this.abandoning) return; // leases will expire; nothing more to record from here
      if (result.committed) {
        completed = result.completed;
        for (const { job, error } of result.failed) failures.push(failureOf(job, error));
        break;
      }
      if (result.culprit) {
        failures.push(failureOf(result.culprit.job, result.culprit.error));
      } else if (isolated || jobs.length === 1) {
        // The transaction itself failed (commit, connection): every attempt in it failed.
        for (const job of jobs) failures.push(failureOf(job, result.error));
        break;
      }
      jobs = result.rest;
      isolated = true;
    }
    // Failures first, in their own statement (the handlers' writes are already rolled back); then
    // the listeners hear of every outcome, in the background.
    if (failures.length > 0 && !this.abandoning) {
      this.report(await this.onConnection(batchConnection, (queryRunner) => this.recordFailures(failures, queryRunner)));
    }
    this.emitCompleted(completed);
  }

  /** Runs `work` on the batch's connection, or on a fresh one when a timeout has cut that one. */
  private onConnection<T>(preferred: QueryRunner, work: (queryRunner: QueryRunner) => Promise<T>): Promise<T> {
    return preferred.isReleased ? this.withConnection(work) : work(preferred);
  }

  /**
   * One transaction over a group: lock the claimed rows (proving the claims are still ours), run
   * the handlers, complete the successful entries in one statement, commit.
   */
  private async runGroup(jobs: Job[], queryRunner: QueryRunner, savepoints: boolean, batchStart: number): Promise<GroupResult> {
    const completed: Job[] = [];
    const failed: Array<{ job: Job; error: unknown }> = [];
    try {
      await queryRunner.startTransaction();
      const client = (await queryRunner.connect()) as TransactionStatusSource;
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
        // The transaction is never left aborted by a handler (see runHandler), so this cannot fail on its account.
        if (savepoints) await queryRunner.query('SAVEPOINT inbox_entry');
        job.startMs = performance.now() - batchStart;
        try {
          await this.runHandler(job, queryRunner, client);
          job.durationMs = performance.now() - batchStart - job.startMs;
          completed.push(job);
        } catch (error) {
          job.durationMs = performance.now() - batchStart - job.startMs;
          // A timeout cut the connection: the whole transaction is gone.
          if (!savepoints || queryRunner.isReleased) {
            await this.rollback(queryRunner, error);
            return { committed: false, culprit: { job, error }, rest: jobs.slice(0, index).concat(jobs.slice(index + 1)).filter((j) => ours.has(j.row.id)) };
          }
          await queryRunner.query('ROLLBACK TO SAVEPOINT inbox_entry');
          failed.push({ job, error });
        }
      }
      let written: InboxRow[] = [];
      if (completed.length > 0) {
        // With completed-listeners, the statement returns the rows it wrote: the events carry them.
        const statement = this.events.has('completed') ? this.sql.completeReturning : this.sql.complete;
        const { rows, affected } = await runQuery(queryRunner, statement, this.completeParams(completed));
        if (affected !== completed.length) throw new LeaseExpiredError('claim lost while the handlers ran');
        written = rows;
      }
      await queryRunner.commitTransaction();
      return { committed: true, completed: written, failed };
    } catch (error) {
      await this.rollback(queryRunner, error);
      return { committed: false, error, rest: jobs };
    }
  }

  private completeParams(jobs: Job[]): unknown[] {
    return [
      jobs.map((job) => job.row.id),
      jobs[0].row.lock_token,
      jobs.map((job) => job.startMs),
      jobs.map((job) => job.durationMs),
      this.options.workerId,
    ];
  }

  private async rollback(queryRunner: QueryRunner, cause: unknown): Promise<void> {
    if (!queryRunner.isTransactionActive || queryRunner.isReleased) return;
    await queryRunner.rollbackTransaction().catch(() => destroyConnection(queryRunner, toError(cause)));
  }

  /**
   * Runs the handler within its time limit. On overrun the connection is destroyed rather than
   * rolled back: the handler may still be running, and its later queries must fail, not autocommit.
   * A handler that returns while its transaction is aborted (it caught a failed statement's error)
   * has failed: it is blamed here, before the next handler's first statement would be.
   */
  private async runHandler(job: Job, queryRunner: QueryRunner, client: TransactionStatusSource): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    // A failed statement's error reaches the handler before the server says the transaction is
    // aborted; wait for that word (within the time limit) before asking.
    const running = Promise.resolve(job.handler.instance.execute(job.command, this.contextFor(job.row, queryRunner))).then(() => untilIdle(client));
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
    if (client.getTransactionStatus?.() === 'E') throw new AbortedTransactionError();
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

  private emitCompleted(rows: InboxRow[]): void {
    for (const row of rows) this.events.emit({ type: 'completed', entry: toEntry(row), reason: null, error: null });
  }

  /**
   * Records failed attempts in one statement (the handlers' writes are already rolled back), each
   * with its history record: Failed with a backoff, or DeadLetter when the error is permanent or
   * the attempts are used up. Within the lease sweep's transaction when `queryRunner` has one.
   * Returns what was written, for `report` once it is committed.
   */
  async recordFailures(items: FailedAttempt[], queryRunner: QueryRunner): Promise<RecordedFailure[]> {
    if (items.length === 0) return [];
    const failures = items.map((item) => this.describeFailure(item));
    const column = <K extends keyof DescribedFailure>(key: K) => failures.map((failure) => failure[key]);
    const params = [
      failures.map((f) => f.row.id),
      failures.map((f) => f.row.lock_token),
      column('status'),
      column('message'),
      column('delayMs'),
      column('reason'),
      column('outcome'),
      column('startMs'),
      column('durationMs'),
      column('errorClass'),
      column('stack'),
      column('workerId'),
      column('rawMessage'),
      column('ended'),
      clockTime(this.options.clock),
    ];
    const { rows } = await runQuery(queryRunner, this.sql.recordOutcomes, params);
    const written = new Map(rows.map((row) => [row.id, row]));
    return failures.map((failure) => ({ failure, written: written.get(failure.row.id) }));
  }

  /** Logs committed failures and tells the listeners, from the rows the statement wrote. */
  report(recorded: RecordedFailure[]): void {
    for (const { failure, written } of recorded) this.reportFailure(failure, written);
  }

  /** Works out what a failed attempt means for its entry: Failed with a backoff, or DeadLetter. */
  private describeFailure({ row, handler, error, startMs, durationMs }: FailedAttempt): DescribedFailure {
    const failedAttempts = row.retry_count + 1;
    const maxAttempts = handler?.maxAttempts ?? row.max_attempts ?? this.explorer.maxAttemptsFor(row.command_type);
    const permanent = error instanceof PermanentError;
    const deadLetter = permanent || failedAttempts >= maxAttempts;
    const rawMessage = describe(error).slice(0, MAX_ERROR_LENGTH);
    const message = (deadLetter && !permanent ? `Gave up after ${failedAttempts} attempt(s): ${rawMessage}` : rawMessage).slice(0, MAX_ERROR_LENGTH);
    const backoff = handler?.backoff ?? this.explorer.backoffFor(row.command_type);
    return {
      row,
      failedAttempts,
      maxAttempts,
      status: deadLetter ? InboxStatus.DeadLetter : InboxStatus.Failed,
      reason: deadLetter ? deadLetterReasonOf(error) : null,
      message,
      rawMessage,
      delayMs: deadLetter ? null : backoffDelayMs(failedAttempts, backoff),
      startMs,
      durationMs,
      outcome: deadLetter ? AttemptOutcome.DeadLettered : endingOf(error),
      ended: endingOf(error),
      errorClass: error instanceof Error ? error.name : typeof error,
      stack: stackOf(error)?.slice(0, MAX_STACK_LENGTH) ?? null,
      workerId: error instanceof LeaseExpiredError ? row.locked_by : this.options.workerId,
    };
  }

  /** Logs a recorded failure and tells the listeners, from the row the statement wrote. */
  private reportFailure(failure: DescribedFailure, written: InboxRow | undefined): void {
    const { row, reason, message } = failure;
    const label = `Inbox entry ${row.id} (${row.command_type}) attempt ${failure.failedAttempts}/${failure.maxAttempts}`;
    if (!written) {
      this.logger.warn(`${label} failed, but its claim was taken over meanwhile; outcome not recorded: ${message}`);
      return;
    }
    if (written.status === InboxStatus.DeadLetter) {
      // The stack trace is in the entry's history; the log line stays one line.
      this.logger.error(`${label} dead-lettered (${reason}): ${message}`);
    } else {
      this.logger.warn(`${label} failed, retry at ${written.next_retry_at?.toISOString()}: ${message}`);
    }
    const type = written.status === InboxStatus.DeadLetter ? 'dead_letter' : 'failed';
    this.events.emit({ type, entry: toEntry(written), reason: written.dead_letter_reason, error: written.error });
  }
}

export interface FailedAttempt {
  row: InboxRow;
  handler: RegisteredInboxHandler | undefined;
  error: unknown;
  /** ms after the batch's start; null for the lease sweep (the attempt's recorded start). */
  startMs: number | null;
  /** null for the lease sweep: the attempt lasted until now. */
  durationMs: number | null;
}

/** A failure as decided, and the row its statement wrote (none: the claim was taken over). */
export interface RecordedFailure {
  failure: DescribedFailure;
  written: InboxRow | undefined;
}

interface DescribedFailure {
  row: InboxRow;
  failedAttempts: number;
  maxAttempts: number;
  status: InboxStatus;
  reason: DeadLetterReason | null;
  message: string;
  rawMessage: string;
  delayMs: number | null;
  startMs: number | null;
  durationMs: number | null;
  outcome: AttemptOutcome;
  ended: AttemptOutcome;
  errorClass: string;
  stack: string | null;
  workerId: string | null;
}

/** The bits of node-postgres' client that tell whether the open transaction was aborted ('E'). */
interface TransactionStatusSource {
  getTransactionStatus?(): string | null;
  readyForQuery?: boolean;
  connection?: { once(event: 'readyForQuery', listener: () => void): unknown };
}

/** Resolves once the server has answered the client's last statement (its ReadyForQuery carries the transaction's status). */
function untilIdle(client: TransactionStatusSource): Promise<void> {
  if (client.readyForQuery !== false || !client.connection) return Promise.resolve();
  return new Promise((resolve) => client.connection!.once('readyForQuery', () => resolve()));
}

function failureOf(job: Job, error: unknown): FailedAttempt {
  return { row: job.row, handler: job.handler, error, startMs: job.startMs, durationMs: job.durationMs };
}

function deadLetterReasonOf(error: unknown): DeadLetterReason {
  if (error instanceof PayloadValidationError) return DeadLetterReason.InvalidPayload;
  if (error instanceof PermanentError) return DeadLetterReason.PermanentError;
  if (error instanceof LeaseExpiredError) return DeadLetterReason.LeaseExpired;
  return DeadLetterReason.RetriesExhausted;
}

/** How an attempt ended, whatever it meant for the entry. */
function endingOf(error: unknown): AttemptOutcome {
  if (error instanceof LeaseExpiredError) return AttemptOutcome.LeaseExpired;
  if (error instanceof HandlerTimeoutError) return AttemptOutcome.TimedOut;
  return AttemptOutcome.Failed;
}

function dueTime(row: InboxRow): number {
  return (row.next_retry_at ?? row.received_at).getTime();
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
