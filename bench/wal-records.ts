// What the server writes for one batch of the drain, record by record (pg_walinspect, PostgreSQL 15+):
//   DATABASE_URL=postgres://… node -r ./scripts/register-ts.cjs bench/wal-records.ts
// Creates a scratch database beside DATABASE_URL's, stores 1,000 Pending entries through the
// library's migration, then runs the worker's own statements for one batch of 100 with a no-op
// handler (claim, lock, complete, each committed) and prints the WAL records each one wrote.
import { randomUUID } from 'node:crypto';
import { InboxStatements } from '../lib/store/statements';
import { runTool, withScratchInbox } from './scratch-inbox';

const BATCH = 100;

async function main(): Promise<void> {
  await withScratchInbox('inbox_wal_records', 'a PostgreSQL 15+ server with the pg_walinspect extension available', async (client) => {
    await client.query('CREATE EXTENSION IF NOT EXISTS pg_walinspect');
    await client.query(`INSERT INTO inbox_entries ("message_id", "command_type", "payload", "metadata", "received_at")
      SELECT 'wal-' || g, 'bench.noop', '{"n": 1}', '{}', now() - interval '1 hour' + g * interval '1 ms' FROM generate_series(1, 1000) g`);
    const sql = new InboxStatements('inbox_entries', BATCH);
    const token = randomUUID();
    let ids: string[] = [];
    const steps: Array<[string, () => Promise<void>]> = [
      ['claim (one statement, committed)', async () => {
        ids = (await client.query<{ id: string }>(sql.claim.text, [null, 'wal-worker', '60000 milliseconds', token, ['bench.noop']])).rows.map((row) => row.id);
      }],
      ['lock of the claimed rows (the batch transaction, committed alone here)', async () => {
        await client.query('BEGIN');
        await client.query(sql.lockClaimed.text, [ids, token, '60000']);
        await client.query('COMMIT');
      }],
      ['completion (committed)', async () => {
        await client.query('BEGIN');
        await client.query(sql.complete.text, [ids, token, ids.map(() => 1), ids.map(() => 0), 'wal-worker', null]);
        await client.query('COMMIT');
      }],
    ];
    for (const [label, step] of steps) {
      const from = (await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn;
      await step();
      const { rows } = await client.query<{ record: string; count: string; bytes: string }>(
        `SELECT "resource_manager/record_type" AS record, count::text, combined_size::text AS bytes
         FROM pg_get_wal_stats($1::pg_lsn, pg_current_wal_lsn(), true) WHERE count > 0 ORDER BY combined_size DESC`,
        [from],
      );
      const total = rows.reduce((sum, row) => sum + Number(row.bytes), 0);
      console.log(`${label}: ${(total / BATCH).toFixed(0)} B per entry`);
      for (const row of rows) console.log(`  ${row.record.padEnd(22)} ${row.count.padStart(5)} records ${(Number(row.bytes) / BATCH).toFixed(0).padStart(5)} B per entry`);
    }
  });
}

runTool(main);
