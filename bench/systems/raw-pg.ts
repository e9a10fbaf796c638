// Floors: what bare node-postgres does on the very same table (the library's migration) with the
// same guarantee as nestjs-inbox (the event row commits together with the completion). With the
// no-op handler the batch floor only claims and completes.
import { Pool, type PoolClient } from 'pg';
import { envInt, EVENT_INSERT } from '../common';
import { runSendRole, runWorkRole, type Sender } from '../roles';
import { commandTypeFor, inboxTableQueue, migrateWithPg, TABLE } from './inbox-table';
import type { SystemAdapter } from './types';

/** Floor settings (env overrides for tuning runs: BENCH_RAW_LOOPS, _BATCH, _PER_COMMAND_LOOPS). */
export const RAW_FLOOR = {
  /** Concurrent claim loops (one connection each) of the batch floor. */
  batchLoops: envInt('BENCH_RAW_LOOPS', 4),
  batchSize: envInt('BENCH_RAW_BATCH', 100),
  /** Concurrent loops of the one-transaction-per-command floor. */
  perCommandLoops: envInt('BENCH_RAW_PER_COMMAND_LOOPS', 8),
  pollIntervalMs: 10,
};
export const RAW_SENDER_POOL = 8;

// The receive floor: the library's INSERT minus RETURNING (it tells nothing about a duplicate).
const BARE_INSERT = `INSERT INTO ${TABLE} ("message_id", "command_type", "payload", "correlation_id", "causation_id", "metadata", "received_at")
  VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb, $7) ON CONFLICT ("message_id") DO NOTHING`;

/** The batch floor: every command of a batch in one multi-row insert. */
const BARE_INSERT_MANY = `INSERT INTO ${TABLE} ("message_id", "command_type", "payload", "metadata", "received_at")
  SELECT "m", $2, "p"::jsonb, '{}'::jsonb, now() FROM unnest($1::varchar[], $3::text[]) AS i("m", "p") ON CONFLICT ("message_id") DO NOTHING`;

const CLAIM = `SELECT "id", "message_id", "payload" FROM ${TABLE}
  WHERE "status" IN ('pending', 'failed') AND COALESCE("next_retry_at", "received_at") <= now()
  ORDER BY COALESCE("next_retry_at", "received_at") LIMIT $1 FOR UPDATE SKIP LOCKED`;
const COMPLETE = `UPDATE ${TABLE} SET "status" = 'completed', "processed_at" = now() WHERE "id" = ANY($1::uuid[])`;

interface Claimed {
  id: string;
  message_id: string;
  payload: Record<string, unknown>;
}

/** One transaction: claim up to `limit`, one event INSERT per command (unless no-op), mark them completed. */
async function processBatch(client: PoolClient, limit: number, insertEvents: boolean): Promise<number> {
  await client.query('BEGIN');
  try {
    const { rows } = await client.query<Claimed>(CLAIM, [limit]);
    if (insertEvents) for (const row of rows) await client.query(EVENT_INSERT, [row.message_id, JSON.stringify(row.payload)]);
    if (rows.length > 0) await client.query(COMPLETE, [rows.map((r) => r.id)]);
    await client.query('COMMIT');
    return rows.length;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

export const rawPgAdapter: SystemAdapter = {
  name: 'raw-pg',
  settings: () => [
    `receive floor: pg.Pool max ${RAW_SENDER_POOL}, INSERT … ON CONFLICT (message_id) DO NOTHING (no RETURNING) into the library's own table; ` +
      'intake floor: the same as one INSERT … SELECT FROM unnest(…) per batch',
    `drain floors: batch = ${RAW_FLOOR.batchLoops} loops × (BEGIN; SELECT … LIMIT ${RAW_FLOOR.batchSize} FOR UPDATE SKIP LOCKED; one INSERT per command; UPDATE … = ANY; COMMIT); ` +
      `per-command = ${RAW_FLOOR.perCommandLoops} loops × (BEGIN; claim 1; INSERT; UPDATE; COMMIT); idle poll ${RAW_FLOOR.pollIntervalMs} ms; ` +
      `no-op drain: the batch floor without the INSERTs (BEGIN; claim; UPDATE; COMMIT)`,
  ],
  prepare: (url) => migrateWithPg(url),
  ...inboxTableQueue,
  roles: {
    send: (spec, commands) =>
      runSendRole(spec, commands, async (): Promise<Sender> => {
        const pool = new Pool({ connectionString: spec.url, max: RAW_SENDER_POOL });
        const commandType = commandTypeFor('event');
        return {
          call: (messageId, payload) => pool.query(BARE_INSERT, [messageId, commandType, JSON.stringify(payload), null, null, '{}', new Date()]),
          callMany: (items) => pool.query(BARE_INSERT_MANY, [items.map((item) => item.messageId), commandType, items.map((item) => JSON.stringify(item.payload))]),
          close: () => pool.end(),
        };
      }),
    work: (spec, commands) =>
      runWorkRole(spec, commands, async () => {
        const handler = spec.handler ?? 'event';
        if (handler !== 'event' && handler !== 'noop') throw new Error(`raw-pg has no "${handler}" worker`);
        const perCommand = spec.variant === 'per-command';
        const loops = perCommand ? RAW_FLOOR.perCommandLoops : RAW_FLOOR.batchLoops;
        const limit = perCommand ? 1 : RAW_FLOOR.batchSize;
        const pool = new Pool({ connectionString: spec.url, max: loops });
        let stopping = false;
        let wake: Array<() => void> = [];
        const idle = () =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, RAW_FLOOR.pollIntervalMs);
            wake.push(() => {
              clearTimeout(timer);
              resolve();
            });
          });
        const loop = async () => {
          const client = await pool.connect();
          try {
            while (!stopping) {
              const n = await processBatch(client, limit, handler === 'event');
              if (n === 0) await idle();
            }
          } finally {
            client.release();
          }
        };
        const running = Array.from({ length: loops }, () => loop());
        return {
          nudge: () => {
            const waiting = wake;
            wake = [];
            waiting.forEach((fn) => fn());
          },
          stop: async () => {
            stopping = true;
            wake.forEach((fn) => fn());
            await Promise.all(running);
            await pool.end();
          },
        };
      }),
  },
};
