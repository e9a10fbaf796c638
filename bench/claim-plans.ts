// The claim's plans, custom and generic, on a large table:
//   DATABASE_URL=postgres://… node -r ./scripts/register-ts.cjs bench/claim-plans.ts
// Creates a scratch database beside DATABASE_URL's with 100,000 due entries and 1,000,000
// completed ones (analysed), prepares the worker's claim (batch of 100) and runs it under
// `plan_cache_mode = force_custom_plan` and `force_generic_plan`, each with sorting allowed and
// disabled (as the worker claims during a backlog), under EXPLAIN (ANALYZE, BUFFERS), rolled back.
import { randomUUID } from 'node:crypto';
import { InboxStatements } from '../lib/store/statements';
import { runTool, withScratchInbox } from './scratch-inbox';


async function main(): Promise<void> {
  await withScratchInbox('inbox_claim_plans', 'a PostgreSQL server', async (client) => {
    await client.query(`INSERT INTO inbox_entries ("message_id", "command_type", "payload", "metadata", "received_at")
      SELECT 'due-' || g, 'bench.order', '{"n": 1}', '{}', now() - interval '1 hour' + g * interval '1 ms' FROM generate_series(1, 100000) g`);
    await client.query(`INSERT INTO inbox_entries ("message_id", "command_type", "payload", "metadata", "received_at", "status", "processed_at")
      SELECT 'done-' || g, 'bench.order', '{"n": 1}', '{}', now() - interval '2 hours', 'completed', now() - interval '1 hour' FROM generate_series(1, 1000000) g`);
    await client.query('VACUUM ANALYZE inbox_entries');
    const claim = new InboxStatements('inbox_entries', 100).claim.text;
    const values = [null, 'plans-worker', '60000 milliseconds', randomUUID(), '{bench.order}'].map((v) => (v === null ? 'NULL' : client.escapeLiteral(v)));
    for (const mode of ['custom', 'generic']) {
      for (const sorting of ['on', 'off']) {
        await client.query('BEGIN');
        try {
          await client.query(`SET LOCAL plan_cache_mode = force_${mode}_plan`);
          await client.query(`SET LOCAL enable_sort = ${sorting}`);
          await client.query(`PREPARE claim AS ${claim}`);
          const { rows } = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) EXECUTE claim(${values.join(', ')})`);
          console.log(`--- ${mode} plan, sorting ${sorting}`);
          console.log(rows.map((row) => row['QUERY PLAN']).join('\n'));
        } finally {
          await client.query('ROLLBACK');
          await client.query('DEALLOCATE ALL');
        }
      }
    }
  });
}

runTool(main);
