import {
  Inject,
  Injectable,
  Logger,
  Optional,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import type { DataSource } from 'typeorm';
import { InboxListeners } from '../discovery/inbox-listeners';
import { InboxConfigurationError } from '../errors/inbox.error';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS, INBOX_TIMER_NAME } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { describeError as describe } from '../errors/describe-error';
import { backoffDelayMs } from '../state/backoff';
import { pgPoolOf } from '../store/connection';
import { InboxNotifier } from '../wake/notifier';
import { WakeSignal } from '../wake/wake-signal';
import { BatchExecutor, type ClaimRequest } from './batch-executor';
import { WorkerConnections } from './connections';
import { LeaseRescuer } from './lease-rescuer';
import { settlesWithin } from './settles-within';
import { UnclaimedWarning } from './unclaimed-warning';

/** Longest pause between passes while the database is unreachable. */
const MAX_RECONNECT_DELAY_MS = 10_000;

/** What `InboxProcessor.state` tells. */
export interface InboxWorkerState {
  /** This application processes the table (a worker, started, not stopping). */
  running: boolean;
  /** The last pass reached the database. */
  databaseReachable: boolean;
  /** Passes in a row that failed on the database (0 when it is reachable). */
  failedPasses: number;
}

/** Processors that own a table's loop, per application (one SchedulerRegistry per application). */
const leadersBySchedule = new WeakMap<SchedulerRegistry, Map<string, InboxProcessor>>();

/**
 * The worker's loop. A pass (on the poll timer, a wake-up, or `runOnce`) keeps up to `concurrency`
 * batches running (see BatchExecutor) until nothing is due; polls also sweep expired leases (see
 * LeaseRescuer) and run crash suspects alone. Passes never overlap; the timer is registered with
 * @nestjs/schedule's SchedulerRegistry; while the database is away, passes back off.
 */
@Injectable()
export class InboxProcessor implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(InboxProcessor.name);
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
  /** While the database is down, passes are skipped until this time (monotonic ms: the wall clock may be set back). */
  private resumeAt = 0;
  /** Claims in flight, so that a pass can wait for them and shutdown too. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Batches running (a claim may run as several): at most `concurrency`. */
  private busySlots = 0;
  /** Batches (with entries) that have ended, ever: tells a claim that found nothing whether one ended meanwhile. */
  private batchesEnded = 0;

  constructor(
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    private readonly executor: BatchExecutor,
    private readonly rescuer: LeaseRescuer,
    private readonly unclaimed: UnclaimedWarning,
    private readonly connections: WorkerConnections,
    private readonly notifier: InboxNotifier,
    private readonly listeners: InboxListeners,
    private readonly wakeSignal: WakeSignal,
    @Inject(INBOX_TIMER_NAME) private readonly timerName: string,
    @Optional() private readonly schedulerRegistry?: SchedulerRegistry,
  ) {}

  get isRunning(): boolean {
    return this.started && !this.stopping;
  }

  /** How the loop fares: whether it runs, and how many passes in a row failed on the database. */
  get state(): InboxWorkerState {
    const leader = this.leader ?? this;
    return { running: leader.isRunning, databaseReachable: leader.failedPasses === 0, failedPasses: leader.failedPasses };
  }

  onApplicationBootstrap(): void {
    if (!this.options.worker) return;
    // New entries received (or replayed) in this process wake the loop at once.
    this.wakeSignal.listen(() => this.wake());
    if (!this.schedulerRegistry) {
      throw new InboxConfigurationError(
        'nestjs-inbox needs @nestjs/schedule: import ScheduleModule.forRoot() once in your root module, ' +
          'or set `worker: false` on a receive-only instance.',
      );
    }
    // A second InboxModule on the same table and data source in this application must not start a
    // second loop; it hands its wake-ups to the first (see timerNameOf).
    const leaders = leadersBySchedule.get(this.schedulerRegistry) ?? new Map<string, InboxProcessor>();
    leadersBySchedule.set(this.schedulerRegistry, leaders);
    const leader = leaders.get(this.timerName);
    if (leader) {
      this.leader = leader;
      this.logger.warn(`InboxModule is imported more than once for table "${this.options.tableName}" on one data source (${this.timerName}); the first import processes it.`);
      return;
    }
    leaders.set(this.timerName, this);
    this.warnAboutPoolSize();
    this.timer = setInterval(() => void this.startPass(true), this.options.pollIntervalMs);
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
    if (!(await settlesWithin(this.pass ?? Promise.resolve(0), this.options.shutdownTimeoutMs))) {
      this.logger.warn(`${this.inFlight.size} batch(es) still running after shutdownTimeoutMs; their transactions were rolled back and their leases will expire.`);
      this.connections.abandon();
    }
    // The starts given up here, and those a pass could not take back while the database was away
    // (startsToTakeBack): taken back now, or the next worker's sweep charges attempts that never ran.
    // (Within shutdownTimeoutMs again: with the database away, a connection may never come.)
    const takenBack = this.executor.unstartAbandoned().catch((error: unknown) => this.logger.warn(`Attempts given up at shutdown not taken back (their lease expiry may charge them): ${describe(error)}`));
    await settlesWithin(takenBack, this.options.shutdownTimeoutMs);
    // Listeners of the last outcomes (each bounded by listenerTimeoutMs), before the pool closes.
    await this.listeners.settle();
  }

  /**
   * Each batch holds a connection from its claim to its outcome; the sweep and `receive` need one
   * besides. A smaller pool makes batches wait for each other (and a handler's own `receive`
   * without its manager wait for ever): say so at boot.
   */
  private warnAboutPoolSize(): void {
    const poolSize = (pgPoolOf(this.dataSource) as { options?: { max?: number } }).options?.max;
    const needed = this.options.concurrency + 2;
    if (poolSize === undefined || poolSize >= needed) return;
    this.logger.warn(
      `The connection pool holds ${poolSize} connection(s), fewer than the inbox needs for concurrency (${this.options.concurrency}) ` +
        `+ 2 (the lease sweep and receive): batches will wait for each other. Raise the pool (TypeORM \`extra: { max: ${needed} }\` or \`poolSize\`) ` +
        'or lower `concurrency`.',
    );
  }

  /** Asks for a pass soon: new commands do not wait for the next poll. */
  wake(): void {
    void this.startPass(false);
  }

  /**
   * Runs one pass now (or joins the running one and makes it look again): sweeps expired leases,
   * then claims and executes due entries until none is left. Resolves with the number of entries
   * executed. Useful in tests to drive the processor without waiting for the poll interval.
   */
  runOnce(): Promise<number> {
    return this.startPass(true, true);
  }

  /** `now`: an explicit request, not held back by the outage backoff (polls and wake-ups are). */
  private startPass(sweep: boolean, now = false): Promise<number> {
    if (this.leader) return this.leader.startPass(sweep, now);
    if (sweep) this.sweepRequested = true;
    // Receive-only instances, an idle duplicate module and a stopping processor run nothing.
    if (!this.started || this.stopping) return this.pass ?? Promise.resolve(0);
    if (!now && performance.now() < this.resumeAt) return Promise.resolve(0);
    if (this.pass) {
      // The running pass looks again when it sees the request; one that came after its last look
      // (while it was finishing) gets a pass of its own, which this promise covers too.
      this.wakeRequested = true;
      return this.pass.then((executed) => (this.wakeRequested && this.pass === null ? this.startPass(false).then((more) => executed + more) : executed));
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
        await this.executor.takeBackStarts();
        await this.rescuer.sweep();
        await this.unclaimed.check();
        if (await this.executor.suspectsDue()) {
          await Promise.allSettled(this.inFlight);
          executed += await this.runSuspects();
        }
      }
      if (this.busySlots < this.options.concurrency) {
        const spread = this.options.concurrency - this.busySlots;
        const endedBefore = this.batchesEnded;
        const claimed = await this.startBatch({ limit: this.options.batchSize, suspects: false, spread });
        if (claimed > 0) {
          executed += claimed;
          continue;
        }
        // A batch that ended while this claim looked may have handed its key to an entry the claim's
        // snapshot did not see yet: look again, or the pass would end with that entry due.
        if (this.batchesEnded !== endedBefore) continue;
      }
      if (this.inFlight.size === 0) break;
      // Full, or nothing due right now: wait for a batch to finish, then look again.
      await Promise.race(this.inFlight);
    }
    await Promise.allSettled(this.inFlight);
    return executed;
  }

  /**
   * Starts a batch on a connection of its own and resolves with how many entries it claimed; the
   * batch keeps running in the background (`inFlight`). A failed claim rejects (the pass backs off).
   */
  private async startBatch(request: ClaimRequest): Promise<number> {
    // A claim takes one slot; once it has answered, each batch it runs as holds one until it ends.
    let held = 1;
    this.busySlots += held;
    const free = (slots: number) => {
      held -= slots;
      this.busySlots -= slots;
    };
    const batch = this.executor.run(request);
    const done: Promise<void> = batch.done
      .catch((error: unknown) => this.logger.error(`Inbox batch failed: ${describe(error)}`, error instanceof Error ? error.stack : undefined))
      .finally(() => {
        this.inFlight.delete(done);
        free(held);
      });
    this.inFlight.add(done);
    const claimed = await batch.claimed.catch(async (error: unknown) => {
      await done;
      throw error;
    });
    if (held > 0 && claimed.finished.length > 0) {
      this.busySlots += claimed.finished.length - held;
      held = claimed.finished.length;
      for (const finished of claimed.finished) {
        // Errors are the claim's `done` to report; this only frees the batch's slot and wakes the loop.
        const ended: Promise<void> = finished
          .catch(() => undefined)
          .finally(() => {
            this.inFlight.delete(ended);
            this.batchesEnded++;
            if (held > 0) free(1);
          });
        this.inFlight.add(ended);
      }
    }
    if (claimed.count === 0) await done; // gives its connection back at once
    return claimed.count;
  }

  private async runSuspects(): Promise<number> {
    let executed = 0;
    while (!this.stopping) {
      const claimed = await this.startBatch({ limit: 1, suspects: true });
      if (claimed === 0) break;
      await Promise.allSettled(this.inFlight);
      executed++;
    }
    return executed;
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
    this.resumeAt = performance.now() + delay;
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

