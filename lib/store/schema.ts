import type { InboxHistoryRecord } from '../interfaces/inbox-history.interface';
import type { AttemptOutcome, DeadLetterReason, HistoryEvent, InboxStatus } from '../state/inbox-state-machine';
import { DEAD_LETTER_REASONS, INBOX_STATUSES } from '../state/inbox-state-machine';
import { InboxEntry } from './inbox-entry.entity';

/**
 * The one source of the inbox's schema: the migration's DDL, the columns every statement selects,
 * the row type node-postgres returns and its mapping to `InboxEntry` are made from these lists, and
 * type checks below fail the build when the row type or the entity drift from them.
 */
interface ColumnSpec {
  /** PostgreSQL type, as the DDL writes it (`status` takes the enum type of the table's schema). */
  readonly type: string;
  readonly nullable: boolean;
  readonly default?: string;
  /** The `InboxEntry` property it maps to; none: kept in the table only. */
  readonly property?: keyof InboxEntry;
  /** Parsed from text when it comes back inside jsonb (see rowFromJson). */
  readonly timestamp?: true;
  /** The migration that added it to tables made before; none: in the first schema. */
  readonly since?: number;
}

/** The migrations that grew the schema (see InboxMigration). */
export const SCHEMA_VERSIONS = {
  first: 1764000000000,
  completingAttempt: 1764100000000,
  storedFacts: 1764200000000,
  orderingKeys: 1764300000000,
  telemetry: 1764400000000,
} as const;
const { completingAttempt, storedFacts, orderingKeys, telemetry } = SCHEMA_VERSIONS;

export const INBOX_COLUMNS = {
  id: { type: 'uuid', nullable: false, default: 'gen_random_uuid()', property: 'id' },
  message_id: { type: 'varchar(255)', nullable: false, property: 'messageId' },
  command_type: { type: 'varchar(255)', nullable: false, property: 'commandType' },
  payload: { type: 'jsonb', nullable: true, property: 'payload' },
  /** md5 of the payload as first received, kept when retention removes it or a replay corrects it. */
  payload_digest: { type: 'varchar(32)', nullable: true },
  status: { type: 'status', nullable: false, default: `'pending'`, property: 'status' },
  retry_count: { type: 'integer', nullable: false, default: '0', property: 'retryCount' },
  max_attempts: { type: 'integer', nullable: true, property: 'maxAttempts', since: storedFacts },
  next_retry_at: { type: 'timestamptz', nullable: true, property: 'nextRetryAt', timestamp: true },
  error: { type: 'text', nullable: true, property: 'error' },
  last_outcome: { type: 'varchar(32)', nullable: true, property: 'lastOutcome', since: storedFacts },
  received_at: { type: 'timestamptz', nullable: false, default: 'now()', property: 'receivedAt', timestamp: true },
  processed_at: { type: 'timestamptz', nullable: true, property: 'processedAt', timestamp: true },
  processing_started_at: { type: 'timestamptz', nullable: true, property: 'processingStartedAt', timestamp: true, since: completingAttempt },
  processed_by: { type: 'varchar(255)', nullable: true, property: 'processedBy', since: completingAttempt },
  correlation_id: { type: 'varchar(255)', nullable: true, property: 'correlationId' },
  causation_id: { type: 'varchar(255)', nullable: true, property: 'causationId' },
  metadata: { type: 'jsonb', nullable: false, default: `'{}'`, property: 'metadata' },
  locked_by: { type: 'varchar(255)', nullable: true, property: 'lockedBy' },
  locked_until: { type: 'timestamptz', nullable: true, property: 'lockedUntil', timestamp: true },
  lock_token: { type: 'uuid', nullable: true, property: 'lockToken' },
  dead_letter_reason: { type: 'varchar(32)', nullable: true, property: 'deadLetterReason' },
  dead_lettered_at: { type: 'timestamptz', nullable: true, property: 'deadLetteredAt', timestamp: true },
  discarded_at: { type: 'timestamptz', nullable: true, property: 'discardedAt', timestamp: true },
  /** Entries with the same key run one at a time, in `ordering_seq` order (see lib/state/ordering.ts). */
  ordering_key: { type: 'varchar(255)', nullable: true, property: 'orderingKey', since: orderingKeys },
  /** The entry's place in its key's order; bigint, as a string. */
  ordering_seq: { type: 'bigint', nullable: true, property: 'orderingSeq', since: orderingKeys },
  /** Waits behind an earlier entry of its key: not claimable until that one is done. */
  waiting: { type: 'boolean', nullable: false, default: 'false', property: 'waiting', since: orderingKeys },
  /** A dead letter that holds its key (policy `block`): nothing later of the key runs until it is replayed or discarded. */
  blocks_key: { type: 'boolean', nullable: false, default: 'false', property: 'blocksKey', since: orderingKeys },
  /** The W3C trace context of the receive (its `send` span): every attempt's span is its child. */
  trace_parent: { type: 'varchar(55)', nullable: true, property: 'traceParent', since: telemetry },
  trace_state: { type: 'varchar(512)', nullable: true, property: 'traceState', since: telemetry },
} as const satisfies Record<string, ColumnSpec>;

export type InboxColumn = keyof typeof INBOX_COLUMNS;

/** An entry row as node-postgres returns it: every mapped column. */
export interface InboxRow {
  id: string;
  message_id: string;
  command_type: string;
  payload: Record<string, unknown> | null;
  status: InboxStatus;
  retry_count: number;
  max_attempts: number | null;
  next_retry_at: Date | null;
  error: string | null;
  last_outcome: AttemptOutcome | null;
  received_at: Date;
  processed_at: Date | null;
  processing_started_at: Date | null;
  processed_by: string | null;
  correlation_id: string | null;
  causation_id: string | null;
  metadata: Record<string, unknown>;
  locked_by: string | null;
  locked_until: Date | null;
  lock_token: string | null;
  dead_letter_reason: DeadLetterReason | null;
  dead_lettered_at: Date | null;
  discarded_at: Date | null;
  ordering_key: string | null;
  ordering_seq: string | null;
  waiting: boolean;
  blocks_key: boolean;
  trace_parent: string | null;
  trace_state: string | null;
}

type MappedColumn = { [C in InboxColumn]: (typeof INBOX_COLUMNS)[C] extends { property: string } ? C : never }[InboxColumn];
type MappedProperty = { [C in InboxColumn]: (typeof INBOX_COLUMNS)[C] extends { property: infer P } ? P : never }[InboxColumn];
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
// Drift checks: the build fails when the row type or the entity's fields no longer match the list.
const rowMatchesColumns: Same<keyof InboxRow, MappedColumn> = true;
const entityMatchesColumns: Same<Exclude<keyof InboxEntry, 'payloadDigest'>, MappedProperty> = true;
void [rowMatchesColumns, entityMatchesColumns];

/** The mapped columns, in list order: what every statement selects. */
export const SELECTED_COLUMNS = (Object.keys(INBOX_COLUMNS) as InboxColumn[]).filter((name) => 'property' in INBOX_COLUMNS[name]) as MappedColumn[];
const TIMESTAMP_COLUMNS = SELECTED_COLUMNS.filter((name) => 'timestamp' in INBOX_COLUMNS[name]);

/** `"a", "b", …` or, with an alias, `e."a", e."b", …`. */
export function columnList(alias?: string): string {
  return SELECTED_COLUMNS.map((name) => (alias ? `${alias}."${name}"` : `"${name}"`)).join(', ');
}

export function toEntry(row: InboxRow): InboxEntry {
  const entry = new InboxEntry();
  for (const name of SELECTED_COLUMNS) (entry as unknown as Record<string, unknown>)[INBOX_COLUMNS[name].property] = row[name];
  return entry;
}

/** A row that came back as jsonb without its null columns (timestamps as ISO strings), converted in place. */
export function rowFromJson(json: Record<string, unknown>): InboxRow {
  for (const column of SELECTED_COLUMNS) json[column] ??= null;
  for (const column of TIMESTAMP_COLUMNS) if (json[column] !== null) json[column] = new Date(json[column] as string);
  return json as unknown as InboxRow;
}

/**
 * One row per ordering key: the serialisation point of its receives and hand-overs. `last_seq`
 * numbers its entries; `busy` says whether an entry holds the key. `was_busy` is read by nothing:
 * earlier versions wrote it, and may still run beside this one during a rolling deploy.
 */
export const KEY_COLUMNS = {
  ordering_key: { type: 'varchar(255)', nullable: false },
  last_seq: { type: 'bigint', nullable: false },
  busy: { type: 'boolean', nullable: false },
  was_busy: { type: 'boolean', nullable: false, default: 'false' },
  touched_at: { type: 'timestamptz', nullable: false, default: 'now()' },
} as const satisfies Record<string, ColumnSpec>;

/**
 * One row per inbox table: the figures the metrics' gauges report, refreshed by whichever instance
 * first finds them older than its interval (see InboxStatements.snapshot), read by all the others.
 */
export const SNAPSHOT_COLUMNS = {
  id: { type: 'smallint', nullable: false, default: '1' },
  pending: { type: 'bigint', nullable: false, default: '0' },
  processing: { type: 'bigint', nullable: false, default: '0' },
  failed: { type: 'bigint', nullable: false, default: '0' },
  dead_letter: { type: 'bigint', nullable: false, default: '0' },
  /** Counted from the table's statistics, not row by row (see InboxStatements.snapshot). */
  completed_estimate: { type: 'bigint', nullable: false, default: '0' },
  open_dead_letters: { type: 'bigint', nullable: false, default: '0' },
  expired_leases: { type: 'bigint', nullable: false, default: '0' },
  oldest_due_at: { type: 'timestamptz', nullable: true },
  refreshed_at: { type: 'timestamptz', nullable: false, default: `'-infinity'` },
} as const satisfies Record<string, ColumnSpec>;

/** The append-only history: every failed attempt and every operator action. */
export const HISTORY_COLUMNS = {
  id: { type: 'bigint GENERATED ALWAYS AS IDENTITY', nullable: false },
  entry_id: { type: 'uuid', nullable: false },
  event: { type: 'varchar(32)', nullable: false },
  attempt: { type: 'integer', nullable: true },
  outcome: { type: 'varchar(32)', nullable: true },
  started_at: { type: 'timestamptz', nullable: true },
  finished_at: { type: 'timestamptz', nullable: true },
  duration_ms: { type: 'integer', nullable: true },
  error_class: { type: 'varchar(255)', nullable: true },
  error_message: { type: 'text', nullable: true },
  error_stack: { type: 'text', nullable: true },
  worker_id: { type: 'varchar(255)', nullable: true },
  actor: { type: 'varchar(255)', nullable: true },
  reason: { type: 'text', nullable: true },
  previous_payload: { type: 'jsonb', nullable: true },
  recorded_at: { type: 'timestamptz', nullable: false, default: 'now()' },
} as const satisfies Record<string, ColumnSpec>;

export interface HistoryRow {
  id: string;
  entry_id: string;
  event: HistoryEvent;
  attempt: number | null;
  outcome: AttemptOutcome | null;
  started_at: Date | null;
  finished_at: Date | null;
  duration_ms: number | null;
  error_class: string | null;
  error_message: string | null;
  error_stack: string | null;
  worker_id: string | null;
  actor: string | null;
  reason: string | null;
  previous_payload: Record<string, unknown> | null;
  recorded_at: Date;
}

const historyMatchesColumns: Same<keyof HistoryRow, keyof typeof HISTORY_COLUMNS> = true;
void historyMatchesColumns;

export function toHistoryRecord(row: HistoryRow): InboxHistoryRecord {
  return {
    id: String(row.id),
    entryId: row.entry_id,
    event: row.event,
    attempt: row.attempt,
    outcome: row.outcome,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    durationMs: row.duration_ms,
    errorClass: row.error_class,
    errorMessage: row.error_message,
    errorStack: row.error_stack,
    workerId: row.worker_id,
    actor: row.actor,
    reason: row.reason,
    previousPayload: row.previous_payload,
    recordedAt: row.recorded_at,
  };
}

/** The column definitions of a CREATE TABLE (the status column takes `statusType`). */
export function columnDefinitions(columns: Record<string, ColumnSpec>, statusType: string): string[] {
  return Object.entries(columns).map(([name, spec]) => columnDefinition(name, spec, statusType));
}

/** The columns later migrations added, for `ALTER TABLE … ADD COLUMN IF NOT EXISTS` on older tables. */
export function addedColumnDefinitions(statusType: string): string[] {
  return Object.entries(INBOX_COLUMNS as Record<string, ColumnSpec>)
    .filter(([, spec]) => spec.since !== undefined)
    .map(([name, spec]) => columnDefinition(name, spec, statusType));
}

function columnDefinition(name: string, spec: ColumnSpec, statusType: string): string {
  const type = spec.type === 'status' ? statusType : spec.type;
  return `"${name}" ${type}${spec.nullable ? '' : ' NOT NULL'}${spec.default ? ` DEFAULT ${spec.default}` : ''}`;
}

/** The enum type's values, in the state machine's order. */
export const STATUS_VALUES = INBOX_STATUSES.map((status) => `'${status}'`).join(', ');
/** The dead-letter reasons the CHECK constraint allows. */
export const DEAD_LETTER_REASON_VALUES = DEAD_LETTER_REASONS.map((reason) => `'${reason}'`).join(', ');
