// The `inbox_entries` table as both nestjs-inbox and the raw-pg floors use it: the floors run on
// the very schema the library's migration creates (same columns, enum, indexes).
import type { Client } from 'pg';
import {
  COMMAND_TYPE,
  connectClient,
  EVENTS_DDL,
  FAIL_COMMAND_TYPE,
  KEYED_COMMAND_TYPE,
  LATENCY_COMMAND_TYPE,
  NOOP_COMMAND_TYPE,
  SLOW_KEYED_COMMAND_TYPE,
  withClient,
} from '../common';
import type { Handler } from '../protocol';
import { enqueueKeyedRows } from './inbox-keyed-rows';
import type { EnqueueItem, SystemAdapter } from './types';

export const TABLE = 'inbox_entries';

const COMMAND_TYPES: Record<Handler, string> = {
  event: COMMAND_TYPE,
  fail: FAIL_COMMAND_TYPE,
  latency: LATENCY_COMMAND_TYPE,
  noop: NOOP_COMMAND_TYPE,
  keyed: KEYED_COMMAND_TYPE,
  'keyed-slow': SLOW_KEYED_COMMAND_TYPE,
};

/** Handlers that write no event row: finished when nothing of their kind is left to do. */
export function writesNoEvent(kind: Handler): boolean {
  return kind === 'noop' || kind === 'keyed-slow';
}

export function commandTypeFor(kind: Handler): string {
  return COMMAND_TYPES[kind];
}

/** Creates the table through TypeORM's migration runner (as an application would). */
export async function migrateWithTypeOrm(url: string): Promise<void> {
  const { DataSource } = require('typeorm') as typeof import('typeorm');
  const { InboxEntry, InboxMigration } = require('../../lib') as typeof import('../../lib');
  const dataSource = new DataSource({
    type: 'postgres',
    url,
    entities: [InboxEntry],
    migrations: [InboxMigration],
    installExtensions: false,
    logging: false,
  });
  await dataSource.initialize();
  try {
    await dataSource.runMigrations();
    await dataSource.query(EVENTS_DDL);
  } finally {
    await dataSource.destroy();
  }
}

/** Runs the library's migration DDL on a bare pg client (the raw floors have no TypeORM). */
export async function migrateWithPg(url: string): Promise<void> {
  // Loaded lazily: raw-pg child processes import this file and should not carry Nest/TypeORM.
  const { InboxMigration } = require('../../lib') as typeof import('../../lib');
  await withClient(url, async (client) => {
    const runner = { query: (sql: string) => client.query(sql) };
    await new InboxMigration().up(runner as never);
    await client.query(EVENTS_DDL);
  });
}

/**
 * Stores commands as Pending entries in one statement (so they become visible together): the
 * rows a `receive` would store, received in order.
 */
export async function enqueueRows(client: Client, items: EnqueueItem[], kind: Handler): Promise<void> {
  if (items.some((item) => item.orderingKey !== undefined)) return enqueueKeyedRows(client, TABLE, items, commandTypeFor(kind));
  await client.query(
    `INSERT INTO ${TABLE} ("message_id", "command_type", "payload", "received_at")
     SELECT m, $3, p, clock_timestamp() FROM unnest($1::text[], $2::jsonb[]) AS t(m, p)`,
    [items.map((i) => i.messageId), items.map((i) => JSON.stringify(i.payload)), commandTypeFor(kind)],
  );
}

/**
 * Commands of this kind that reached their final state. Event handlers write their event row in
 * the completing transaction, so the (small) events table counts Completed entries exactly without
 * scanning a large history; the failure path counts DeadLetter entries.
 */
export async function finishedRows(client: Client, kind: Handler): Promise<number> {
  const { rows } =
    kind === 'fail'
      ? await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE} WHERE "status" = 'dead_letter' AND "command_type" = $1`, [
          commandTypeFor(kind),
        ])
      : await client.query<{ n: number }>('SELECT count(*)::int AS n FROM events');
  return rows[0].n;
}

/**
 * Whether no command of this kind is left to do. No-op handlers leave no event row to count, and
 * counting Completed entries every 10 ms would cost the server more than the drain does; this
 * stops at the first unfinished entry (index on status).
 */
export async function nothingLeft(client: Client, kind: Handler): Promise<boolean> {
  const { rows } = await client.query<{ left: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM ${TABLE} WHERE "status" IN ('pending', 'processing', 'failed') AND "command_type" = $1) AS left`,
    [commandTypeFor(kind)],
  );
  return !rows[0].left;
}

export async function completedRows(client: Client, kind: Handler): Promise<number> {
  const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE} WHERE "status" = 'completed' AND "command_type" = $1`, [
    commandTypeFor(kind),
  ]);
  return rows[0].n;
}

export async function storedRows(client: Client): Promise<number> {
  const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE}`);
  return rows[0].n;
}

/** How the orchestrator fills and watches this table, for every system that runs on it. */
export const inboxTableQueue: Pick<SystemAdapter, 'openEnqueuer' | 'finished' | 'completed' | 'stored'> = {
  async openEnqueuer(url) {
    const client = await connectClient(url);
    return { enqueue: (items, kind) => enqueueRows(client, items, kind), close: () => client.end() };
  },
  finished: async (client, kind, expected) => (writesNoEvent(kind) ? nothingLeft(client, kind) : (await finishedRows(client, kind)) >= expected),
  completed: (client, kind) => completedRows(client, kind),
  stored: (client) => storedRows(client),
};
