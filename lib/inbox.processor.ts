import { randomUUID } from 'node:crypto';
import {
  Inject,
  Injectable,
  Logger,
  Optional,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import type { DataSource, QueryRunner } from 'typeorm';
import { backoffDelayMs } from './backoff';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from './inbox.constants';
import { HandlerTimeoutError, InboxConfigurationError, PayloadValidationError, PermanentError } from './errors/inbox.error';
import { InboxEvents } from './inbox.events';
import { AttemptOutcome, DeadLetterReason } from './inbox-history.types';
import { InboxExplorer, type RegisteredInboxHandler } from './inbox.explorer';
import { materializeCommand } from './inbox-payload';
import { destroyConnection, InboxSql, runQuery, toEntry, type InboxRow } from './inbox.sql';
import { InboxStatus } from './inbox-status.enum';
import type { InboxContext } from './interfaces/inbox-handler.interface';
import type { ResolvedInboxOptions } from './interfaces/inbox-options.interface';

/** Expired leases handled per sweep; the rest wait for the next tick. */
const LEASE_SWEEP_LIMIT = 100;
/** Longest pause between passes while the database is unreachable. */
const MAX_RECONNECT_DELAY_MS = 10_000;
/** Stored stack traces are cut to this many characters. */
const MAX_STACK_LENGTH = 4000;
/** Stored error messages are cut to this many characters. */
const MAX_ERROR_LENGTH = 4000;

/** Processors that own a table's loop, per application (one SchedulerRegistry per application). */
const leadersBySchedule = new WeakMap<SchedulerRegistry, Map<string, InboxProcessor>>();

class LeaseExpiredError extends Error {
  override readonly name = 'LeaseExpiredError';
}

class NoHandlerError extends PermanentError {}

/**
 * The claim → execute → record loop. One pass claims due entries (committing each claim before
 * its handler starts), runs up to `concurrency` handlers at a time, each inside a transaction that
 * holds the entry's row lock, and records the outcome. Passes never overlap.
 */
@Injectable()
export class InboxProcessor implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(InboxProcessor.name);
  private readonly sql: InboxSql;
  private readonly timerName: string;
  private timer?: NodeJS.Timeout;
  /** The processor that already runs this table in this application, when this one is a duplicate. */
  private leader?: InboxProcessor;
  private started = false;
  private stopping = false;
  private pass: Promise<number> | null = null;
  private wakeRequested = false;
  /** Consecutive passes that failed on the database; drives the reconnect backoff. */
  private failedPasses = 0;
  /** While the database is down, passes are skipped until this time (ms since epoch). */
  private resumeAt = 0;
  /** Handlers in flight, by entry id, so a pass can keep `concurrency` of them busy. */
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Every connection this processor holds right now, so shutdown can cut them when it runs out of time. */
  private readonly connections = new Set<QueryRunner>();
  /** Listener calls for outcomes recorded by the lease sweep, run once its transaction committed. */
  private afterSweep: Array<() => Promise<void>> = [];
  /** Entries whose transaction shutdown cut off; their outcome is left to lease expiry. */
  private readonly abandoned = new Set<string>();

  constructor(
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly explorer: InboxExplorer,
    private readonly events: InboxEvents,
    @Optional() private readonly schedulerRegistry?: SchedulerRegistry,
  ) {
    this.sql = new InboxSql(options.tableName, options.attemptHistory);
    this.timerName = `nestjs-inbox:${options.tableName}`;
  }

  get isRunning(): boolean {
    return this.started && !this.stopping;
  }

  onApplicationBootstrap(): void {
    if (!this.options.worker) return;
    if (!this.schedulerRegistry) {
      throw new InboxConfigurationError(
        'nestjs-inbox needs @nestjs/schedule: import ScheduleModule.forRoot() once in your root module, ' +
          'or set `worker: false` on a receive-only instance.',
      );
    }
    // A second InboxModule on the same table in this application must not start a second loop;
    // it hands its wake-ups to the first.
    const leaders = leadersBySchedule.get(this.schedulerRegistry) ?? new Map<string, InboxProcessor>();
    leadersBySchedule.set(this.schedulerRegistry, leaders);
    const leader = leaders.get(this.timerName);
    if (leader) {
      this.leader = leader;
      this.logger.warn(`InboxModule is imported more than once for table "${this.options.tableName}"; the first import processes it.`);
      return;
    }
    leaders.set(this.timerName, this);
    this.timer = setInterval(() => void this.runOnce(), this.options.pollIntervalMs);
    this.schedulerRegistry.addInterval(this.timerName, this.timer);
    this.started = true;
    void this.runOnce();
  }

  async beforeApplicationShutdown(): Promise<void> {
    if (!this.started || this.stopping) return;
    this.stopping = true;
    leadersBySchedule.get(this.schedulerRegistry!)?.delete(this.timerName);
    if (this.schedulerRegistry?.doesExist('interval', this.timerName)) this.schedulerRegistry.deleteInterval(this.timerName);
    clearInterval(this.timer);
    const pass = this.pass ?? Promise.resolve(0);
    let deadline: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      pass.then(() => false),
      new Promise<boolean>((resolve) => (deadline = setTimeout(() => resolve(true), this.options.shutdownTimeoutMs))),
    ]);
    clearTimeout(deadline);
    if (timedOut) this.abandonInFlight();
  }

  /** Asks for a pass soon; called after a receive so new commands do not wait for the next poll. */
  wake(): void {
    void this.runOnce();
  }

  /**
   * Runs one pass now (or joins the running one and makes it look again): sweeps expired leases,
   * then claims and executes due entries until none is left. Resolves with the number of entries
   * executed. Useful in tests to drive the processor without waiting for the poll interval.
   */
  runOnce(): Promise<number> {
    if (this.leader) return this.leader.runOnce();
    // Receive-only instances, an idle duplicate module and a stopping processor run nothing.
    if (!this.started || this.stopping) return this.pass ?? Promise.resolve(0);
    if (Date.now() < this.resumeAt) return Promise.resolve(0);
    if (this.pass) {
      this.wakeRequested = true;
      return this.pass;
    }
    this.pass = this.runPass().finally(() => {
      this.pass = null;
    });
    return this.pass;
  }

  private async runPass(): Promise<number> {
    let executed = 0;
    try {
      do {
        this.wakeRequested = false;
        await this.sweepExpiredLeases();
        executed += await this.claimAndExecute();
      } while (this.wakeRequested && !this.stopping);
      this.reportDatabaseUp();
    } catch (error) {
      this.reportDatabaseDown(error);
    }
    await Promise.allSettled(this.inFlight.values());
    return executed;
  }

  /** Keeps up to `concurrency` handlers busy until nothing is due. */
  private async claimAndExecute(): Promise<number> {
    let executed = 0;
    while (!this.stopping) {
      const free = this.options.concurrency - this.inFlight.size;
      if (free > 0) {
        const claimed = await this.claim(Math.min(free, this.options.batchSize));
        for (const row of claimed) this.start(row);
        executed += claimed.length;
        if (claimed.length > 0) continue;
      }
      if (this.inFlight.size === 0) break;
      // Full, or nothing due right now: wait for a handler to finish, then look again.
      await Promise.race(this.inFlight.values());
    }
    return executed;
  }

  private async claim(limit: number): Promise<InboxRow[]> {
    const now = this.options.clock.now();
    const lockedUntil = new Date(now.getTime() + this.options.leaseMs);
    const { rows } = await this.withConnection((queryRunner) =>
      runQuery(queryRunner, this.sql.claim, [now, limit, this.options.workerId, lockedUntil, randomUUID()]),
    );
    return rows.sort((a, b) => dueTime(a) - dueTime(b));
  }

  private start(row: InboxRow): void {
    const done = this.execute(row)
      .catch((error: unknown) => this.logger.error(`Inbox entry ${row.id}: ${describe(error)}`, stackOf(error)))
      .finally(() => this.inFlight.delete(row.id));
    this.inFlight.set(row.id, done);
  }

  /** Lends a tracked connection to `work` and always gives it back. */
  private async withConnection<T>(work: (queryRunner: QueryRunner) => Promise<T>): Promise<T> {
    const queryRunner = this.dataSource.createQueryRunner();
    this.connections.add(queryRunner);
    try {
      return await work(queryRunner);
    } finally {
      this.connections.delete(queryRunner);
      await queryRunner.release();
    }
  }

  private async execute(row: InboxRow): Promise<void> {
    const startedAt = this.options.clock.now();
    const handler = this.explorer.get(row.command_type);
    if (!handler) {
      const error = new NoHandlerError(`No handler for command type "${row.command_type}" in this worker.`);
      return this.recordFailure(row, undefined, error, startedAt);
    }
    let command: unknown;
    try {
      command = await materializeCommand(row.command_type, row.payload ?? {}, handler.payloadClass);
    } catch (error) {
      return this.recordFailure(row, handler, error, startedAt);
    }
    const outcome = await this.withConnection((queryRunner) => this.executeInTransaction(handler, command, row, startedAt, queryRunner));
    if (outcome.failure && !this.abandoned.delete(row.id)) {
      await this.recordFailure(row, handler, outcome.failure.error, startedAt);
    } else if (outcome.completedAt && this.events.has('completed')) {
      const entry = toEntry({ ...row, status: InboxStatus.Completed, processed_at: outcome.completedAt, error: null, next_retry_at: null, locked_by: null, locked_until: null, lock_token: null });
      await this.events.emit({ type: 'completed', entry, reason: null, error: null });
    }
  }

  /** The handler's transaction; resolves once the transaction is over, with its completion time or failure. */
  private async executeInTransaction(
    handler: RegisteredInboxHandler,
    command: unknown,
    row: InboxRow,
    startedAt: Date,
    queryRunner: QueryRunner,
  ): Promise<{ completedAt?: Date; failure?: { error: unknown } }> {
    try {
      await queryRunner.startTransaction();
      // Row lock + fencing: if the claim was taken over (lease expired), we must not run.
      const locked = await runQuery(queryRunner, this.sql.lockClaimed, [row.id, row.lock_token, String(this.options.leaseMs)]);
      if (locked.rows.length === 0) {
        await queryRunner.rollbackTransaction();
        this.logger.warn(`Inbox entry ${row.id} (${row.command_type}): claim lost before the handler started; skipped.`);
        return {};
      }
      await this.runHandler(handler, command, row, queryRunner);
      const completedAt = this.options.clock.now();
      const params: unknown[] = [row.id, row.lock_token, completedAt];
      if (this.options.attemptHistory) params.push(startedAt, completedAt.getTime() - startedAt.getTime(), this.options.workerId);
      const completed = await runQuery(queryRunner, this.sql.complete, params);
      if (completed.affected !== 1) throw new LeaseExpiredError('claim lost while the handler ran');
      await queryRunner.commitTransaction();
      return { completedAt };
    } catch (error) {
      if (queryRunner.isTransactionActive && !queryRunner.isReleased) {
        await queryRunner.rollbackTransaction().catch(() => destroyConnection(queryRunner, toError(error)));
      }
      return { failure: { error } };
    }
  }

  /**
   * Runs the handler within its time limit. On overrun the connection is destroyed rather than
   * rolled back: the handler may still be running, and its later queries must fail, not autocommit.
   */
  private async runHandler(handler: RegisteredInboxHandler, command: unknown, row: InboxRow, queryRunner: QueryRunner): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const running = handler.instance.execute(command, this.contextFor(row, queryRunner));
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HandlerTimeoutError(handler.timeoutMs)), handler.timeoutMs);
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

  /**
   * Records a failed attempt in its own statement (the handler's writes are already rolled back),
   * together with its history record: Failed with a backoff, or DeadLetter when the error is
   * permanent or the attempts are used up.
   */
  private async recordFailure(
    row: InboxRow,
    handler: RegisteredInboxHandler | undefined,
    error: unknown,
    startedAt: Date,
    on?: QueryRunner,
  ): Promise<void> {
    const failedAttempts = row.retry_count + 1;
    const maxAttempts = handler?.maxAttempts ?? this.explorer.maxAttemptsFor(row.command_type);
    const permanent = error instanceof PermanentError;
    const deadLetter = permanent || failedAttempts >= maxAttempts;
    const reason = deadLetter ? deadLetterReasonOf(error) : null;
    const now = this.options.clock.now();
    let message = describe(error);
    if (deadLetter && !permanent) message = `Gave up after ${failedAttempts} attempt(s): ${message}`;
    message = message.slice(0, MAX_ERROR_LENGTH);
    const nextRetryAt = deadLetter
      ? null
      : new Date(now.getTime() + backoffDelayMs(failedAttempts, handler?.backoff ?? this.explorer.backoffFor(row.command_type)));
    const status = deadLetter ? InboxStatus.DeadLetter : InboxStatus.Failed;
    const params: unknown[] = [row.id, row.lock_token, status, message, nextRetryAt, reason, now];
    if (this.options.attemptHistory) {
      params.push(
        attemptOutcomeOf(error, deadLetter),
        startedAt,
        Math.max(0, now.getTime() - startedAt.getTime()),
        error instanceof Error ? error.name : typeof error,
        stackOf(error)?.slice(0, MAX_STACK_LENGTH) ?? null,
        error instanceof LeaseExpiredError ? row.locked_by : this.options.workerId,
      );
    }
    const { affected } = on
      ? await runQuery(on, this.sql.recordOutcome, params)
      : await this.withConnection((queryRunner) => runQuery(queryRunner, this.sql.recordOutcome, params));
    const label = `Inbox entry ${row.id} (${row.command_type}) attempt ${failedAttempts}/${maxAttempts}`;
    if (affected !== 1) {
      this.logger.warn(`${label} failed, but its claim was taken over meanwhile; outcome not recorded: ${message}`);
      return;
    }
    if (deadLetter) {
      this.logger.error(`${label} dead-lettered (${reason}): ${message}`, permanent ? undefined : stackOf(error));
    } else {
      this.logger.warn(`${label} failed, retry at ${nextRetryAt!.toISOString()}: ${message}`);
    }
    const type = deadLetter ? 'dead_letter' : 'failed';
    if (!this.events.has(type)) return;
    const entry = toEntry({
      ...row,
      status,
      retry_count: failedAttempts,
      error: message,
      next_retry_at: nextRetryAt,
      dead_letter_reason: reason,
      dead_lettered_at: deadLetter ? now : null,
      locked_by: null,
      locked_until: null,
      lock_token: null,
    });
    // Listeners of the lease sweep run after its transaction commits.
    const emit = () => this.events.emit({ type, entry, reason, error: message });
    if (on) this.afterSweep.push(emit);
    else await emit();
  }

  /**
   * Claims whose lease ran out belong to workers that crashed or lost their connection (a live
   * worker holds the row lock, so SKIP LOCKED passes over it). Each counts as a failed attempt,
   * so a message that keeps killing workers ends in DeadLetter instead of looping forever.
   */
  private async sweepExpiredLeases(): Promise<void> {
    this.afterSweep = [];
    await this.withConnection(async (queryRunner) => {
      try {
        await queryRunner.startTransaction();
        const { rows } = await runQuery(queryRunner, this.sql.selectExpiredLeases, [this.options.clock.now(), LEASE_SWEEP_LIMIT]);
        for (const row of rows) {
          const error = new LeaseExpiredError(`Lease expired: worker ${row.locked_by ?? '?'} did not finish within ${this.options.leaseMs} ms (crash, kill or hang).`);
          // The attempt began when the lease did.
          const startedAt = new Date(row.locked_until!.getTime() - this.options.leaseMs);
          await this.recordFailure(row, this.explorer.get(row.command_type), error, startedAt, queryRunner);
        }
        await queryRunner.commitTransaction();
      } catch (error) {
        if (queryRunner.isTransactionActive && !queryRunner.isReleased) await queryRunner.rollbackTransaction().catch(() => undefined);
        throw error;
      }
    });
    for (const emit of this.afterSweep.splice(0)) await emit();
  }

  /** Shutdown ran out of time: cut every connection, so open transactions roll back and nothing hangs. */
  private abandonInFlight(): void {
    for (const id of this.inFlight.keys()) {
      this.abandoned.add(id);
      this.logger.warn(`Inbox entry ${id} was still running after shutdownTimeoutMs; its transaction was rolled back and its lease will expire.`);
    }
    for (const queryRunner of this.connections) void destroyConnection(queryRunner, new Error('nestjs-inbox shutdown timeout'));
  }

  /** One log line per outage; passes back off exponentially (up to 10 s) until one succeeds. */
  private reportDatabaseDown(error: unknown): void {
    this.failedPasses++;
    const delay = backoffDelayMs(this.failedPasses, {
      initialDelayMs: this.options.pollIntervalMs,
      multiplier: 2,
      maxDelayMs: Math.max(this.options.pollIntervalMs, MAX_RECONNECT_DELAY_MS),
      jitter: 0.2,
    });
    this.resumeAt = Date.now() + delay;
    if (this.failedPasses === 1) {
      this.logger.error(`Inbox processor cannot reach the database; retrying with backoff up to ${MAX_RECONNECT_DELAY_MS} ms: ${describe(error)}`);
    }
  }

  private reportDatabaseUp(): void {
    if (this.failedPasses === 0) return;
    this.logger.log(`Inbox processor reaches the database again (after ${this.failedPasses} failed pass(es)).`);
    this.failedPasses = 0;
    this.resumeAt = 0;
  }
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

function dueTime(row: InboxRow): number {
  return (row.next_retry_at ?? row.received_at).getTime();
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

function toError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function stackOf(error: unknown): string | undefined {
  return error instanceof Error ? error.stack : undefined;
}
