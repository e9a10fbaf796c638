import { Client } from 'pg';
import { inboxSchemaSql } from '../lib/store/inbox.migration';
import { InboxStatements } from '../lib/store/statements';
// The plan and cost of the statement behind the gauges (InboxStatements.snapshot) on a table of
// 1,000,000 entries: node -r ./scripts/register-ts.cjs bench/snapshot-plan.ts (DATABASE_URL: a
// server where a database `snapshot_plan` may be created and dropped).
async function main() {
  const adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) throw new Error('Set DATABASE_URL to a PostgreSQL server this script may create a database on.');
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query('DROP DATABASE IF EXISTS snapshot_plan'); await admin.query('CREATE DATABASE snapshot_plan'); await admin.end();
  const url = new URL(adminUrl);
  url.pathname = '/snapshot_plan';
  const c = new Client({ connectionString: url.toString() });
  await c.connect();
  for (const s of inboxSchemaSql().up) await c.query(s);
  // 1,000,000 entries: 950,000 completed, 30,000 pending, 10,000 failed, 5,000 processing (1,000 of them with an expired lease), 5,000 dead letters (1,000 discarded).
  await c.query(`INSERT INTO inbox_entries (message_id, command_type, payload, status, received_at, processed_at, next_retry_at, locked_until, dead_letter_reason, dead_lettered_at, discarded_at)
    SELECT 'm' || g, 'bank.deposit', jsonb_build_object('n', g),
      s.status::inbox_status, now() - (1000000 - g) * interval '10 ms',
      CASE WHEN s.status = 'completed' THEN now() - (1000000 - g) * interval '10 ms' + interval '5 ms' END,
      CASE WHEN s.status = 'failed' THEN now() + interval '1 minute' END,
      CASE WHEN s.status = 'processing' THEN now() + CASE WHEN g % 5 = 0 THEN interval '-1 minute' ELSE interval '1 minute' END END,
      CASE WHEN s.status = 'dead_letter' THEN 'permanent_error' END,
      CASE WHEN s.status = 'dead_letter' THEN now() END,
      CASE WHEN s.status = 'dead_letter' AND g % 5 = 0 THEN now() END
    FROM generate_series(1, 1000000) g
    CROSS JOIN LATERAL (SELECT CASE WHEN g <= 950000 THEN 'completed' WHEN g <= 980000 THEN 'pending' WHEN g <= 990000 THEN 'failed' WHEN g <= 995000 THEN 'processing' ELSE 'dead_letter' END AS status) s`);
  await c.query('VACUUM ANALYZE inbox_entries');
  const sql = new InboxStatements('inbox_entries', 100);
  const text = (sql.snapshot as { text: string }).text;
  for (const label of ['recount (older than its interval)', 'read (fresh)']) {
    const { rows } = await c.query(`EXPLAIN (ANALYZE, BUFFERS, COSTS) ${text}`, [label.startsWith('recount') ? '0 milliseconds' : '1 hour', null]);
    console.log(`--- ${label}`); console.log(rows.map((r) => r['QUERY PLAN']).join('\n'));
  }
  const { rows } = await c.query(text, ['1 hour', null]);
  console.log(rows[0]);
  await c.end();
  const cleanup = new Client({ connectionString: adminUrl });
  await cleanup.connect();
  await cleanup.query('DROP DATABASE snapshot_plan');
  await cleanup.end();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
