import type { MigrationInterface, QueryRunner } from 'typeorm';
import { DEFAULT_TABLE_NAME } from '../inbox.constants';
import { resolveInboxOptions } from '../inbox-options';
import { historyTableOf, quoteTable, statusTypeOf, tableIndexPrefix } from '../inbox.sql';

/**
 * The library ships one migration and keeps every statement of it idempotent (IF NOT EXISTS). When
 * the schema grows, the migration gets a new timestamp: TypeORM then runs it again on a database
 * made by an earlier version, which creates nothing twice and adds only what is missing.
 * 1764000000000: the first schema; 1764100000000: + processing_started_at, processed_by.
 */
const MIGRATION_TIMESTAMP = 1764100000000;

/** The DDL of the inbox table, for the default or a custom table name. */
export function inboxSchemaSql(tableName: string = DEFAULT_TABLE_NAME): { up: string[]; down: string[] } {
  const table = quoteTable(tableName);
  const ix = tableIndexPrefix(tableName);
  const statusType = statusTypeOf(tableName);
  const history = quoteTable(historyTableOf(tableName));
  const hx = tableIndexPrefix(historyTableOf(tableName));
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
         "next_retry_at" timestamptz,
         "error" text,
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
         CONSTRAINT "pk_${ix}" PRIMARY KEY ("id"),
         CONSTRAINT "uq_${ix}_message_id" UNIQUE ("message_id"),
         CONSTRAINT "ck_${ix}_dead_letter_reason" CHECK ("dead_letter_reason" IN
           ('retries_exhausted', 'permanent_error', 'invalid_payload', 'no_handler', 'lease_expired', 'manual'))
       )`,
      // Columns added after the first schema (a table made by an earlier version gets them here).
      `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS "processing_started_at" timestamptz,
         ADD COLUMN IF NOT EXISTS "processed_by" varchar(255)`,
      // The claim query: due Pending/Failed entries, oldest due first.
      `CREATE INDEX IF NOT EXISTS "ix_${ix}_due" ON ${table} ((COALESCE("next_retry_at", "received_at")))
         WHERE "status" IN ('pending', 'failed')`,
      // Crash suspects (last attempt ended in an expired lease): claimed apart, one at a time.
      `CREATE INDEX IF NOT EXISTS "ix_${ix}_suspects" ON ${table} ((COALESCE("next_retry_at", "received_at")))
         WHERE "status" IN ('pending', 'failed') AND COALESCE("error", '') LIKE 'Lease expired%'`,
      // The lease sweep: Processing entries whose claim ran out.
      `CREATE INDEX IF NOT EXISTS "ix_${ix}_lease" ON ${table} ("locked_until") WHERE "status" = 'processing'`,
      // Operators' listings by status.
      `CREATE INDEX IF NOT EXISTS "ix_${ix}_status_received" ON ${table} ("status", "received_at")`,
      // Dead letters by reason.
      `CREATE INDEX IF NOT EXISTS "ix_${ix}_dead_letter_reason" ON ${table} ("dead_letter_reason", "dead_lettered_at")
         WHERE "status" = 'dead_letter'`,
      // Retention: completed entries by age (payload removal, then deletion).
      `CREATE INDEX IF NOT EXISTS "ix_${ix}_completed_payload" ON ${table} ("processed_at")
         WHERE "status" = 'completed' AND "payload" IS NOT NULL`,
      `CREATE INDEX IF NOT EXISTS "ix_${ix}_completed" ON ${table} ("processed_at") WHERE "status" = 'completed'`,
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
         CONSTRAINT "pk_${hx}" PRIMARY KEY ("id"),
         CONSTRAINT "fk_${hx}_entry" FOREIGN KEY ("entry_id") REFERENCES ${table} ("id") ON DELETE CASCADE
       )`,
      `CREATE INDEX IF NOT EXISTS "ix_${hx}_entry" ON ${history} ("entry_id", "id")`,
    ],
    down: [`DROP TABLE IF EXISTS ${history}`, `DROP TABLE IF EXISTS ${table}`],
  };
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
