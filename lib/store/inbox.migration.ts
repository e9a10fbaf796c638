import type { MigrationInterface, QueryRunner } from 'typeorm';
import { DEFAULT_TABLE_NAME } from '../inbox.constants';
import { resolveInboxOptions } from '../inbox-options';
import { AttemptOutcome, DeadLetterReason, HistoryEvent, InboxStatus } from '../state/inbox-state-machine';
import { inboxIdentifiers, type NameKind } from './identifiers';
import {
  addedColumnDefinitions,
  columnDefinitions,
  DEAD_LETTER_REASON_VALUES,
  HISTORY_COLUMNS,
  INBOX_COLUMNS,
  KEY_COLUMNS,
  SCHEMA_VERSIONS,
  SNAPSHOT_COLUMNS,
  STATUS_VALUES,
} from './schema';

/**
 * The library ships one migration and keeps every statement of it idempotent (IF NOT EXISTS). When
 * the schema grows, the migration gets a new timestamp (the latest of SCHEMA_VERSIONS): TypeORM
 * then runs it again on a database made by an earlier version, which creates nothing twice and
 * adds only what is missing. Columns, enum values and allowed reasons come from `schema.ts` and
 * the state machine.
 */
const MIGRATION_TIMESTAMP = Math.max(...Object.values(SCHEMA_VERSIONS));

/** The advisory lock every inbox migration holds while it runs (tables share the status type). */
const MIGRATION_LOCK_KEY = 7_360_042_011_000_001n;

/** The DDL of the inbox table, for the default or a custom table name. */
export function inboxSchemaSql(tableName: string = DEFAULT_TABLE_NAME): { up: string[]; down: string[] } {
  const names = inboxIdentifiers(tableName);
  const { table, statusType, history, keys, snapshot } = names;
  const name = (kind: NameKind, suffix?: string) => `"${names.name(kind, suffix)}"`;
  const historyName = (kind: NameKind, suffix?: string) => `"${names.historyName(kind, suffix)}"`;
  const keysName = (kind: NameKind, suffix?: string) => `"${names.keysName(kind, suffix)}"`;
  const snapshotName = (kind: NameKind, suffix?: string) => `"${names.snapshotName(kind, suffix)}"`;
  const open = `"status" IN ('${InboxStatus.Pending}', '${InboxStatus.Failed}')`;
  const q = (status: InboxStatus) => `'${status}'`;
  return {
    up: [
      // CREATE TYPE has no IF NOT EXISTS; several inbox tables share the type.
      `DO $$ BEGIN
         CREATE TYPE ${statusType} AS ENUM (${STATUS_VALUES});
       EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
      `CREATE TABLE IF NOT EXISTS ${table} (
         ${columnDefinitions(INBOX_COLUMNS, statusType).join(',\n         ')},
         CONSTRAINT ${name('pk')} PRIMARY KEY ("id"),
         CONSTRAINT ${name('uq', 'message_id')} UNIQUE ("message_id"),
         CONSTRAINT ${name('ck', 'dead_letter_reason')} CHECK ("dead_letter_reason" IN (${DEAD_LETTER_REASON_VALUES}))
       )`,
      // Columns added after the first schema (a table made by an earlier version gets them here).
      `ALTER TABLE ${table} ${addedColumnDefinitions(statusType).map((column) => `ADD COLUMN IF NOT EXISTS ${column}`).join(', ')}`,
      // Before last_outcome, a crash suspect was recognised by its error text; carry that over once.
      `UPDATE ${table} SET "last_outcome" = '${AttemptOutcome.LeaseExpired}'
         WHERE "last_outcome" IS NULL AND "status" IN ('${InboxStatus.Pending}', '${InboxStatus.Failed}', '${InboxStatus.DeadLetter}')
           AND (COALESCE("error", '') LIKE 'Lease expired%' OR "dead_letter_reason" = '${DeadLetterReason.LeaseExpired}')`,
      // The claim query: due Pending/Failed entries that wait behind no other, oldest due first.
      `DROP INDEX IF EXISTS ${schemaOf(tableName)}${name('ix', 'due')}`,
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'claimable')} ON ${table} ((COALESCE("next_retry_at", "received_at"))) WHERE ${open} AND NOT "waiting"`,
      // Crash suspects (last attempt ended with its worker gone): claimed apart, one at a time.
      `DROP INDEX IF EXISTS ${schemaOf(tableName)}${name('ix', 'suspects')}`,
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'crash_suspects')} ON ${table} ((COALESCE("next_retry_at", "received_at")))
         WHERE ${open} AND "last_outcome" = '${AttemptOutcome.LeaseExpired}'`,
      // The lease sweep: Processing entries whose claim ran out.
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'lease')} ON ${table} ("locked_until") WHERE "status" = '${InboxStatus.Processing}'`,
      // Operators' listings by status.
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'status_received')} ON ${table} ("status", "received_at")`,
      // Dead letters by reason.
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'dead_letter_reason')} ON ${table} ("dead_letter_reason", "dead_lettered_at")
         WHERE "status" = '${InboxStatus.DeadLetter}'`,
      // Retention: completed entries by age (payload removal, then deletion).
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'completed_payload')} ON ${table} ("processed_at")
         WHERE "status" = '${InboxStatus.Completed}' AND "payload" IS NOT NULL`,
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'completed')} ON ${table} ("processed_at") WHERE "status" = '${InboxStatus.Completed}'`,
      // Ordering keys: the entries waiting behind an earlier one of their key, in their key's order…
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'waiting')} ON ${table} ("ordering_key", "ordering_seq") WHERE "waiting"`,
      // …and the one entry that holds each key (unique: two would run side by side).
      `CREATE UNIQUE INDEX IF NOT EXISTS ${name('ix', 'key_holder')} ON ${table} ("ordering_key")
         WHERE "ordering_key" IS NOT NULL AND NOT "waiting"
           AND ("status" IN (${q(InboxStatus.Pending)}, ${q(InboxStatus.Failed)}, ${q(InboxStatus.Processing)}) OR "blocks_key")`,
      `CREATE TABLE IF NOT EXISTS ${keys} (
         ${columnDefinitions(KEY_COLUMNS, statusType).join(',\n         ')},
         CONSTRAINT ${keysName('pk')} PRIMARY KEY ("ordering_key")
       )`,
      // The metrics' figures, one row, shared by every instance.
      `CREATE TABLE IF NOT EXISTS ${snapshot} (
         ${columnDefinitions(SNAPSHOT_COLUMNS, statusType).join(',\n         ')},
         CONSTRAINT ${snapshotName('pk')} PRIMARY KEY ("id"),
         CONSTRAINT ${snapshotName('ck', 'one_row')} CHECK ("id" = 1)
       )`,
      `INSERT INTO ${snapshot} ("id") VALUES (1) ON CONFLICT ("id") DO NOTHING`,
      // Append-only history: every failed attempt and every operator action. Deleted with its entry.
      `CREATE TABLE IF NOT EXISTS ${history} (
         ${columnDefinitions(HISTORY_COLUMNS, statusType).join(',\n         ')},
         CONSTRAINT ${historyName('pk')} PRIMARY KEY ("id"),
         CONSTRAINT ${historyName('fk', 'entry')} FOREIGN KEY ("entry_id") REFERENCES ${table} ("id") ON DELETE CASCADE
       )`,
      `CREATE INDEX IF NOT EXISTS ${historyName('ix', 'entry')} ON ${history} ("entry_id", "id")`,
      // The dead-letter outcome and action had another spelling before: one spelling everywhere.
      `UPDATE ${history} SET "outcome" = '${AttemptOutcome.DeadLetter}' WHERE "outcome" = 'dead_lettered'`,
      `UPDATE ${history} SET "event" = '${HistoryEvent.DeadLetter}' WHERE "event" = 'dead_lettered'`,
    ],
    down: [`DROP TABLE IF EXISTS ${snapshot}`, `DROP TABLE IF EXISTS ${keys}`, `DROP TABLE IF EXISTS ${history}`, `DROP TABLE IF EXISTS ${table}`],
  };
}

/** `"schema".` for a schema-qualified table name: DROP INDEX needs it, CREATE INDEX does not. */
function schemaOf(tableName: string): string {
  const dot = tableName.indexOf('.');
  return dot < 0 ? '' : `"${tableName.slice(0, dot)}".`;
}

/**
 * Builds a migration class for an inbox table. `InboxMigration` is the one for the default table;
 * call this when you configured `tableName`.
 */
export function createInboxMigration(tableName: string = DEFAULT_TABLE_NAME): new () => MigrationInterface {
  resolveInboxOptions({ tableName }); // same identifier check as the module
  const sql = inboxSchemaSql(tableName);
  const suffix = tableName === DEFAULT_TABLE_NAME ? '' : tableName.replace(/[^a-z0-9]/g, '_');
  return class InboxMigrationForTable implements MigrationInterface {
    readonly name = `CreateInboxEntries${suffix}${MIGRATION_TIMESTAMP}`;

    async up(queryRunner: QueryRunner): Promise<void> {
      // Two instances that boot at once both run it: the second would fail on the first's
      // uncommitted type or table (a unique violation in the catalog, not "already exists").
      // One at a time, in a transaction until it commits; the second then finds everything there.
      const inTransaction = queryRunner.isTransactionActive === true;
      await queryRunner.query(`SELECT ${inTransaction ? 'pg_advisory_xact_lock' : 'pg_advisory_lock'}(${MIGRATION_LOCK_KEY})`);
      try {
        for (const statement of sql.up) await queryRunner.query(statement);
      } finally {
        if (!inTransaction) await queryRunner.query(`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`);
      }
    }

    async down(queryRunner: QueryRunner): Promise<void> {
      for (const statement of sql.down) await queryRunner.query(statement);
    }
  };
}

/** Migration that creates the default `inbox_entries` table; add it to your data source's `migrations`. */
export const InboxMigration = createInboxMigration();
