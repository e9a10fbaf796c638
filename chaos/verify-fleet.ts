// Checks on the fleet: the rolling deploy (a type runs only on workers whose release handles it,
// every slot was upgraded after draining), the skewed clock and the small pool in effect, and
// every slot doing work, so that what each slot is there to prove was exercised.
import { CHAOS_COMMAND_V2, WORKER_INBOX_OPTIONS, type PlannedCommand } from './chaos-commands';
import type { Release } from './chaos-commands';
import type { RunData } from './run-data';
import { reporter } from './violations';
import type { WorkerLogs } from './worker-logs';
import { describeProfile, type WorkerPool } from './workers';

/** How far a worker's measured clock may be from the one asked for (IPC latency on a loaded machine). */
const CLOCK_TOLERANCE_MS = 5000;

export interface SlotReport {
  worker: string;
  release: Release;
  clockSkewMs?: number;
  /** Host clock minus the orchestrator's, per process of the slot, measured at boot. */
  clockOffsetsMs: number[];
  poolMax?: number;
  /** Processes of the slot that booted, and how many of them warned about the pool size. */
  booted: number;
  poolWarnings: number;
  /** Entries the slot's processes completed. */
  completed: number;
}

export interface FleetReport {
  violations: string[];
  slots: SlotReport[];
  /** New-type commands: how many, and how many attempts processes of each release made on them. */
  v2Commands: number;
  v2AttemptsByRelease: Record<Release, number>;
}

export function checkFleet(commands: PlannedCommand[], data: RunData, logs: WorkerLogs, pool: WorkerPool): FleetReport {
  const violations: string[] = [];
  const report = reporter(violations);
  const releaseOf = (workerId: string | null) => (workerId ? pool.processes.get(workerId)?.release : undefined);

  // Who made each attempt of a new-type command: the history's worker (the lease's holder for an
  // expiry), and the completing worker.
  const v2Attempts = { old: 0, new: 0 };
  const v2OnOld: string[] = [];
  const unknownWorkers = new Set<string>();
  const v2Ids = new Set(commands.filter((c) => c.commandType === CHAOS_COMMAND_V2).map((c) => c.messageId));
  const count = (messageId: string, attempt: number, workerId: string | null) => {
    const release = releaseOf(workerId);
    if (!release) return void unknownWorkers.add(String(workerId));
    v2Attempts[release]++;
    if (release === 'old') v2OnOld.push(`${messageId} attempt ${attempt} by ${workerId}`);
  };
  for (const entry of data.entries) {
    if (!v2Ids.has(entry.message_id)) continue;
    for (const row of data.attempts.get(entry.message_id)?.values() ?? []) count(entry.message_id, row.attempt, row.worker_id);
    if (entry.processed_by) count(entry.message_id, entry.retry_count + 1, entry.processed_by);
  }
  report(`attempts of ${CHAOS_COMMAND_V2} commands made by old-release workers (which have no handler for it)`, v2OnOld);
  report('attempts recorded for a worker that is not a process of this run', [...unknownWorkers]);
  report('claims handed back by a worker for want of a handler (workers must claim only the types they handle)', logs.noHandlerHandBacks, 3);

  const slots: SlotReport[] = pool.fleet.map(({ worker, profile, release, logFile }) => {
    const processes = [...pool.processes.values()].filter((p) => p.worker === worker);
    const booted = processes.filter((p) => p.clockOffsetMs !== undefined);
    return {
      worker,
      release,
      clockSkewMs: profile.clockSkewMs,
      clockOffsetsMs: booted.map((p) => p.clockOffsetMs!),
      poolMax: profile.poolMax,
      booted: booted.length,
      poolWarnings: logs.poolWarnings.get(logFile) ?? 0,
      completed: data.entries.filter((e) => e.processed_by?.startsWith(`${worker}-`)).length,
    };
  });

  for (const slot of slots) {
    const upgrades = pool.upgrades.filter((u) => u.worker === slot.worker);
    if (upgrades.length !== 1) violations.push(`${slot.worker} was upgraded ${upgrades.length} times instead of once`);
    for (const u of upgrades.filter((u) => u.oldEnd !== 'upgrade' && u.oldEnd !== 'poison-crash')) {
      violations.push(`${slot.worker}: its old process (pid ${u.oldPid}) did not drain and exit on SIGTERM (${u.oldEnd}) when upgraded`);
    }
    const expected = slot.clockSkewMs ?? 0;
    const off = slot.clockOffsetsMs.filter((ms) => Math.abs(ms - expected) > CLOCK_TOLERANCE_MS);
    report(`${slot.worker}: processes whose clock is not ${expected} ms off (measured, ms)`, off.map(String));
    // The library warns at boot when the pool is smaller than concurrency + 2 (node-postgres' default is 10).
    const warnings = (slot.poolMax ?? 10) < WORKER_INBOX_OPTIONS.concurrency! + 2 ? slot.booted : 0;
    if (slot.poolWarnings !== warnings) {
      violations.push(`${slot.worker}: ${slot.poolWarnings} pool-size warnings from ${slot.booted} processes, expected ${warnings}`);
    }
    const special = slot.clockSkewMs !== undefined || slot.poolMax !== undefined;
    if (special && slot.completed === 0) violations.push(`inconclusive: ${slot.worker} (${describeProfile(slot)}) completed no command`);
  }
  return { violations, slots, v2Commands: v2Ids.size, v2AttemptsByRelease: v2Attempts };
}
