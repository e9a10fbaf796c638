// Attempts against handler runs: every attempt the inbox charged must have a handler run on record
// (a RAN line in a worker log) with that attempt number, and every run a charged attempt. Only
// invalid commands are charged without a run: their attempt ends while the payload is
// materialised, before the handler; and a crash suspect whose worker the harness killed in the
// instant between its start stamp and its handler's first line (counted apart, see below). Also:
// the aborted-transaction blame falls on swallow commands only.
import { InboxStatus } from '../lib';
import { WORKER_INBOX_OPTIONS, type PlannedCommand } from './chaos-commands';
import type { AttemptRow, EntryRow, RunData } from './run-data';
import { listReporter, reporter } from './violations';
import type { WorkerLogs } from './worker-logs';
import type { WorkerPool } from './workers';

export interface AttemptAccounting {
  violations: string[];
  /** Attempts charged over all entries: retry_count, plus the completing one. */
  charged: number;
  /** Of those, the attempts of invalid commands, which end before the handler by design. */
  chargedInvalid: number;
  /** Distinct (messageId, attempt) handler runs in the logs. */
  runs: number;
  /** Charged attempts of other kinds without a run on record (each one a violation). */
  withoutRun: number;
  /** Attempts charged for a lease that ran out after the attempt started. */
  leaseExpiries: number;
  /**
   * Of those, held by a process that a kill, a crash or an upgrade ended while the lease ran (the
   * others' holders were alive when it ran out: the outage had cut their connection).
   */
  leaseExpiriesByFault: number;
  /** Crash suspects' claims handed back uncharged by the lease sweep, never started (worker log lines). */
  handedBackUncharged: number;
  /** Entries of batches whose worker was gone, handed back uncharged as crash suspects (worker log lines). */
  handedBackAsSuspects: number;
  /** Attempts blamed on a handler that left its transaction aborted. */
  abortedBlamed: number;
  /**
   * Crash suspects charged without a run because the harness killed their worker right after their
   * start was stamped: the start is committed right before the handler (from then on the worker's
   * death is the attempt's), so a kill in that instant charges an attempt whose handler never began.
   */
  killedBeforeHandler: number;
}

/** How soon after a crash suspect's stamped start a kill counts as landing before its handler began. */
const STAMP_TO_HANDLER_MS = 50;

export function checkAttempts(
  commands: PlannedCommand[],
  data: RunData,
  logs: WorkerLogs,
  pool: Pick<WorkerPool, 'fateOf' | 'endedWithin' | 'killedWithin'>,
): AttemptAccounting {
  const violations: string[] = [];
  const report = reporter(violations);
  const byId = new Map(data.entries.map((e) => [e.message_id, e]));
  const chargedWithoutRun: string[] = [];
  const runWithoutCharge: string[] = [];
  const invalidRan: string[] = [];
  const blamedNeighbours: string[] = [];
  const accounting = { charged: 0, chargedInvalid: 0, runs: 0, leaseExpiries: 0, leaseExpiriesByFault: 0, abortedBlamed: 0, killedBeforeHandler: 0 };

  for (const command of commands) {
    const entry = byId.get(command.messageId);
    if (!entry) continue;
    const history = data.attempts.get(command.messageId) ?? new Map<number, AttemptRow>();
    const runs = logs.runs.get(command.messageId) ?? new Set<number>();
    const charged = entry.retry_count + (entry.status === InboxStatus.Completed ? 1 : 0);
    accounting.charged += charged;
    accounting.runs += runs.size;
    if (command.kind === 'invalid') {
      accounting.chargedInvalid += charged;
      if (runs.size > 0) invalidRan.push(command.messageId);
    } else {
      for (let attempt = 1; attempt <= charged; attempt++) {
        if (runs.has(attempt)) continue;
        const row = history.get(attempt);
        if (row && killedBetweenStampAndHandler(row, data, pool)) {
          accounting.killedBeforeHandler++;
          continue;
        }
        chargedWithoutRun.push(`${label(command)} attempt ${attempt}: ${recorded(entry, row, attempt, pool)}${row ? batchOf(row, data, logs) : ''}`);
      }
    }
    for (const attempt of runs) if (attempt > charged) runWithoutCharge.push(`${label(command)} ran attempt ${attempt}, ${charged} charged`);
    for (const row of history.values()) {
      if (row.error_class === 'LeaseExpiredError') {
        accounting.leaseExpiries++;
        if (row.started_at && pool.endedWithin(row.worker_id, row.started_at, Number(WORKER_INBOX_OPTIONS.leaseMs))) accounting.leaseExpiriesByFault++;
      }
      if (row.error_class === 'AbortedTransactionError') {
        accounting.abortedBlamed++;
        if (command.kind !== 'swallow') blamedNeighbours.push(`${label(command)} attempt ${row.attempt} in ${row.worker_id}`);
      }
    }
  }

  listReporter(violations)('attempts charged without a handler run', chargedWithoutRun, 10);
  report('handler runs under an attempt number the inbox did not charge', runWithoutCharge);
  report('invalid commands whose handler ran', invalidRan);
  report('commands blamed for an aborted transaction they did not cause', blamedNeighbours);
  return { violations, ...accounting, withoutRun: chargedWithoutRun.length, handedBackUncharged: logs.handedBackUncharged, handedBackAsSuspects: logs.handedBackAsSuspects };
}

function label(command: PlannedCommand): string {
  return `${command.messageId} (${command.kind}, ${command.commandType})`;
}

/**
 * The other attempts charged with the same start stamp in the same process, and which of them have
 * a run on record: the evidence of where in its batch the attempt was (a charged lease expiry
 * should be a crash suspect's, alone).
 */
function batchOf(row: AttemptRow, data: RunData, logs: WorkerLogs): string {
  if (row.started_at === null) return '';
  const ran: string[] = [];
  const notRun: string[] = [];
  for (const [messageId, byAttempt] of data.attempts) {
    for (const other of byAttempt.values()) {
      if (other === row || other.worker_id !== row.worker_id || other.started_at?.getTime() !== row.started_at.getTime()) continue;
      (logs.runs.get(messageId)?.has(other.attempt) ? ran : notRun).push(`${messageId}#${other.attempt}`);
    }
  }
  const some = (ids: string[]) => `${ids.length}${ids.length ? ` (${ids.sort().slice(0, 3).join(', ')}${ids.length > 3 ? ', ...' : ''})` : ''}`;
  const started = row.started_at.toISOString();
  if (ran.length + notRun.length === 0) return `; alone in its batch, started ${started}`;
  return `; its batch, started ${started}, had ${ran.length + notRun.length} other entr${ran.length + notRun.length === 1 ? 'y' : 'ies'}: ${some(ran)} ran, ${some(notRun)} did not`;
}

/** A crash suspect's attempt (a lease expiry, alone in its batch) whose worker the harness killed right after its start stamp. */
function killedBetweenStampAndHandler(row: AttemptRow, data: RunData, pool: Pick<WorkerPool, 'killedWithin'>): boolean {
  if (row.error_class !== 'LeaseExpiredError' || row.started_at === null) return false;
  if (!pool.killedWithin(row.worker_id, row.started_at, STAMP_TO_HANDLER_MS)) return false;
  for (const byAttempt of data.attempts.values()) {
    for (const other of byAttempt.values()) {
      if (other !== row && other.worker_id === row.worker_id && other.started_at?.getTime() === row.started_at.getTime()) return false;
    }
  }
  return true;
}

/** What the inbox recorded about one charged attempt. */
function recorded(entry: EntryRow, row: AttemptRow | undefined, attempt: number, pool: Pick<WorkerPool, 'fateOf'>): string {
  if (row) return `${row.error_class} in ${row.worker_id} (${pool.fateOf(row.worker_id, row.started_at)})`;
  if (entry.status === InboxStatus.Completed && attempt === entry.retry_count + 1) return `completed by ${entry.processed_by}`;
  return 'no history record';
}
