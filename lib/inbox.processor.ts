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
import { backoffDelayMs } from './backoff';
import { INBOX_RESOLVED_OPTIONS } from './inbox.constants';
import { InboxConfigurationError } from './errors/inbox.error';
import { describe, InboxExecutor, LeaseExpiredError, stackOf } from './inbox.executor';
import { InboxExplorer } from './inbox.explorer';
import { InboxNotifier } from './inbox.notifier';
import { InboxSql, runQuery, type InboxRow } from './inbox.sql';
import type { ResolvedInboxOptions } from './interfaces/inbox-options.interface';

/** Expired leases handled per sweep; the rest wait for the next tick. */
const LEASE_SWEEP_LIMIT = 100;
/** Longest pause between passes while the database is unreachable. */
const MAX_RECONNECT_DELAY_MS = 10_000;

/** Processors that own a table's loop, per application (one SchedulerRegistry per application). */
const leadersBySchedule = new WeakMap<SchedulerRegistry, Map<string, InboxProcessor>>();

/**
 * The claim → execute → record loop. One pass sweeps expired leases, then claims due entries in
 * batches (committing each claim before any handler starts) and keeps up to `concurrency` batches
 * running, each in a transaction of its own (see InboxExecutor), until nothing is due. Passes never
 * overlap; the timer is registered with @nestjs/schedule's SchedulerRegistry.
 */
@Injectable()
export class InboxProcessor implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(InboxProcessor.name);
  private readonly sql: InboxSql;
  private readonly timerName: string;
  private timer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  /** The processor that already runs this table in this application, when this one is a duplicate. */
  private leader?: InboxProcessor;
  private started = false;
  private stopping = false;
  private pass: Promise<number> | null = null;
  private wakeRequested = false;
  /** Set by polls and explicit runs; wake-ups after a receive skip the lease sweep. */
  private sweepRequested = false;
  /** Consecutive passes that failed on the database; drives the reconnect backoff. */
  private failedPasses = 0;
  /** While the database is down, passes are skipped until this time (ms since epoch). */
  private resumeAt = 0;
  /** Batches in flight, so that a pass can keep `concurrency` of them busy and shutdown can wait for them. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly explorer: InboxExplorer,
    private readonly executor: InboxExecutor,
    private readonly notifier: InboxNotifier,
    @Optional() private readonly schedulerRegistry?: SchedulerRegistry,
  ) {
    this.sql = new InboxSql(options.tableName, options.attemptHistory, options.preparedStatements);
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
    // A notification (or the listener's reconnect) proves the database answers: end any outage backoff.
    void this.notifier.listen(() => {
      this.resumeAt = 0;
      this.wake();
    });
  }

  async beforeApplicationShutdown(): Promise<void> {
    if (!this.started || this.stopping) return;
    this.stopping = true;
    leadersBySchedule.get(this.schedulerRegistry!)?.delete(this.timerName);
    await this.notifier.close();
    if (this.schedulerRegistry?.doesExist('interval', this.timerName)) this.schedulerRegistry.deleteInterval(this.timerName);
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
    const pass = this.pass ?? Promise.resolve(0);
    let deadline: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      pass.then(() => false),
      new Promise<boolean>((resolve) => (deadline = setTimeout(() => resolve(true), this.options.shutdownTimeoutMs))),
    ]);
    clearTimeout(deadline);
    if (timedOut) {
      this.logger.warn(`${this.inFlight.size} batch(es) still running after shutdownTimeoutMs; their transactions were rolled back and their leases will expire.`);
      this.executor.abandon();
    }
  }

  /** Asks for a pass soon; called after a receive so new commands do not wait for the next poll. */
  wake(): void {
    void this.startPass(false);
  }

  /**
   * Runs one pass now (or joins the running one and makes it look again): sweeps expired leases,
   * then claims and executes due entries until none is left. Resolves with the number of entries
   * executed. Useful in tests to drive the processor without waiting for the poll interval.
   */
  runOnce(): Promise<number> {
    return this.startPass(true);
  }

  private startPass(sweep: boolean): Promise<number> {
    if (this.leader) return this.leader.startPass(sweep);
    if (sweep) this.sweepRequested = true;
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
        executed += await this.claimAndExecute();
      } while (this.wakeRequested && !this.stopping);
      this.reportDatabaseUp();
    } catch (error) {
      this.reportDatabaseDown(error);
    }
    await Promise.allSettled(this.inFlight.values());
    return executed;
  }

  /**
   * Keeps up to `concurrency` batches running until nothing is due. Polls (not wake-ups) also
   * sweep expired leases, alongside the running batches. Crash suspects (entries whose last attempt
   * ended with its worker gone) run one at a time with nothing else in flight in this process, so
   * that a poison message can only take itself down.
   */
  private async claimAndExecute(): Promise<number> {
    let executed = 0;
    while (!this.stopping) {
      if (this.sweepRequested) {
        this.sweepRequested = false;
        await this.sweepExpiredLeases();
        if (await this.suspectsDue()) {
          await Promise.allSettled(this.inFlight);
          executed += await this.runSuspects();
        }
      }
      if (this.inFlight.size < this.options.concurrency) {
        const claimed = await this.claim(this.options.batchSize, false);
        if (claimed.length > 0) {
          const done: Promise<void> = this.executor
            .executeBatch(claimed)
            .catch((error: unknown) => this.logger.error(`Inbox batch failed: ${describe(error)}`, stackOf(error)))
            .finally(() => this.inFlight.delete(done));
          this.inFlight.add(done);
          executed += claimed.length;
          continue;
        }
      }
      if (this.inFlight.size === 0) break;
      // Full, or nothing due right now: wait for a batch to finish, then look again.
      await Promise.race(this.inFlight);
    }
    await Promise.allSettled(this.inFlight);
    return executed;
  }

  private async suspectsDue(): Promise<boolean> {
    const { rows } = await this.executor.withConnection((queryRunner) => runQuery(queryRunner, this.sql.anySuspectDue, [this.options.clock.now()]));
    return rows.length > 0;
  }

  private async runSuspects(): Promise<number> {
    let executed = 0;
    while (!this.stopping) {
      const [suspect] = await this.claim(1, true);
      if (!suspect) break;
      await this.executor.executeBatch([suspect]);
      executed++;
    }
    return executed;
  }

  private async claim(limit: number, suspects: boolean): Promise<InboxRow[]> {
    const now = this.options.clock.now();
    const lockedUntil = new Date(now.getTime() + this.options.leaseMs);
    const { rows } = await this.executor.withConnection((queryRunner) =>
      runQuery(queryRunner, suspects ? this.sql.claimSuspects : this.sql.claim, [now, limit, this.options.workerId, lockedUntil, randomUUID()]),
    );
    return rows.sort((a, b) => dueTime(a) - dueTime(b));
  }

  /**
   * Claims whose lease ran out belong to workers that crashed or lost their connection (a live
   * worker holds the row lock, so SKIP LOCKED passes over it). Each counts as a failed attempt,
   * so a message that keeps killing workers ends in DeadLetter instead of looping forever.
   */
  private async sweepExpiredLeases(): Promise<void> {
    const listeners = await this.executor.withConnection(async (queryRunner) => {
      // The usual answer is "none": find that out with one cheap statement, no transaction.
      const expired = await runQuery(queryRunner, this.sql.anyExpiredLease, [this.options.clock.now()]);
      if (expired.rows.length === 0) return [];
      try {
        await queryRunner.startTransaction();
        const { rows } = await runQuery(queryRunner, this.sql.selectExpiredLeases, [this.options.clock.now(), LEASE_SWEEP_LIMIT]);
        const failures = rows.map((row) => ({
          row,
          handler: this.explorer.get(row.command_type),
          error: new LeaseExpiredError(`Lease expired: worker ${row.locked_by ?? '?'} did not finish within ${this.options.leaseMs} ms (crash, kill or hang).`),
          // The attempt began when the lease did.
          startedAt: new Date(row.locked_until!.getTime() - this.options.leaseMs),
        }));
        const calls = await this.executor.recordFailures(failures, queryRunner);
        await queryRunner.commitTransaction();
        return calls;
      } catch (error) {
        if (queryRunner.isTransactionActive && !queryRunner.isReleased) await queryRunner.rollbackTransaction().catch(() => undefined);
        throw error;
      }
    });
    // Listeners run once the sweep's transaction has committed.
    for (const call of listeners) await call();
  }

  /** One log line per outage; passes back off exponentially (up to 10 s) until one succeeds. */
  private reportDatabaseDown(error: unknown): void {
    this.failedPasses++;
    const delay = backoffDelayMs(this.failedPasses, {
      initialDelayMs: Math.min(this.options.pollIntervalMs, MAX_RECONNECT_DELAY_MS),
      multiplier: 2,
      maxDelayMs: MAX_RECONNECT_DELAY_MS,
      jitter: 0.2,
    });
    this.resumeAt = Date.now() + delay;
    // Retry when the backoff ends rather than at the next poll, which may be far away.
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.startPass(true), delay + 1);
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

function dueTime(row: InboxRow): number {
  return (row.next_retry_at ?? row.received_at).getTime();
}

