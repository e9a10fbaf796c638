// The end-of-run summary: what ran, what was injected, what came out, and every violation.
import path from 'node:path';
import type { PostgresHandle } from '../scripts/postgres.mjs';
import { CHAOS_COMMAND, CHAOS_COMMAND_V2, KEYED_BLOCK_COMMAND, KEYED_SKIP_COMMAND, KINDS, MAX_ATTEMPTS, WORKER_INBOX_OPTIONS, type PlannedCommand } from './chaos-commands';
import type { KeyOperator } from './key-operator';
import type { FaultLog } from './faults';
import type { ProducerStats } from './producer';
import type { Verification } from './verify';
import type { SlotReport } from './verify-fleet';
import { describeProfile, type Upgrade, type WorkerPool } from './workers';

const ROOT = path.resolve(__dirname, '..');

export interface RunReport {
  form: string;
  startedAt: number;
  plannedKills: number;
  ratePerSecond: number;
  producerLoops: number;
  drainMs: number;
  commands: PlannedCommand[];
  producer: ProducerStats;
  faults: FaultLog;
  result: Verification;
  drainedInMs: number | undefined;
  stopProblems: string[];
  pool: WorkerPool;
  operator: Pick<KeyOperator, 'failedCalls' | 'errorSamples'>;
  postgres: PostgresHandle;
  database: string;
}

/** How an upgraded slot's old process ended, after the upgrade's SIGTERM. */
const OLD_ENDS: Record<Upgrade['oldEnd'], string> = {
  upgrade: 'drained and exited',
  'poison-crash': 'killed by a poison command while draining',
  'harness-kill': 'SIGKILLed while draining',
  'unexpected-exit': 'exited otherwise than on the signal',
  timeout: 'did not exit in time, SIGKILLed',
};

/** Prints the summary and every violation; returns the exit code. */
export function printSummary(r: RunReport): number {
  const violations = [
    ...r.result.violations,
    ...r.faults.violations,
    ...r.stopProblems,
    ...r.pool.events.filter((e) => e.kind === 'unexpected-exit').map((e) => `${e.worker} (pid ${e.pid}) ${e.detail}`),
  ];
  if (r.drainedInMs === undefined) violations.push(`entries still Pending/Failed/Processing after ${r.drainMs} ms of draining`);
  const p = r.producer;
  if (p.rejected.length) violations.push(`receive calls rejected for good: ${p.rejected.slice(0, 5).join('; ')}`);
  if (p.givenUp.length) violations.push(`commands the producers could not store before their retry deadline: ${p.givenUp.length}`);
  if (p.unexpectedDuplicates.length) violations.push(`first sends answered as duplicates: ${p.unexpectedDuplicates.length}`);
  if (p.stored !== r.commands.length) violations.push(`producers stored ${p.stored} of ${r.commands.length} commands`);
  if (r.pool.events.filter((e) => e.kind === 'harness-kill').length < r.plannedKills) violations.push('fewer SIGKILLs than planned');
  // Without one worker followed through an outage the run proves nothing about surviving it.
  if (!r.faults.outages.some((o) => o.workers.some((w) => w.survived))) {
    violations.push('inconclusive: no running worker was followed through a PostgreSQL restart (all were killed or crashed meanwhile)');
  }

  const kinds = countBy(r.commands.map((c) => c.kind));
  const fleet = r.result.fleet;
  const a = r.result.attempts;
  const events = countBy(r.pool.events.map((e) => e.kind));
  const s = r.result.byStatus;
  const d = r.result.deadLetters;
  const k = r.result.keys;
  const keyedKinds = countBy(r.commands.filter((c) => c.ordering).map((c) => c.kind));
  const elapsed = `${((Date.now() - r.startedAt) / 1000).toFixed(1)} s`;
  const sec = (ms: number | undefined) => (ms === undefined ? 'n/a' : `${(ms / 1000).toFixed(1)} s`);
  const lines = [
    '',
    `nestjs-inbox chaos run (${r.form}): ${violations.length === 0 ? 'PASSED' : `FAILED with ${violations.length} violation(s)`} in ${elapsed}`,
    `  server       ${r.postgres.embedded ? 'embedded' : 'system'} PostgreSQL, database ${r.database} (dropped)`,
    `  workers      ${r.pool.size} processes, concurrency ${WORKER_INBOX_OPTIONS.concurrency}, batch ${WORKER_INBOX_OPTIONS.batchSize}, poll ${WORKER_INBOX_OPTIONS.pollIntervalMs} ms, lease ${WORKER_INBOX_OPTIONS.leaseMs} ms, maxAttempts ${MAX_ATTEMPTS}; ${r.pool.processes.size} processes started in total`,
    `  fleet        ${fleet.slots.map((slot) => `${slot.worker} ${describeProfile(slot)}${fleetDetail(slot)}, ${slot.completed} completed`).join('; ')}`,
    `  releases     old handles ${CHAOS_COMMAND}, new also ${CHAOS_COMMAND_V2}; all started old, upgraded ${r.pool.upgrades.map((u) => `${u.worker} at ${sec(u.at - r.startedAt)} (${OLD_ENDS[u.oldEnd]} in ${u.exitMs} ms)`).join(', ') || 'none'}`,
    `  commands     ${r.commands.length} generated: ${KINDS.map((k) => `${kinds[k] ?? 0} ${k}`).join(', ')}; ${fleet.v2Commands} sent as ${CHAOS_COMMAND_V2} (their attempts: ${fleet.v2AttemptsByRelease.old} by old-release workers, ${fleet.v2AttemptsByRelease.new} by new)`,
    `  keyed        ${k.keyedCommands} commands (${KINDS.filter((kind) => keyedKinds[kind]).map((kind) => `${keyedKinds[kind]} ${kind}`).join(', ')}) on ${k.keys.block + k.keys.skip} keys, ${k.perKey.min}-${k.perKey.max} entries each: ${k.keys.block} block keys (${KEYED_BLOCK_COMMAND}, key derived by its handler), ${k.keys.skip} skip keys (${KEYED_SKIP_COMMAND}, key given to receive); ${k.queued} entries arrived while their key was busy`,
    `  key outcome  ${k.completed} Completed, dead letters ${k.deadLetters.block} block + ${k.deadLetters.skip} skip; ${k.releases} blocked keys released by the operator (discard; ${k.releasesWithWaiting} with entries waiting behind, up to ${k.maxWaitingBehind}; ${r.operator.failedCalls} operator calls failed and were retried); ${k.completedAfterSkip} entries completed after a skipped dead letter of their key, ${k.completedAfterRelease} after a released one`,
    ...[...r.operator.errorSamples].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([text, n]) => `                 ${n} x ${text.slice(0, 150)}`),
    `  key order    ${k.pairs} pairs of entries of one key compared: ${k.orderViolations} order violations, ${k.overlaps} overlaps, ${k.ranBeforeRelease} ran before a release, ${k.ranBeforeSkippedDeadLetter} before a skipped dead letter ahead, ${k.deadLetteredTooEarly} dead-lettered too early`,
    `  producers    ${r.producerLoops} loops at ${r.ratePerSecond}/s; ${p.stored} stored; ${p.failedCalls} receive calls failed and were reported to the caller (${p.affected.size} commands), all retried with the same messageId; ${p.storedByFailedCall} retries found the command already stored`,
    ...[...p.errorSamples].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([text, n]) => `                 ${n} x ${text.slice(0, 150)}`),
    `  faults       ${events['harness-kill'] ?? 0} SIGKILLs by the harness, ${events['poison-crash'] ?? 0} crashes by poison commands, ${events.upgrade ?? 0} drained for an upgrade, ${events['unexpected-exit'] ?? 0} unexpected worker exits`,
    ...r.faults.outages.map(
      (o, i) =>
        `  db restart ${i + 1} at ${((o.startedAt - r.startedAt) / 1000).toFixed(1)} s, down ${sec(o.upAt - o.startedAt)}; workers running then: ${o.workers.map((w) => `${w.worker} ${w.fate}`).join(', ') || 'none'}`,
    ),
    `  outcome      ${s.completed} Completed, ${s.dead_letter} DeadLetter (permanent ${d.permanent}, invalid ${d.invalid}, swallow ${d.swallow}, poison ${d.poison}, undesigned ${d.other}), ${s.pending + s.failed + s.processing} left open; drained ${sec(r.drainedInMs)} after the last send`,
    `  attempts     ${a.charged} charged, ${a.chargedInvalid} of them of invalid commands (they end before the handler); ${a.runs} handler runs on record, ${a.withoutRun ? `none for ${a.withoutRun} other charged attempt(s)` : 'one for every other charged attempt'}${a.killedBeforeHandler ? ` (besides ${a.killedBeforeHandler} crash suspect(s) whose worker was killed between the start stamp and the handler)` : ''}; ${a.leaseExpiries} lease expiries charged (${a.leaseExpiriesByFault} held by a process that a kill, crash or upgrade ended, ${a.leaseExpiries - a.leaseExpiriesByFault} by one alive when the lease ran out: outage), ${a.handedBackUncharged} unstarted crash-suspect claims handed back uncharged, ${a.handedBackAsSuspects} entries of batches whose worker was gone handed back uncharged as crash suspects; ${a.abortedBlamed} attempts blamed on an aborted transaction${r.result.swallowLastLostToCrash ? `; ${r.result.swallowLastLostToCrash} swallow commands lost their last attempt to a crash` : ''}`,
    `  effects      ${r.result.effects} effect rows for ${s.completed} Completed entries; ${r.result.okRetried} ok commands needed a retry (crash or outage)`,
    `  logs         ${r.pool.logFiles.map((f) => path.relative(ROOT, f)).join('  ')}`,
  ];
  console.log(lines.join('\n'));
  if (violations.length) console.log(['', 'VIOLATIONS:', ...violations.map((v) => `  - ${v}`)].join('\n'));
  else {
    console.log(
      '  checks       all commands stored once; all Completed or DeadLetter; effects = Completed; no double effect; dead letters = designed set;\n' +
        '               every charged attempt ran (invalid excepted), every run charged; aborted transactions blamed on swallowers only;\n' +
        `               ${CHAOS_COMMAND_V2} only on the new release, none dead-lettered for want of a handler; clock and pool as configured;\n` +
        '               each key ran one entry at a time in receive order, nothing ran past a dead letter before it was skipped or released',
    );
  }
  return violations.length === 0 ? 0 : 1;
}

/** The measured clock offset of a skewed slot, how many of a small-pool slot's processes warned. */
function fleetDetail(slot: SlotReport): string {
  const parts: string[] = [];
  if (slot.clockSkewMs !== undefined && slot.clockOffsetsMs.length) {
    const mean = slot.clockOffsetsMs.reduce((sum, ms) => sum + ms, 0) / slot.clockOffsetsMs.length;
    parts.push(`measured ${mean >= 0 ? '+' : ''}${(mean / 1000).toFixed(1)} s`);
  }
  if (slot.poolMax !== undefined) parts.push(`pool warning from ${slot.poolWarnings}/${slot.booted} processes`);
  return parts.length ? ` (${parts.join(', ')})` : '';
}

function countBy(values: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}

