import type { DataSource, QueryRunner } from 'typeorm';
import { STATUS_ENUM_NAME } from './inbox.constants';
import { InboxEntry } from './entities/inbox-entry.entity';
import { InboxStatus } from './inbox-status.enum';

/** Quotes a table name that already passed the identifier check (`schema.table` or `table`). */
export function quoteTable(tableName: string): string {
  return tableName
    .split('.')
    .map((part) => `"${part}"`)
    .join('.');
}

/** The enum type lives in the table's schema. */
export function statusTypeOf(tableName: string): string {
  const dot = tableName.indexOf('.');
  return dot < 0 ? `"${STATUS_ENUM_NAME}"` : `"${tableName.slice(0, dot)}"."${STATUS_ENUM_NAME}"`;
}

/** Index/constraint name prefix for a table. */
export function tableIndexPrefix(tableName: string): string {
  return tableName.replace('.', '_');
}

const COLUMNS = `"id", "message_id", "command_type", "payload", "status", "retry_count", "next_retry_at", "error",
  "received_at", "processed_at", "correlation_id", "causation_id", "metadata", "locked_by", "locked_until", "lock_token"`;

/** A row as node-postgres returns it. */
export interface InboxRow {
  id: string;
  message_id: string;
  command_type: string;
  payload: Record<string, unknown>;
  status: InboxStatus;
  retry_count: number;
  next_retry_at: Date | null;
  error: string | null;
  received_at: Date;
  processed_at: Date | null;
  correlation_id: string | null;
  causation_id: string | null;
  metadata: Record<string, unknown>;
  locked_by: string | null;
  locked_until: Date | null;
  lock_token: string | null;
}

export function toEntry(row: InboxRow): InboxEntry {
  const entry = new InboxEntry();
  entry.id = row.id;
  entry.messageId = row.message_id;
  entry.commandType = row.command_type;
  entry.payload = row.payload;
  entry.status = row.status;
  entry.retryCount = row.retry_count;
  entry.nextRetryAt = row.next_retry_at;
  entry.error = row.error;
  entry.receivedAt = row.received_at;
  entry.processedAt = row.processed_at;
  entry.correlationId = row.correlation_id;
  entry.causationId = row.causation_id;
  entry.metadata = row.metadata;
  entry.lockedBy = row.locked_by;
  entry.lockedUntil = row.locked_until;
  entry.lockToken = row.lock_token;
  return entry;
}

/**
 * Every statement the library runs against its table, parameterised; the table name is the
 * only interpolated part and is checked against a strict identifier pattern at boot.
 */
export class InboxSql {
  readonly insert: string;
  readonly selectByMessageIdWithMatch: string;
  readonly selectById: string;
  readonly selectByMessageId: string;
  readonly countByStatus: string;
  readonly replay: string;
  readonly claim: string;
  readonly lockClaimed: string;
  readonly complete: string;
  readonly recordOutcome: string;
  readonly selectExpiredLeases: string;

  private readonly table: string;
  private readonly statusType: string;

  constructor(tableName: string) {
    const t = quoteTable(tableName);
    this.table = t;
    this.statusType = statusTypeOf(tableName);
    const status = (s: InboxStatus) => `'${s}'::${this.statusType}`;
    this.insert = `INSERT INTO ${t} ("message_id", "command_type", "payload", "correlation_id", "causation_id", "metadata", "received_at")
      VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb, $7)
      ON CONFLICT ("message_id") DO NOTHING
      RETURNING ${COLUMNS}`;
    // jsonb equality ignores key order and whitespace: the same command re-sent by another client matches.
    this.selectByMessageIdWithMatch = `SELECT ${COLUMNS}, ("command_type" = $2 AND "payload" = $3::jsonb) AS "same_command"
      FROM ${t} WHERE "message_id" = $1`;
    this.selectById = `SELECT ${COLUMNS} FROM ${t} WHERE "id" = $1`;
    this.selectByMessageId = `SELECT ${COLUMNS} FROM ${t} WHERE "message_id" = $1`;
    this.countByStatus = `SELECT "status", count(*)::int AS "count" FROM ${t} GROUP BY "status"`;
    this.replay = `UPDATE ${t} SET "status" = ${status(InboxStatus.Pending)}, "retry_count" = 0, "next_retry_at" = NULL,
        "processed_at" = NULL, "locked_by" = NULL, "locked_until" = NULL, "lock_token" = NULL
      WHERE "id" = $1 AND "status" IN (${status(InboxStatus.DeadLetter)}, ${status(InboxStatus.Failed)})
      RETURNING ${COLUMNS}`;
    // Due = Pending, or Failed whose retry time has come; oldest due first. SKIP LOCKED lets
    // several workers claim side by side without waiting on each other's rows.
    this.claim = `WITH due AS (
        SELECT "id" FROM ${t}
        WHERE "status" IN (${status(InboxStatus.Pending)}, ${status(InboxStatus.Failed)})
          AND COALESCE("next_retry_at", "received_at") <= $1
        ORDER BY COALESCE("next_retry_at", "received_at")
        LIMIT $2
        FOR UPDATE SKIP LOCKED
      )
      UPDATE ${t} AS e SET "status" = ${status(InboxStatus.Processing)}, "locked_by" = $3, "locked_until" = $4, "lock_token" = $5
      FROM due WHERE e."id" = due."id"
      RETURNING ${COLUMNS.replace(/"(\w+)"/g, 'e."$1"')}`;
    // Taken inside the handler's transaction: holds the row lock until commit, and proves the claim
    // is still ours (the fencing token did not change).
    // It also bounds how long the transaction may sit idle: if this worker freezes (SIGSTOP, a
    // blocked event loop), the server ends the session after $3 ms, so the lock cannot outlive the lease.
    this.lockClaimed = `SELECT set_config('idle_in_transaction_session_timeout', $3, true) FROM ${t}
      WHERE "id" = $1 AND "lock_token" = $2 AND "status" = ${status(InboxStatus.Processing)} FOR UPDATE`;
    this.complete = `UPDATE ${t} SET "status" = ${status(InboxStatus.Completed)}, "processed_at" = $3, "error" = NULL,
        "next_retry_at" = NULL, "locked_by" = NULL, "locked_until" = NULL, "lock_token" = NULL
      WHERE "id" = $1 AND "lock_token" = $2`;
    // Failure or dead letter, fenced by the claim's token.
    this.recordOutcome = `UPDATE ${t} SET "status" = $3::${this.statusType}, "retry_count" = "retry_count" + 1, "error" = $4,
        "next_retry_at" = $5, "locked_by" = NULL, "locked_until" = NULL, "lock_token" = NULL
      WHERE "id" = $1 AND "lock_token" = $2`;
    // Claims whose lease ran out. A live worker holds the row lock while its handler runs, so
    // SKIP LOCKED only finds claims whose worker is gone (crashed, killed, disconnected).
    this.selectExpiredLeases = `SELECT ${COLUMNS} FROM ${t}
      WHERE "status" = ${status(InboxStatus.Processing)} AND "locked_until" <= $1
      ORDER BY "locked_until" LIMIT $2 FOR UPDATE SKIP LOCKED`;
  }

  list(filter: { status?: boolean; commandType?: boolean }): string {
    const where: string[] = [];
    let n = 1;
    if (filter.status) where.push(`"status" = $${n++}::${this.statusType}`);
    if (filter.commandType) where.push(`"command_type" = $${n++}`);
    return `SELECT ${COLUMNS} FROM ${this.table}
      ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY "received_at" DESC, "id" LIMIT $${n}`;
  }
}

export interface QueryOutcome<T> {
  rows: T[];
  affected: number;
}

/**
 * Runs one statement on a query runner, or on a fresh one from the data source (released after).
 * Returns rows and the affected-row count whatever the statement kind.
 */
export async function runQuery<T = InboxRow>(
  on: DataSource | QueryRunner,
  sql: string,
  params: unknown[],
): Promise<QueryOutcome<T>> {
  const queryRunner = isQueryRunner(on) ? on : on.createQueryRunner();
  try {
    const result = (await queryRunner.query(sql, params, true)) as { records?: T[]; affected?: number };
    return { rows: result.records ?? [], affected: result.affected ?? 0 };
  } finally {
    if (queryRunner !== on) await queryRunner.release();
  }
}

function isQueryRunner(value: DataSource | QueryRunner): value is QueryRunner {
  return typeof (value as QueryRunner).startTransaction === 'function';
}

/**
 * Drops a query runner's connection instead of returning it to the pool: the server then rolls back
 * its open transaction, and any later query through the runner fails instead of running outside it.
 */
export async function destroyConnection(queryRunner: QueryRunner, reason: Error): Promise<void> {
  const runner = queryRunner as QueryRunner & { releasePostgresConnection?: (error: Error) => Promise<void> };
  if (runner.isReleased) return;
  if (runner.releasePostgresConnection) await runner.releasePostgresConnection(reason);
  else await runner.release();
}
