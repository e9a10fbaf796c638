import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { QueryRunner } from 'typeorm';
import { InboxExplorer, type RegisteredInboxHandler } from '../discovery/inbox.explorer';
import { materializeCommand } from '../discovery/payload-materializer';
import { AbortedTransactionError, HandlerTimeoutError, LeaseExpiredError } from '../errors/inbox.error';
import { INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { InboxContext } from '../interfaces/inbox-handler.interface';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { OutcomeWriter, type FailedAttempt } from '../outcomes/outcome-writer';
import { destroyConnection, runInIndexOrder, runQuery } from '../store/connection';
import { clockTime } from '../store/database-clock';
import { isConnectionError, isTransactionConflict } from '../store/database-errors';
import type { InboxRow } from '../store/schema';
import { InboxStatements } from '../store/statements';
import { InboxTracing, type AttemptSpan } from '../telemetry/inbox-tracing';
import { WorkerConnections } from './connections';
import { dealUnits, runUnits, settleRuns } from './key-runs';

/** One claimed entry on its way through a batch. */
interface Job {
  row: InboxRow;
  handler: RegisteredInboxHandler;
  command: unknown;
  /** When its handler started and finished (`performance.now()`, monotonic). */
  startedAt: number;
  finishedAt: number;
  /** When its batch was claimed (`performance.now()`). */
  claimedAt: number;
  /** Its `process` span, opened when its handler first starts. */
  span?: AttemptSpan;
  /** Whether its attempt has started (its span opened, its wait measured): once, whatever the reruns. */
  started?: boolean;
}

type GroupResult =
  | { committed: true; completed: InboxRow[]; completedJobs: Job[]; failed: Array<{ job: Job; error: unknown }> }
  | { committed: false; culprit?: { job: Job; error: unknown }; error?: unknown; rest: Job[]; connectionLost?: boolean; beforeHandler?: boolean };

/**
 * What the processor asks for: up to `limit` due entries, crash suspects or the others. `spread`:
 * how many batches the claimed entries may run as, side by side (the processor's free slots).
 */
export interface ClaimRequest {
  limit: number;
  suspects: boolean;
  spread?: number;
}

/**
 * What a claim took: how many entries, run as how many batches side by side, and each batch's end
 * (so that its slot frees as soon as it is over: a batch does not wait for its siblings).
 */
export interface Claimed {
  count: number;
  batches: number;
  finished: Array<Promise<void>>;
}

/** A claim under way: `claimed` settles when the claim has answered, `done` when its batches are over. */
export interface RunningBatch {
  claimed: Promise<Claimed>;
  done: Promise<void>;
}

/**
 * Runs a batch. It holds one connection from its claim to its last outcome: the claim (committed
 * on its own), then one transaction, optimistically without savepoints: its handlers'
 * writes and every entry's Completed status commit together. When a handler fails, the transaction
 * rolls back, that attempt is recorded as failed, and the rest runs again with a savepoint per
 * entry, so that a failing handler only loses its own writes. Outcomes go through OutcomeWriter.
 */
@Injectable()
export class BatchExecutor {
  private readonly logger = new Logger('InboxProcessor');
  /** Whether the last claim took as many entries as it asked for: more are probably due. */
  private backlog = false;
  /** Crash suspects whose attempt this worker started and has not recorded yet: id → claim token. */
  private readonly started = new Map<string, string>();
  /**
   * Crash suspects whose start was committed but whose handler never ran, and that could not be
   * handed back (the database was away): id → claim token. Their start is taken back before the
   * next lease sweep (takeBackStarts), which then hands them back uncharged.
   */
  private readonly startsToTakeBack = new Map<string, string>();

  constructor(
    private readonly sql: InboxStatements,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly explorer: InboxExplorer,
    private readonly writer: OutcomeWriter,
    private readonly connections: WorkerConnections,
    private readonly tracing: InboxTracing,
  ) {}

  /**
   * Takes a connection, claims due entries on it and runs them. The claim comes only once the
   * connection is in hand, so no lease runs while a batch waits for the pool. A claim that took
   * fewer entries than it asked for (the queue is short) runs them as several batches side by side,
   * up to `spread`, each on a connection of its own: a batch runs its handlers one after the
   * other, and the entries of different ordering keys (or slow handlers) should not wait for each
   * other while slots are free.
   */
  run(request: ClaimRequest): RunningBatch {
    let reportClaimed!: (claimed: Claimed) => void;
    let failClaim!: (error: unknown) => void;
    const claimed = new Promise<Claimed>((resolve, reject) => {
      reportClaimed = resolve;
      failClaim = reject;
    });
    let answered = false;
    let running: Array<Promise<void>> = [];
    // The claim's connection runs the first batch and goes back to the pool when that batch ends
    // (its slot frees then too); the other batches hold connections of their own.
    const first = this.connections.use(async (queryRunner) => {
      const rows = await this.claim(queryRunner, request);
      answered = true;
      const units = runUnits(rows);
      // Fewer units than places (a short claim, or keys' runs): the units spread over the free
      // slots, so that keys do not wait for each other in one batch.
      const spread = units.length < request.limit ? Math.min(request.spread ?? 1, units.length) : 1;
      const [firstGroup, ...others] = dealUnits(units, Math.max(1, spread));
      if (rows.length === 0) {
        reportClaimed({ count: 0, batches: 1, finished: [] });
        return;
      }
      const firstRun = this.startAndRun(firstGroup, queryRunner, request.suspects);
      running = [firstRun, ...others.map((group) => this.connections.use((other) => this.startAndRun(group, other, request.suspects)))];
      reportClaimed({ count: rows.length, batches: running.length, finished: running });
      await firstRun.catch(() => undefined); // reported below, with the others
    });
    // Over when every batch is: a failure is reported once all of them have ended.
    const done = first.then(
      async () => {
        const outcomes = await Promise.allSettled(running);
        const failure = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
        if (failure) throw failure.reason;
      },
      async (error: unknown) => {
        await Promise.allSettled(running);
        throw error;
      },
    );
    // Until the claim has answered, a failure (no connection, say) is the claim's; after, the batch's.
    return {
      claimed,
      done: done.catch((error: unknown) => {
        if (!answered) return failClaim(error);
        throw error;
      }),
    };
  }

  /** Whether a crash suspect of a type this worker handles is due (an indexed probe, usually empty). */
  suspectsDue(): Promise<boolean> {
    return this.connections.use(async (queryRunner) => {
      const { rows } = await runQuery(queryRunner, this.sql.anySuspectDue, [clockTime(this.options.clock), this.explorer.commandTypes()]);
      return rows.length > 0;
    });
  }

  /**
   * Claims due entries. While there is a backlog (the last claim was full), the claim walks the due
   * index in order whatever the planner guesses (runInIndexOrder, two more round trips); when the
   * queue is short, the plain statement answers sooner and no plan of it can cost much.
   */
  private async claim(queryRunner: QueryRunner, { limit, suspects }: ClaimRequest): Promise<InboxRow[]> {
    // The statement takes as many as the processor asks for: the batch size, or one crash suspect.
    const params = [clockTime(this.options.clock), this.options.workerId, `${this.options.leaseMs} milliseconds`, randomUUID(), this.explorer.commandTypes()];
    const inIndexOrder = !suspects && this.backlog;
    const statement = suspects ? this.sql.claimSuspects : this.sql.claim;
    const { rows } = inIndexOrder ? await runInIndexOrder(queryRunner, statement, params) : await runQuery(queryRunner, statement, params);
    // Full: its heads and their runs took every place it had (a long run alone counts too).
    if (!suspects) this.backlog = rows.length >= limit;
    return rows;
  }

  /**
   * Runs the claimed rows. Nothing is stamped for an ordinary batch: if its worker dies, the sweep
   * hands every row back uncharged as a crash suspect (decideLeaseExpiry). A crash suspect runs
   * alone and its start is stamped right before the transaction of its handler (see runGroup):
   * only then can its worker's death be charged to it.
   */
  private async startAndRun(rows: InboxRow[], queryRunner: QueryRunner, suspect: boolean): Promise<void> {
    const handled = rows.filter((row) => this.explorer.get(row.command_type));
    // Claims only take types this worker handles; a handler missing here would be a bug: hand back.
    if (handled.length < rows.length) {
      await this.writer.release(queryRunner, rows.filter((row) => !handled.includes(row)), false, 'no handler for its type in this worker');
    }
    try {
      if (handled.length > 0) await this.execute(handled, queryRunner, suspect);
    } finally {
      // Recorded, or given up (see unstartAbandoned): either way no longer this worker's to take back.
      if (suspect && !this.connections.isAbandoned) for (const row of rows) this.started.delete(row.id);
    }
  }

  /**
   * After shutdown gave up on the work in flight (WorkerConnections.abandon): the crash suspects
   * whose attempt had started here are not crashes, and their start is taken back, so that the
   * lease's expiry hands them back uncharged (decideLeaseExpiry). Otherwise a handler slower than
   * shutdownTimeoutMs would be charged at every deploy until it is dead-lettered.
   */
  async unstartAbandoned(): Promise<void> {
    for (const [id, token] of this.started) this.startsToTakeBack.set(id, token);
    this.started.clear();
    await this.takeBackStarts();
  }

  /** Takes back the starts of crash suspects whose handler never ran (see startsToTakeBack); before a lease sweep. */
  async takeBackStarts(): Promise<void> {
    if (this.startsToTakeBack.size === 0) return;
    const [ids, tokens] = [[...this.startsToTakeBack.keys()], [...this.startsToTakeBack.values()]];
    await this.connections.use((queryRunner) => runQuery(queryRunner, this.sql.unstart, [ids, tokens]));
    for (const id of ids) this.startsToTakeBack.delete(id);
  }

  /** Stamps the start of a crash suspect's attempt, committed on its own; the ids still ours. */
  private async start(queryRunner: QueryRunner, rows: InboxRow[]): Promise<string[]> {
    const { rows: started } = await runQuery<{ id: string }>(queryRunner, this.sql.start, [
      rows.map((row) => row.id),
      rows[0].lock_token,
      rows.map((row) => this.explorer.get(row.command_type)!.maxAttempts),
      clockTime(this.options.clock),
    ]);
    return started.map((row) => row.id);
  }

  private async execute(rows: InboxRow[], batchConnection: QueryRunner, suspect: boolean): Promise<void> {
    let failures: FailedAttempt[] = [];
    let jobs: Job[] = [];
    const claimedAt = performance.now();
    // A key's run stops at an entry that cannot even be materialised (see settleRuns).
    const cut = new Set<string>();
    for (const row of rows) {
      if (row.ordering_key !== null && cut.has(row.ordering_key)) continue;
      const handler = this.explorer.get(row.command_type)!;
      const startedAt = performance.now();
      try {
        const command = await materializeCommand(row.command_type, row.payload ?? {}, handler.payloadClass, handler.payloadValidation);
        jobs.push({ row, handler, command, startedAt, finishedAt: startedAt, claimedAt });
      } catch (error) {
        failures.push({ row, error, startedAt, finishedAt: performance.now(), span: this.tracing.startAttempt(row), handlerRan: false });
        if (row.ordering_key !== null) cut.add(row.ordering_key);
      }
    }
    const released = new Set<string>();
    // Every job, whatever reruns drop from `jobs` later: their spans must all end.
    const claimedJobs = [...jobs];
    let completed: InboxRow[] = [];
    let completedJobs: Job[] = [];
    let isolated = false;
    let conflicts = 0;
    let runs = 0;
    while (jobs.length > 0 && !this.connections.isAbandoned) {
      if (runs++ > 0) {
        // A rerun gets each command as stored: a handler may have changed the object it was given.
        const refreshed = await this.onConnection(batchConnection, (queryRunner) => this.refreshCommands(queryRunner, jobs, failures)).catch((error: unknown) => ({ error }));
        if ('error' in refreshed) {
          await this.handBackLost(jobs, refreshed.error, released, 'its batch lost its connection');
          break;
        }
        jobs = refreshed.jobs;
        if (jobs.length === 0) break;
      }
      const savepoints = isolated && jobs.length > 1;
      const result = await this.onConnection(batchConnection, (queryRunner) => this.runGroup(jobs, queryRunner, savepoints, suspect));
      if (this.connections.isAbandoned) break; // leases will expire; nothing more to record from here
      if (result.committed) {
        completed = result.completed;
        completedJobs = result.completedJobs;
        for (const { job, error } of result.failed) failures.push(failureOf(job, error));
        break;
      }
      if (result.culprit) {
        failures.push(failureOf(result.culprit.job, result.culprit.error));
      } else if (isTransactionConflict(result.error)) {
        // The server ended the transaction to break a deadlock with another one (an operator's
        // action crossing this batch's hand-over): no handler's doing. It runs again as it was;
        // should that keep happening, its entries go back uncharged for a later claim.
        if (++conflicts < CONFLICT_RERUNS) continue;
        await this.onConnection(batchConnection, (queryRunner) =>
          this.writer.release(queryRunner, jobs.map((job) => job.row), false, 'its batch was ended to break a deadlock, again and again'),
        );
        for (const job of jobs) {
          released.add(job.row.id);
          this.tracing.endAttempt(job.span, 'released', result.error);
        }
        break;
      } else if (suspect && result.beforeHandler && lostConnection(result)) {
        // A crash suspect's connection broke before its handler ran (at its lock, or its start's
        // answer lost): its attempt did not run. Back uncharged, still a suspect; with the database
        // away, its start is taken back later, before a sweep could charge it.
        if (!(await this.handBackLost(jobs, result.error, released, 'its connection broke before its handler started'))) {
          for (const job of jobs) this.startsToTakeBack.set(job.row.id, job.row.lock_token!);
        }
        break;
      } else if (!suspect && lostConnection(result)) {
        await this.handBackLost(jobs, result.error, released, 'its batch lost its connection');
        break;
      } else if (isolated && jobs.length > 1) {
        // Failed as a whole again, and no handler's statement to blame: the batch's own work did
        // (a constraint checked at commit, a statement timeout on a key's lock). Each entry then
        // runs in a transaction of its own: only one whose own transaction fails is charged.
        const alone = await this.runEachAlone(jobs, batchConnection, suspect);
        completed = alone.completed;
        completedJobs = alone.completedJobs;
        failures.push(...alone.failures);
        if (alone.lost) await this.handBackLost(alone.lost.jobs, alone.lost.error, released, 'its batch lost its connection');
        break;
      } else if (isolated || jobs.length === 1) {
        // The transaction itself failed (commit, connection): every attempt in it failed.
        for (const job of jobs) failures.push(failureOf(job, result.error));
        break;
      }
      jobs = result.rest;
      isolated = true;
    }
    if (this.connections.isAbandoned) {
      this.endSpans([...claimedJobs, ...failures], () => 'not_recorded');
      return;
    }
    try {
      // Runs that broke: what came after the entry that did not complete goes back, still waiting.
      const settled = rows.some((row) => row.waiting)
        ? settleRuns(rows, new Set(completedJobs.map((job) => job.row.id)), new Set(failures.map((f) => f.row.id)), released)
        : NO_RUNS;
      if (settled.release.length > 0) {
        await this.onConnection(batchConnection, (queryRunner) =>
          this.writer.release(queryRunner, settled.release, false, 'an earlier entry of its ordering key did not complete in its batch'),
        );
        const back = new Set(settled.release.map((row) => row.id));
        this.endSpans([...claimedJobs, ...failures], (attempt) => (back.has(attempt.row.id) && !released.has(attempt.row.id) ? 'released' : undefined));
        failures = failures.filter((failure) => !settled.dropFailures.has(failure.row.id));
      }
      // Failures first, in their own statement (the handlers' writes are already rolled back).
      if (failures.length > 0) await this.onConnection(batchConnection, (queryRunner) => this.writer.fail(queryRunner, failures));
    } finally {
      // Then the completions, committed whatever became of the records above: counted, their
      // spans ended, the listeners told.
      this.writer.completed(completed, completedJobs);
    }
  }

  /**
   * Runs each job in a transaction of its own, in order; a key's later entries are left out once
   * one of its entries did not complete (settleRuns hands them back). What completed and what
   * failed; when a connection broke under one, that one and those not run yet are `lost`.
   */
  private async runEachAlone(
    jobs: Job[],
    batchConnection: QueryRunner,
    suspect: boolean,
  ): Promise<{ completed: InboxRow[]; completedJobs: Job[]; failures: FailedAttempt[]; lost?: { jobs: Job[]; error: unknown } }> {
    const completed: InboxRow[] = [];
    const completedJobs: Job[] = [];
    const failures: FailedAttempt[] = [];
    const broken = new Set<string>();
    const runnable = (job: Job) => job.row.ordering_key === null || !broken.has(job.row.ordering_key);
    const refreshed = await this.onConnection(batchConnection, (queryRunner) => this.refreshCommands(queryRunner, jobs, failures)).catch((error: unknown) => ({ error }));
    if ('error' in refreshed) return { completed, completedJobs, failures, lost: { jobs, error: refreshed.error } };
    jobs = refreshed.jobs;
    for (const [position, job] of jobs.entries()) {
      if (this.connections.isAbandoned) break;
      if (!runnable(job)) continue;
      const result = await this.onConnection(batchConnection, (queryRunner) => this.runGroup([job], queryRunner, false, suspect));
      if (result.committed) {
        completed.push(...result.completed);
        completedJobs.push(...result.completedJobs);
        continue;
      }
      if (!suspect && lostConnection(result)) return { completed, completedJobs, failures, lost: { jobs: jobs.slice(position).filter(runnable), error: result.error } };
      failures.push(result.culprit ? failureOf(result.culprit.job, result.culprit.error) : failureOf(job, result.error));
      if (job.row.ordering_key !== null) broken.add(job.row.ordering_key);
    }
    return { completed, completedJobs, failures };
  }

  /**
   * Gives each job its command again, from the payload as stored: the batch runs them again, and a
   * handler may have changed the command object (or, without a payload class, the payload itself)
   * in its run before; what commits must be what one run of the stored command writes. A command
   * that cannot be made this time (a validator that calls out, failing) is a failed attempt, as at
   * the claim, and cuts its key's run. Returns the jobs to run; throws when the payloads cannot be read.
   */
  private async refreshCommands(queryRunner: QueryRunner, jobs: Job[], failures: FailedAttempt[]): Promise<{ jobs: Job[] }> {
    const { rows } = await runQuery<{ id: string; payload: Record<string, unknown> | null }>(queryRunner, this.sql.payloadsOf, [jobs.map((job) => job.row.id)]);
    const stored = new Map(rows.map((row) => [row.id, row.payload]));
    const kept: Job[] = [];
    const cut = new Set<string>();
    for (const job of jobs) {
      if (job.row.ordering_key !== null && cut.has(job.row.ordering_key)) continue;
      // One no longer stored keeps its command: its lock finds it gone.
      if (stored.has(job.row.id)) job.row.payload = stored.get(job.row.id)!;
      try {
        job.command = await materializeCommand(job.row.command_type, job.row.payload ?? {}, job.handler.payloadClass, job.handler.payloadValidation);
        kept.push(job);
      } catch (error) {
        // Its handler does not run this time: no handler time to record.
        failures.push({ ...failureOf(job, error), handlerRan: false });
        if (job.row.ordering_key !== null) cut.add(job.row.ordering_key);
      }
    }
    return { jobs: kept };
  }

  /**
   * The connection broke under these jobs (their transaction rolled back): nobody's fault that is
   * known. Back, uncharged, as crash suspects (to run alone) if the database can be reached; else
   * their leases expire and the sweep does the same.
   */
  private async handBackLost(jobs: Job[], error: unknown, released: Set<string>, why: string): Promise<boolean> {
    const handedBack = await this.connections.use((queryRunner) => this.writer.release(queryRunner, jobs.map((job) => job.row), true, why)).then(
      () => true,
      () => false,
    );
    for (const job of jobs) {
      released.add(job.row.id);
      this.tracing.endAttempt(job.span, 'released', error);
    }
    return handedBack;
  }

  /** Ends each distinct span once, with the outcome `outcomeOf` gives it (none: left open for later). */
  private endSpans(attempts: Array<{ row: InboxRow; span?: AttemptSpan }>, outcomeOf: (attempt: { row: InboxRow }) => 'released' | 'not_recorded' | undefined): void {
    const ended = new Set<AttemptSpan>();
    for (const attempt of attempts) {
      const outcome = outcomeOf(attempt);
      if (!attempt.span || !outcome || ended.has(attempt.span)) continue;
      ended.add(attempt.span);
      this.tracing.endAttempt(attempt.span, outcome);
    }
  }

  /** Runs `work` on the batch's connection, or on a fresh one when a timeout has cut that one. */
  private onConnection<T>(preferred: QueryRunner, work: (queryRunner: QueryRunner) => Promise<T>): Promise<T> {
    return preferred.isReleased ? this.connections.use(work) : work(preferred);
  }

  /**
   * One transaction over a group: lock the claimed rows (proving the claims are still ours), run
   * the handlers, complete the successful entries in one statement, commit.
   */
  private async runGroup(jobs: Job[], queryRunner: QueryRunner, savepoints: boolean, suspect: boolean): Promise<GroupResult> {
    const completed: Job[] = [];
    const failed: Array<{ job: Job; error: unknown }> = [];
    // Keys whose run broke in this group: their later entries do not run (see settleRuns).
    const broken = new Set<string>();
    let handlerStarted = false;
    try {
      if (suspect) {
        // A crash suspect (alone in its group) has its start committed on the batch's own
        // connection, on its own, right before its transaction: from here its worker's death is
        // its. No second connection is needed (a pool of one would hold it back until the server
        // ended the batch's idle transaction, and the handler would then run on a dead one).
        const started = await this.start(queryRunner, jobs.map((job) => job.row));
        if (started.length < jobs.length) throw new LeaseExpiredError('claim lost before the handler started');
        for (const job of jobs) this.started.set(job.row.id, job.row.lock_token!);
      }
      await queryRunner.startTransaction();
      const client = (await queryRunner.connect()) as TransactionStatusSource;
      const locked = await runQuery<{ id: string }>(queryRunner, suspect ? this.sql.lockSuspect : this.sql.lockClaimed, [
        jobs.map((job) => job.row.id),
        jobs[0].row.lock_token,
        String(this.options.leaseMs),
      ]);
      const ours = new Set(locked.rows.map((row) => row.id));
      // When the batch last spoke to the server. Its transaction may sit idle for no longer than a
      // lease (idle_in_transaction_session_timeout, and the watch on quiet connections): handlers
      // that do no database work, one after the other (a key's run), would add up past it and the
      // batch would be ended as a frozen one. A handler that could take it there is preceded by a ping.
      let spokeAt = performance.now();
      for (const [index, job] of jobs.entries()) {
        if (!ours.has(job.row.id)) {
          this.logger.warn(`Inbox entry ${job.row.id} (${job.row.command_type}): claim lost before the handler started; skipped.`);
          if (job.row.ordering_key !== null) broken.add(job.row.ordering_key);
          // Its claim is gone: the span its earlier run opened ends here, keyed or not (settleRuns
          // skips a run of one, and could not hand back a claim not ours); nothing ends it again.
          this.tracing.endAttempt(job.span, 'not_recorded');
          job.span = undefined;
          continue;
        }
        if (job.row.ordering_key !== null && broken.has(job.row.ordering_key)) continue;
        // The transaction is never left aborted by a handler (see runHandler), so this cannot fail on its account.
        if (savepoints) {
          await queryRunner.query('SAVEPOINT inbox_entry');
          spokeAt = performance.now();
        } else if (performance.now() - spokeAt + job.handler.timeoutMs >= this.options.leaseMs) {
          await queryRunner.query('SELECT 1');
          spokeAt = performance.now();
        }
        job.startedAt = performance.now();
        handlerStarted = true;
        if (!job.started) {
          job.started = true;
          job.span = this.tracing.startAttempt(job.row);
        }
        try {
          await this.runHandler(job, queryRunner, client);
          job.finishedAt = performance.now();
          // Its session ended under it and it returned all the same (it caught the error): nobody's fault that is known.
          if (queryRunner.isReleased) {
            return { committed: false, error: new Error('the batch lost its connection while the handler ran'), rest: jobs.filter((j) => ours.has(j.row.id)), connectionLost: true };
          }
          completed.push(job);
        } catch (error) {
          job.finishedAt = performance.now();
          // The driver gave the connection up under the handler (its session ended while the
          // handler was between statements): what the handler then threw says nothing of it.
          const lostUnder = queryRunner.isReleased && !(error instanceof HandlerTimeoutError);
          // A timeout cut the connection: the whole transaction is gone.
          if (!savepoints || queryRunner.isReleased) {
            const rolledBack = await this.rollback(queryRunner, error);
            // The handler's statement failed because the batch's own connection died (a server
            // restart, a terminated backend): nobody's fault that is known, as below.
            if (lostUnder || (isConnectionError(error) && !(error instanceof HandlerTimeoutError) && (!rolledBack || queryRunner.isReleased))) {
              return { committed: false, error, rest: jobs.filter((j) => ours.has(j.row.id)), connectionLost: true };
            }
            // The rest runs again, but not the entries behind the culprit in its key.
            const behind = (j: Job) => job.row.ordering_key !== null && j.row.ordering_key === job.row.ordering_key;
            const rest = jobs.slice(0, index).concat(jobs.slice(index + 1).filter((j) => !behind(j)));
            return { committed: false, culprit: { job, error }, rest: rest.filter((j) => ours.has(j.row.id)) };
          }
          await queryRunner.query('ROLLBACK TO SAVEPOINT inbox_entry');
          failed.push({ job, error });
          if (job.row.ordering_key !== null) broken.add(job.row.ordering_key);
        }
      }
      const written = completed.length > 0 ? await this.writer.complete(queryRunner, completed) : [];
      // The completed entries' keys go to their next entries, committed with the completions.
      await this.writer.handOver(queryRunner, completed.map((job) => job.row.ordering_key));
      await queryRunner.commitTransaction();
      return { committed: true, completed: written, completedJobs: completed, failed };
    } catch (error) {
      // Released before we rolled back: the driver dropped the connection (its session ended).
      const connectionLost = queryRunner.isReleased;
      await this.rollback(queryRunner, error);
      return { committed: false, error, rest: jobs, beforeHandler: !handlerStarted, connectionLost };
    }
  }

  /** Rolls back; false when the connection could not (it is gone, or was destroyed for failing to). */
  private async rollback(queryRunner: QueryRunner, cause: unknown): Promise<boolean> {
    if (queryRunner.isReleased) return false;
    if (!queryRunner.isTransactionActive) return true;
    try {
      await queryRunner.rollbackTransaction();
      return true;
    } catch {
      await destroyConnection(queryRunner, cause instanceof Error ? cause : new Error(String(cause)));
      return false;
    }
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
    const context = this.contextFor(job.row, queryRunner);
    // (A connection the driver gave up already will not say it ended again: no wait then.)
    const running = Promise.resolve(this.tracing.runInAttempt(job.span, () => job.handler.instance.execute(job.command, context))).then(() =>
      queryRunner.isReleased ? undefined : untilIdle(client),
    );
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HandlerTimeoutError(job.handler.timeoutMs)), job.handler.timeoutMs);
    });
    try {
      await Promise.race([running, timedOut]);
    } catch (error) {
      if (error instanceof HandlerTimeoutError) {
        running.catch(() => undefined);
        const backend = client.processID;
        await destroyConnection(queryRunner, error);
        // The server would run the handler's statement on to its end (a lock it waits for, a long
        // query), holding the batch's locks all the while: its session is ended too.
        if (backend !== undefined) await this.connections.endSession(backend);
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
}

/** How many times a batch runs when the server ends its transaction to break a deadlock. */
const CONFLICT_RERUNS = 3;

/** Whether a group failed because its connection broke under it (not a handler's own failure). */
function lostConnection(result: Extract<GroupResult, { committed: false }>): boolean {
  return result.connectionLost === true || isConnectionError(result.error);
}

/** A batch with no entry claimed behind its key's holder has no run to settle. */
const NO_RUNS: ReturnType<typeof settleRuns> = { dropFailures: new Set(), release: [] };

/** The bits of node-postgres' client that tell whether the open transaction was aborted ('E'). */
interface TransactionStatusSource {
  /** The server process of the connection (its pid). */
  processID?: number;
  getTransactionStatus?(): string | null;
  readyForQuery?: boolean;
  connection?: {
    once(event: 'readyForQuery' | 'end', listener: () => void): unknown;
    removeListener(event: 'readyForQuery' | 'end', listener: () => void): unknown;
  };
}

/**
 * Resolves once the server has answered the client's last statement (its ReadyForQuery carries the
 * transaction's status), or the connection has ended (a session ended by the server never answers:
 * the batch then finds its connection released).
 */
function untilIdle(client: TransactionStatusSource): Promise<void> {
  const connection = client.connection;
  if (client.readyForQuery !== false || !connection) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      connection.removeListener('readyForQuery', done);
      connection.removeListener('end', done);
      resolve();
    };
    connection.once('readyForQuery', done);
    connection.once('end', done);
  });
}

function failureOf(job: Job, error: unknown): FailedAttempt {
  return { row: job.row, error, startedAt: job.startedAt, finishedAt: job.finishedAt, span: job.span };
}
