// What the chaos orchestrator, its producers and its workers agree on: the command and its types
// (two unkeyed, two with ordering keys), the worker settings, the tables the handlers write, and
// the lines workers log.
import { IsIn, IsInt, IsString, Length, Max, Min } from 'class-validator';
import { InboxCommand, type DeadLetterPolicy, type InboxModuleOptions } from '../lib';

export const CHAOS_COMMAND = 'chaos.apply';
/** The type only the new release handles: same payload, same handler behaviour. */
export const CHAOS_COMMAND_V2 = 'chaos.apply-v2';
/**
 * The keyed types, one per dead-letter policy. The block type's handler derives the key from the
 * payload (`orderingKey` handler option); the skip type's key is passed to receive by the sender.
 */
export const KEYED_BLOCK_COMMAND = 'chaos.keyed-block';
export const KEYED_SKIP_COMMAND = 'chaos.keyed-skip';
export const KEYED_COMMAND_OF: Record<DeadLetterPolicy, typeof KEYED_BLOCK_COMMAND | typeof KEYED_SKIP_COMMAND> = {
  block: KEYED_BLOCK_COMMAND,
  skip: KEYED_SKIP_COMMAND,
};
export const MAX_ATTEMPTS = 5;

/**
 * ok: writes its effect. transient: fails its first `failAttempts` attempts, then completes.
 * permanent: throws PermanentError. invalid: payload breaks the class-validator rules.
 * swallow: catches a failed INSERT's error and returns, leaving its transaction aborted.
 * poison: SIGKILLs the worker that runs it, every time.
 */
export const KINDS = ['ok', 'transient', 'permanent', 'invalid', 'swallow', 'poison'] as const;
export type Kind = (typeof KINDS)[number];

/**
 * Transient commands fail at most this often. Crashed attempts count too, and one crash costs an
 * attempt to every entry its worker had started (up to concurrency x batchSize), so a transient
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

/** The payload of the keyed types: the same, with the aggregate it belongs to. */
export class KeyedChaosCommand extends ChaosCommand {
  @IsString()
  @Length(1, 100)
  key!: string;
}

export const WORKER_INBOX_OPTIONS: InboxModuleOptions = {
  maxAttempts: MAX_ATTEMPTS,
  leaseMs: 2000,
  backoff: { initialDelayMs: 50, maxDelayMs: 500 },
  concurrency: 8,
  batchSize: 20,
  pollIntervalMs: 100,
};

/**
 * chaos_effects: the primary key makes a second application of a command fail loudly instead of
 * counting twice. The entry's ordering key and place in it, as the handler's transaction saw them,
 * and the database's clock when the handler started and finished let the key checks see order and
 * overlap of committed runs. chaos_taken_keys: holds the one key every swallow command tries to
 * insert again.
 */
export const CHAOS_TABLES_DDL = `CREATE TABLE chaos_effects (
  message_id text PRIMARY KEY,
  amount integer NOT NULL,
  attempt integer NOT NULL,
  worker text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  ordering_key text,
  ordering_seq bigint,
  started_at timestamptz NOT NULL,
  finished_at timestamptz
);
CREATE TABLE chaos_taken_keys (key text PRIMARY KEY);
INSERT INTO chaos_taken_keys VALUES ('taken');`;

export const PERMANENT_MESSAGE = 'designed permanent failure';
export const TRANSIENT_MESSAGE = 'designed transient failure';
/** Written to the worker's log (synchronously) right before a poison command kills it. */
export const POISON_MARKER = 'CHAOS-POISON';
/** Written to the worker's log (synchronously) as every handler run starts: `RAN <messageId> <attempt>`. */
export const RUN_MARKER = 'RAN';

/** The worker's two releases: old handles chaos.apply only, new handles chaos.apply-v2 as well. */
export type Release = 'old' | 'new';

/** What the orchestrator tells a worker process (its third argument, as JSON). */
export interface ChaosWorkerConfig {
  release: Release;
  /** Size of the connection pool; node-postgres' default (10) when absent. */
  poolMax?: number;
}

export type ChaosCommandType = typeof CHAOS_COMMAND | typeof CHAOS_COMMAND_V2 | typeof KEYED_BLOCK_COMMAND | typeof KEYED_SKIP_COMMAND;

export interface PlannedCommand {
  messageId: string;
  commandType: ChaosCommandType;
  kind: Kind;
  payload: Record<string, unknown>;
  /** For a keyed command: the key its entry must carry, and the policy of its type. */
  ordering?: { key: string; policy: DeadLetterPolicy };
}
