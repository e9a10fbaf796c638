import { Inject, Injectable } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { InboxArgumentError } from '../errors/inbox.error';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import { MAX_SNAPSHOT_AGE_MS, MAX_TIMER_MS } from '../inbox-options';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { clockTime } from '../store/database-clock';
import { withDeadline } from '../store/deadline';
import { InboxStatements } from '../store/statements';
import { InboxSnapshots } from '../telemetry/inbox-snapshot';
import { InboxNotifier } from '../wake/notifier';
import { InboxProcessor } from '../worker/inbox.processor';

/** What makes the inbox unhealthy; a threshold left out is not checked. */
export interface InboxHealthThresholds {
  /** Down when the oldest due entry has waited longer than this (ms): the workers do not keep up. */
  maxOldestDueAgeMs?: number;
  /** Down when more claims than this have an expired lease (their workers are gone or frozen). */
  maxExpiredLeases?: number;
  /** Degraded when more entries than this were dead-lettered since the previous check. */
  maxNewDeadLetters?: number;
  /** How old the shared figures may be (ms). Default 5000. */
  maxSnapshotAgeMs?: number;
  /** How long the check waits for the database (ms). Default 3000. */
  timeoutMs?: number;
}

/** The result of a check: `status`, what is wrong (`problems`), and the figures it looked at. */
export interface InboxHealthReport {
  status: 'up' | 'degraded' | 'down';
  problems: string[];
  /** Whether this instance's worker runs; null on a receive-only instance (`worker: false`). */
  processorRunning: boolean | null;
  /** Whether it hears other instances' notifications; null where it does not listen (`notify: false`, or no worker). */
  listening: boolean | null;
  databaseReachable: boolean;
  oldestDueAgeMs: number | null;
  expiredLeases: number | null;
  openDeadLetters: number | null;
  /** Dead-lettered since the previous check of this instance (the first: since it started). */
  newDeadLetters: number | null;
}

const THRESHOLDS = ['maxOldestDueAgeMs', 'maxExpiredLeases', 'maxNewDeadLetters', 'maxSnapshotAgeMs', 'timeoutMs'];
/** The bounds the module's options have: a timer's, and a snapshot's age. */
const THRESHOLD_MAXIMA: Partial<Record<string, number>> = { timeoutMs: MAX_TIMER_MS, maxSnapshotAgeMs: MAX_SNAPSHOT_AGE_MS };

/**
 * The inbox's health, for a health endpoint (see `InboxHealthIndicator` for @nestjs/terminus): the
 * worker runs, its LISTEN connection is up, the database answers, and the shared figures are within
 * the thresholds given. Reads one row (see InboxSnapshots) and one index range per check.
 */
@Injectable()
export class InboxHealth {
  /** The database's time of the previous check; dead letters after it are new. */
  private lastCheckedAt: Date;

  constructor(
    private readonly sql: InboxStatements,
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly processor: InboxProcessor,
    private readonly notifier: InboxNotifier,
    private readonly snapshots: InboxSnapshots,
  ) {
    this.lastCheckedAt = options.clock.now();
  }

  async check(thresholds: InboxHealthThresholds = {}): Promise<InboxHealthReport> {
    validateThresholds(thresholds);
    const problems: string[] = [];
    const worker = this.options.worker;
    const processorRunning = worker ? this.processor.state.running : null;
    const listening = worker && this.options.notify ? this.notifier.isListening : null;
    if (processorRunning === false) problems.push('the inbox processor is not running');
    if (listening === false) problems.push('the LISTEN connection is down (other instances\' receives are found by polling only)');
    const report: InboxHealthReport = {
      status: 'up',
      problems,
      processorRunning,
      listening,
      databaseReachable: true,
      oldestDueAgeMs: null,
      expiredLeases: null,
      openDeadLetters: null,
      newDeadLetters: null,
    };
    try {
      const since = this.lastCheckedAt;
      const timeoutMs = thresholds.timeoutMs ?? 3000;
      const timedOut = () => new Error(`no answer within ${timeoutMs} ms`);
      const [snapshot, [fresh]] = await withTimeout(
        Promise.all([
          this.snapshots.read(thresholds.maxSnapshotAgeMs ?? 5000),
          // Its connection is dropped if it stays silent, not kept to hang the next check.
          withDeadline(this.dataSource, timeoutMs, timedOut, (query) => query<{ count: number; now: Date }>(this.sql.deadLettersSince, [since, clockTime(this.options.clock)])),
        ]),
        timeoutMs,
      );
      report.oldestDueAgeMs = snapshot.oldestDueAgeMs;
      report.expiredLeases = snapshot.expiredLeases;
      report.openDeadLetters = snapshot.openDeadLetters;
      report.newDeadLetters = fresh.count;
      this.lastCheckedAt = fresh.now;
      const { maxOldestDueAgeMs, maxExpiredLeases, maxNewDeadLetters } = thresholds;
      if (maxOldestDueAgeMs !== undefined && snapshot.oldestDueAgeMs > maxOldestDueAgeMs) {
        problems.push(`the oldest due entry has waited ${Math.round(snapshot.oldestDueAgeMs)} ms (threshold ${maxOldestDueAgeMs} ms)`);
      }
      if (maxExpiredLeases !== undefined && snapshot.expiredLeases > maxExpiredLeases) {
        problems.push(`${snapshot.expiredLeases} claim(s) with an expired lease (threshold ${maxExpiredLeases})`);
      }
      if (problems.length === 0 && maxNewDeadLetters !== undefined && report.newDeadLetters > maxNewDeadLetters) {
        report.status = 'degraded';
        problems.push(`${report.newDeadLetters} entr(ies) dead-lettered since the previous check (threshold ${maxNewDeadLetters})`);
      }
    } catch (error) {
      report.databaseReachable = false;
      problems.push(`the database does not answer: ${(error as Error).message}`);
    }
    if (report.status !== 'degraded' && problems.length > 0) report.status = 'down';
    return report;
  }
}

function validateThresholds(thresholds: InboxHealthThresholds): void {
  if (typeof thresholds !== 'object' || thresholds === null) throw new InboxArgumentError('thresholds', 'expected an object');
  for (const [key, value] of Object.entries(thresholds)) {
    if (!THRESHOLDS.includes(key)) throw new InboxArgumentError(`thresholds.${key}`, `unknown threshold; known: ${THRESHOLDS.join(', ')}`);
    if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value < 0)) {
      throw new InboxArgumentError(`thresholds.${key}`, 'expected a number of at least 0');
    }
    const max = THRESHOLD_MAXIMA[key];
    if (max !== undefined && value > max) throw new InboxArgumentError(`thresholds.${key}`, `expected at most ${max}`);
  }
}

function withTimeout<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  work.catch(() => undefined);
  return Promise.race([work, timedOut]).finally(() => clearTimeout(timer));
}
