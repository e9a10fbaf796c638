// What the chaos orchestrator, its producers and its workers agree on: the command, the worker
// settings, the effects table, and the mix of designed outcomes.
import { IsIn, IsInt, Max, Min } from 'class-validator';
import { InboxCommand, type InboxModuleOptions } from '../lib';

export const CHAOS_COMMAND = 'chaos.apply';
export const MAX_ATTEMPTS = 5;

/**
 * ok: writes its effect. transient: fails its first `failAttempts` attempts, then completes.
 * permanent: throws PermanentError. invalid: payload breaks the class-validator rules.
 * poison: SIGKILLs the worker that runs it, every time.
 */
export const KINDS = ['ok', 'transient', 'permanent', 'invalid', 'poison'] as const;
export type Kind = (typeof KINDS)[number];

/**
 * Transient commands fail at most this often. Crashed attempts count too, and one crash costs an
 * attempt to every entry its worker had claimed (up to concurrency x batchSize), so a transient
 * command keeps two spare attempts: it may be caught in two crashes and still complete.
 */
export const MAX_TRANSIENT_FAILURES = MAX_ATTEMPTS - 3;

@InboxCommand(CHAOS_COMMAND)
export class ChaosCommand {
  @IsIn(KINDS)
  kind!: Kind;

  @IsInt()
  @Min(0)
  @Max(MAX_TRANSIENT_FAILURES)
  failAttempts!: number;

  @IsInt()
  @Min(1)
  amount!: number;
}

export const WORKER_INBOX_OPTIONS: InboxModuleOptions = {
  maxAttempts: MAX_ATTEMPTS,
  leaseMs: 2000,
  backoff: { initialDelayMs: 50, maxDelayMs: 500 },
  concurrency: 8,
  batchSize: 20,
  pollIntervalMs: 100,
};

/** The primary key makes a second application of a command fail loudly instead of counting twice. */
export const EFFECTS_DDL = `CREATE TABLE chaos_effects (
  message_id text PRIMARY KEY,
  amount integer NOT NULL,
  attempt integer NOT NULL,
  worker text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)`;

export const PERMANENT_MESSAGE = 'designed permanent failure';
export const TRANSIENT_MESSAGE = 'designed transient failure';
/** Written to the worker's log (synchronously) right before a poison command kills it. */
export const POISON_MARKER = 'CHAOS-POISON';

export interface PlannedCommand {
  messageId: string;
  kind: Kind;
  payload: Record<string, unknown>;
}

/** Share of each designed failure among the non-poison commands. */
const MIX = { transient: 0.12, permanent: 0.05, invalid: 0.05 };

/** Poison commands go into this leading share of the stream (see planCommands). */
const POISON_SHARE = 0.15;

/**
 * The commands of one run, in sending order. Poison commands come early: their crash-and-expire
 * cycles then overlap the traffic instead of stretching the drain, and are mostly over before
 * the database restarts, so the workers followed through a restart are not cut down by poison.
 */
export function planCommands(runId: string, total: number, poison: number, random: () => number = Math.random): PlannedCommand[] {
  // One poison command per equal stretch, so that two of them rarely share a batch.
  const poisonAt = new Set(Array.from({ length: poison }, (_, i) => Math.floor(((i + random()) / poison) * total * POISON_SHARE)));
  return Array.from({ length: total }, (_, i) => {
    const messageId = `${runId}-${String(i).padStart(6, '0')}`;
    const amount = 1 + Math.floor(random() * 1000);
    const roll = random();
    const kind: Kind = poisonAt.has(i)
      ? 'poison'
      : roll < MIX.transient
        ? 'transient'
        : roll < MIX.transient + MIX.permanent
          ? 'permanent'
          : roll < MIX.transient + MIX.permanent + MIX.invalid
            ? 'invalid'
            : 'ok';
    const failAttempts = kind === 'transient' ? 1 + Math.floor(random() * MAX_TRANSIENT_FAILURES) : 0;
    // An amount of "lots" fails @IsInt, so the entry dead-letters before the handler runs.
    const payload = { kind, failAttempts, amount: kind === 'invalid' ? 'lots' : amount };
    return { messageId, kind, payload };
  });
}
