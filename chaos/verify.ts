// The end-of-run checks: compares what the producers generated with the inbox table, the effects
// table and the worker logs. Each broken invariant becomes one violation line. The accounting of
// attempts, the checks on the fleet (releases, clocks, pools) and on ordering keys have files of
// their own.
import { DeadLetterReason, InboxStatus } from '../lib';
import { MAX_ATTEMPTS, PERMANENT_MESSAGE, type Kind, type PlannedCommand } from './chaos-commands';
import { readRunData, type AttemptRow, type EntryRow } from './run-data';
import { checkAttempts, type AttemptAccounting } from './verify-attempts';
import { checkFleet, type FleetReport } from './verify-fleet';
import { checkKeys, type KeyReport } from './verify-keys';
import type { KeyOperator } from './key-operator';
import { listReporter, reporter } from './violations';
import { readWorkerLogs } from './worker-logs';
import type { WorkerPool } from './workers';

export interface Verification {
  violations: string[];
  byStatus: Record<string, number>;
  deadLetters: Record<'permanent' | 'invalid' | 'swallow' | 'poison' | 'other', number>;
  /** Swallow commands whose last attempt was lost to a crash (reason lease_expired), not blamed on them. */
  swallowLastLostToCrash: number;
  effects: number;
  /** Completed entries that needed more than one attempt although they never failed by design. */
  okRetried: number;
  attempts: AttemptAccounting;
  fleet: FleetReport;
  keys: KeyReport;
}

const DESIGNED_DEAD: ReadonlySet<Kind> = new Set(['permanent', 'invalid', 'swallow', 'poison']);
const ABORTED_MESSAGE = 'The handler returned normally but left its transaction aborted';

export async function verify(url: string, commands: PlannedCommand[], pool: WorkerPool, operator: Pick<KeyOperator, 'releases'>): Promise<Verification> {
  const data = await readRunData(url);
  const logs = readWorkerLogs(pool.logFiles);
  const { entries, effectIds } = data;
  const violations: string[] = [];
  const report = reporter(violations);

  const planned = new Map(commands.map((c) => [c.messageId, c]));
  const byId = new Map<string, EntryRow>();
  const repeated: string[] = [];
  for (const entry of entries) {
    if (byId.has(entry.message_id)) repeated.push(entry.message_id);
    byId.set(entry.message_id, entry);
  }
  report('commands stored more than once', repeated);
  report('generated commands missing from the inbox (lost)', commands.filter((c) => !byId.has(c.messageId)).map((c) => c.messageId));
  report('inbox entries nobody generated', entries.filter((e) => !planned.has(e.message_id)).map((e) => e.message_id));
  report(
    'entries whose stored type or payload differs from the generated one',
    entries
      .filter((e) => planned.has(e.message_id) && (planned.get(e.message_id)!.kind !== e.kind || planned.get(e.message_id)!.commandType !== e.command_type))
      .map((e) => e.message_id),
  );

  const byStatus: Record<string, number> = Object.fromEntries(Object.values(InboxStatus).map((s) => [s, 0]));
  for (const entry of entries) byStatus[entry.status]!++;
  report(
    'entries neither Completed nor DeadLetter',
    entries.filter((e) => e.status !== InboxStatus.Completed && e.status !== InboxStatus.DeadLetter).map((e) => `${e.message_id}=${e.status}`),
  );

  // Effects and completions commit in one transaction: the two sets must be identical.
  const effects = new Set(effectIds);
  const completed = entries.filter((e) => e.status === InboxStatus.Completed);
  report('Completed entries without an effect', completed.filter((e) => !effects.has(e.message_id)).map((e) => e.message_id));
  const completedIds = new Set(completed.map((e) => e.message_id));
  report('effects without a Completed entry (rolled-back work that persisted)', effectIds.filter((id) => !completedIds.has(id)));

  // A second run of an applied command hits the effects primary key: visible in the entry's error
  // and in the worker's log line for that failed attempt.
  report('entries that failed on an already applied effect', entries.filter((e) => /chaos_effects_pkey/i.test(e.error ?? '')).map((e) => e.message_id));
  report('worker log lines reporting a duplicate effect', logs.duplicateEffectLines, 3);
  // Workers only claim the types they handle: a type no running worker handles waits, it is not a failure.
  report('entries dead-lettered for want of a handler', entries.filter((e) => e.dead_letter_reason === DeadLetterReason.NoHandler).map((e) => e.message_id));

  const deadLetters = { permanent: 0, invalid: 0, swallow: 0, poison: 0, other: 0 };
  const unexpectedDead: string[] = [];
  const wrongReason: string[] = [];
  const missedDead: string[] = [];
  const underRetried: string[] = [];
  let okRetried = 0;
  let swallowLastLostToCrash = 0;
  for (const command of commands) {
    const entry = byId.get(command.messageId);
    if (!entry) continue;
    const dead = entry.status === InboxStatus.DeadLetter;
    const history = data.attempts.get(command.messageId) ?? new Map<number, AttemptRow>();
    if (dead && !DESIGNED_DEAD.has(command.kind)) {
      const lost = [...history.values()].filter((a) => a.error_class === 'LeaseExpiredError');
      const lostText = lost.map((a) => `#${a.attempt} in ${a.worker_id} (${pool.fateOf(a.worker_id, a.started_at)})`).join('; ');
      unexpectedDead.push(`${command.messageId} (${command.kind}: ${entry.error})${lost.length ? `\n      lost attempts: ${lostText}` : ''}`);
      deadLetters.other++;
      continue;
    }
    if (dead) deadLetters[command.kind as keyof typeof deadLetters]++;
    if (!dead && DESIGNED_DEAD.has(command.kind) && entry.status === InboxStatus.Completed) missedDead.push(`${command.messageId} (${command.kind})`);
    if (dead && !reasonFits(command.kind, entry, history)) wrongReason.push(`${command.messageId} (${command.kind}: ${entry.dead_letter_reason}: ${entry.error})`);
    if (dead && command.kind === 'swallow' && entry.dead_letter_reason === DeadLetterReason.LeaseExpired) swallowLastLostToCrash++;
    if (command.kind === 'transient' && entry.status === InboxStatus.Completed && entry.retry_count < Number(command.payload.failAttempts)) {
      underRetried.push(`${command.messageId} (${entry.retry_count} < ${command.payload.failAttempts})`);
    }
    if (command.kind === 'ok' && entry.retry_count > 0) okRetried++;
  }
  listReporter(violations)('dead letters that were not designed to fail', unexpectedDead);
  report('designed failures that Completed', missedDead);
  report('dead letters with an unexpected reason', wrongReason, 5);
  report('transient commands that completed without their designed failures', underRetried);

  const attempts = checkAttempts(commands, data, logs, pool);
  const fleet = checkFleet(commands, data, logs, pool);
  const keys = checkKeys(commands, data, operator);
  violations.push(...attempts.violations, ...fleet.violations, ...keys.violations);
  return { violations, byStatus, deadLetters, swallowLastLostToCrash, effects: effects.size, okRetried, attempts, fleet, keys };
}

function reasonFits(kind: Kind, entry: EntryRow, history: Map<number, AttemptRow>): boolean {
  const error = entry.error ?? '';
  const reason = entry.dead_letter_reason;
  if (kind === 'permanent') return reason === DeadLetterReason.PermanentError && error === PERMANENT_MESSAGE;
  if (kind === 'invalid') return reason === DeadLetterReason.InvalidPayload && error.startsWith('Payload of') && error.includes('amount');
  // Every attempt of a poison command ends in a crash, so it uses up all of them.
  if (kind === 'poison') return entry.retry_count === MAX_ATTEMPTS && error.startsWith(`Gave up after ${MAX_ATTEMPTS} attempt(s)`);
  if (kind === 'swallow') {
    // Blamed for its aborted transaction on every attempt it ran to the end; a crash may take the last one.
    const blamed = [...history.values()].some((a) => a.error_class === 'AbortedTransactionError');
    const lastBlamed = reason === DeadLetterReason.RetriesExhausted && error.startsWith(`Gave up after ${MAX_ATTEMPTS} attempt(s): ${ABORTED_MESSAGE}`);
    return entry.retry_count === MAX_ATTEMPTS && blamed && (lastBlamed || reason === DeadLetterReason.LeaseExpired);
  }
  return false;
}
