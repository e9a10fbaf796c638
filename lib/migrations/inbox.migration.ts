import type { MigrationInterface, QueryRunner } from 'typeorm';
import { DEFAULT_TABLE_NAME } from '../inbox.constants';
import { resolveInboxOptions } from '../inbox-options';
import { inboxIdentifiers, type NameKind } from '../inbox-identifiers';

/**
 * The library ships one migration and keeps every statement of it idempotent (IF NOT EXISTS). When
 * the schema grows, the migration gets a new timestamp: TypeORM then runs it again on a database
 * made by an earlier version, which creates nothing twice and adds only what is missing.
 * 1764000000000: the first schema; 1764100000000: + processing_started_at, processed_by;
 * 1764200000000: + max_attempts, last_outcome (crash suspects as a stored fact, not error text).
 */
const MIGRATION_TIMESTAMP = 1764200000000;

/** The DDL of the inbox table, for the default or a custom table name. */
export function inboxSchemaSql(tableName: string = DEFAULT_TABLE_NAME): { up: string[]; down: string[] } {
  const names = inboxIdentifiers(tableName);
  const { table, statusType, history } = names;
  const name = (kind: NameKind, suffix?: string) => `"${names.name(kind, suffix)}"`;
  const historyName = (kind: NameKind, suffix?: string) => `"${names.historyName(kind, suffix)}"`;
  return {
    up: [
      // CREATE TYPE has no IF NOT EXISTS; several inbox tables share the type.
      `DO $$ BEGIN
         CREATE TYPE ${statusType} AS ENUM ('pending', 'processing', 'completed', 'failed', 'dead_letter');
       EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
      `CREATE TABLE IF NOT EXISTS ${table} (
         "id" uuid NOT NULL DEFAULT gen_random_uuid(),
         "message_id" varchar(255) NOT NULL,
         "command_type" varchar(255) NOT NULL,
         "payload" jsonb,
         "payload_digest" varchar(32),
         "status" ${statusType} NOT NULL DEFAULT 'pending',
         "retry_count" integer NOT NULL DEFAULT 0,
         "max_attempts" integer,
         "next_retry_at" timestamptz,
         "error" text,
         "last_outcome" varchar(32),
         "received_at" timestamptz NOT NULL DEFAULT now(),
         "processed_at" timestamptz,
         "processing_started_at" timestamptz,
         "processed_by" varchar(255),
         "correlation_id" varchar(255),
         "causation_id" varchar(255),
         "metadata" jsonb NOT NULL DEFAULT '{}',
         "locked_by" varchar(255),
         "locked_until" timestamptz,
         "lock_token" uuid,
         "dead_letter_reason" varchar(32),
         "dead_lettered_at" timestamptz,
         "discarded_at" timestamptz,
         CONSTRAINT ${name('pk')} PRIMARY KEY ("id"),
         CONSTRAINT ${name('uq', 'message_id')} UNIQUE ("message_id"),
         CONSTRAINT ${name('ck', 'dead_letter_reason')} CHECK ("dead_letter_reason" IN
           ('retries_exhausted', 'permanent_error', 'invalid_payload', 'no_handler', 'lease_expired', 'manual'))
       )`,
      // Columns added after the first schema (a table made by an earlier version gets them here).
      `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS "processing_started_at" timestamptz,
         ADD COLUMN IF NOT EXISTS "processed_by" varchar(255),
         ADD COLUMN IF NOT EXISTS "max_attempts" integer,
         ADD COLUMN IF NOT EXISTS "last_outcome" varchar(32)`,
      // Before last_outcome, a crash suspect was recognised by its error text; carry that over once.
      `UPDATE ${table} SET "last_outcome" = 'lease_expired'
         WHERE "last_outcome" IS NULL AND "status" IN ('pending', 'failed', 'dead_letter')
           AND (COALESCE("error", '') LIKE 'Lease expired%' OR "dead_letter_reason" = 'lease_expired')`,
      // The claim query: due Pending/Failed entries, oldest due first.
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'due')} ON ${table} ((COALESCE("next_retry_at", "received_at")))
         WHERE "status" IN ('pending', 'failed')`,
      // Crash suspects (last attempt ended with its worker gone): claimed apart, one at a time.
      `DROP INDEX IF EXISTS ${schemaOf(tableName)}${name('ix', 'suspects')}`,
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'crash_suspects')} ON ${table} ((COALESCE("next_retry_at", "received_at")))
         WHERE "status" IN ('pending', 'failed') AND "last_outcome" = 'lease_expired'`,
      // The lease sweep: Processing entries whose claim ran out.
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'lease')} ON ${table} ("locked_until") WHERE "status" = 'processing'`,
      // Operators' listings by status.
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'status_received')} ON ${table} ("status", "received_at")`,
      // Dead letters by reason.
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'dead_letter_reason')} ON ${table} ("dead_letter_reason", "dead_lettered_at")
         WHERE "status" = 'dead_letter'`,
      // Retention: completed entries by age (payload removal, then deletion).
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'completed_payload')} ON ${table} ("processed_at")
         WHERE "status" = 'completed' AND "payload" IS NOT NULL`,
      `CREATE INDEX IF NOT EXISTS ${name('ix', 'completed')} ON ${table} ("processed_at") WHERE "status" = 'completed'`,
      // Append-only history: every attempt and every operator action. Deleted with its entry.
      `CREATE TABLE IF NOT EXISTS ${history} (
         "id" bigint GENERATED ALWAYS AS IDENTITY,
         "entry_id" uuid NOT NULL,
         "event" varchar(32) NOT NULL,
         "attempt" integer,
         "outcome" varchar(32),
         "started_at" timestamptz,
         "finished_at" timestamptz,
         "duration_ms" integer,
         "error_class" varchar(255),
         "error_message" text,
         "error_stack" text,
         "worker_id" varchar(255),
         "actor" varchar(255),
         "reason" text,
         "previous_payload" jsonb,
         "recorded_at" timestamptz NOT NULL DEFAULT now(),
         CONSTRAINT ${historyName('pk')} PRIMARY KEY ("id"),
         CONSTRAINT ${historyName('fk', 'entry')} FOREIGN KEY ("entry_id") REFERENCES ${table} ("id") ON DELETE CASCADE
       )`,
      `CREATE INDEX IF NOT EXISTS ${historyName('ix', 'entry')} ON ${history} ("entry_id", "id")`,
    ],
    down: [`DROP TABLE IF EXISTS ${history}`, `DROP TABLE IF EXISTS ${table}`],
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
      for (const statement of sql.up) await queryRunner.query(statement);
    }

    async down(queryRunner: QueryRunner): Promise<void> {
      for (const statement of sql.down) await queryRunner.query(statement);
    }
  };
}

/** Migration that creates the default `inbox_entries` table; add it to your data source's `migrations`. */
export const InboxMigration = createInboxMigration();
