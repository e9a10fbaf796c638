import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { InboxStatements } from '../../lib/store/statements';
import type { Statement } from '../../lib/store/connection';
import { createTestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** A plan node of EXPLAIN (FORMAT JSON), as far as these checks read it. */
interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Total Cost': number;
  Plans?: PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

/** A value as an SQL literal, for EXECUTE's arguments (the prepared statement gives each its type). */
function literal(client: Client, value: unknown): string {
  if (value === null) return 'NULL';
  if (Array.isArray(value)) return client.escapeLiteral(`{${value.map((v) => (v === null ? 'NULL' : `"${String(v)}"`)).join(',')}}`);
  return client.escapeLiteral(String(value));
}

/**
 * Some deployments set `plan_cache_mode = force_generic_plan`, and the server picks a generic plan
 * by itself once it believes it as cheap: then the planner knows no parameter's value. The hot
 * statements must keep their indexed plans, and stay below the cost that turns JIT compilation on
 * (compiling took longer than the statement itself).
 */
describe('the hot statements under a generic plan', () => {
  const WORKER_BATCH = 100;
  let db: TestDatabase;
  let client: Client;
  const statements = new InboxStatements('inbox_entries', WORKER_BATCH);
  const token = randomUUID();
  const ids = Array.from({ length: WORKER_BATCH }, () => randomUUID());

  beforeAll(async () => {
    db = await createTestDatabase('generic_plans');
    // The application's migration creates the tables.
    const app = await createTestApp({ url: db.url, inbox: { worker: false, notify: false } });
    await app.close();
    // 100,000 due entries, 300,000 completed ones, 20,000 waiting behind 2,000 keys.
    await sql(
      db.url,
      `INSERT INTO inbox_entries ("message_id", "command_type", "payload", "metadata", "received_at")
       SELECT 'due-' || g, 'plan.step', '{"n": 1}', '{}', now() - interval '1 hour' + g * interval '1 ms' FROM generate_series(1, 100000) g`,
    );
    await sql(
      db.url,
      `INSERT INTO inbox_entries ("message_id", "command_type", "payload", "metadata", "received_at", "status", "processed_at")
       SELECT 'done-' || g, 'plan.step', '{"n": 1}', '{}', now() - interval '2 hours', 'completed', now() - interval '1 hour' FROM generate_series(1, 300000) g`,
    );
    await sql(
      db.url,
      `INSERT INTO inbox_entries ("message_id", "command_type", "payload", "metadata", "received_at", "ordering_key", "ordering_seq", "waiting")
       SELECT 'wait-' || g, 'plan.step', '{"n": 1}', '{}', now() - interval '30 minutes', 'key-' || (g % 2000), 2 + g / 2000, true FROM generate_series(1, 20000) g`,
    );
    await sql(db.url, `INSERT INTO inbox_entries_keys ("ordering_key", "last_seq", "busy") SELECT 'key-' || g, 12, true FROM generate_series(0, 1999) g`);
    await sql(db.url, 'ANALYZE');
    client = new Client({ connectionString: db.url });
    await client.connect();
  }, 60_000);

  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  /** The plan of `statement` bound to `values` (generic, or custom: made for those values), run and rolled back. */
  async function planOf(mode: 'generic' | 'custom', statement: Statement, values: unknown[]): Promise<{ plan: PlanNode; jit: boolean }> {
    await client.query('BEGIN');
    try {
      await client.query(`SET LOCAL plan_cache_mode = force_${mode}_plan`);
      await client.query(`PREPARE probe AS ${statement.text}`);
      const { rows } = await client.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode; JIT?: unknown }> }>(
        `EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE probe(${values.map((value) => literal(client, value)).join(', ')})`,
      );
      const [explained] = rows[0]['QUERY PLAN'];
      return { plan: explained.Plan, jit: explained.JIT !== undefined };
    } finally {
      await client.query('ROLLBACK');
      await client.query('DEALLOCATE ALL');
    }
  }

  const cases: Array<[string, () => Statement, () => unknown[]]> = [
    ['claim', () => statements.claim, () => [null, 'plan-worker', '60000 milliseconds', token, ['plan.step']]],
    ['claim of a crash suspect', () => statements.claimSuspects, () => [null, 'plan-worker', '60000 milliseconds', token, ['plan.step']]],
    ['lock of the claimed entries', () => statements.lockClaimed, () => [ids, token, '60000']],
    ['completion', () => statements.complete, () => [ids, token, ids.map(() => 2), ids.map(() => 1), 'plan-worker', null]],
    ['receive', () => statements.receive, () => ['new-1', 'plan.step', '{"n": 2}', null, null, '{}', null, null, null]],
    ['receive with an ordering key', () => statements.receiveKeyed, () => ['new-2', 'plan.step', '{"n": 2}', null, null, '{}', null, null, null, 'key-7']],
    // Ten keys: what a generic plan assumes of an array it cannot see (fewer make the custom plan cheaper by as much).
    ['hand-over of keys', () => statements.settleKeys, () => [Array.from({ length: 10 }, (_, i) => `key-${i}`), null]],
    ['probe for crash suspects', () => statements.anySuspectDue, () => [null, ['plan.step']]],
  ];

  it.each(cases)('keeps the %s indexed, as cheap as its custom plan and below the JIT threshold', async (_name, statement, values) => {
    const { plan, jit } = await planOf('generic', statement(), values());
    const custom = await planOf('custom', statement(), values());
    const scans = nodes(plan).filter((node) => node['Node Type'] === 'Seq Scan' && node['Relation Name'] === 'inbox_entries');
    expect(scans).toEqual([]);
    expect(jit).toBe(false);
    // Estimated: a planner that guesses where it cannot know a value plans for far more rows.
    expect(plan['Total Cost']).toBeLessThanOrEqual(2 * custom.plan['Total Cost']);
  });

  it('claims the batch it was written for, under a generic plan too', async () => {
    await client.query('BEGIN');
    try {
      const { rows } = await client.query({ text: statements.claim.text, values: [null, 'plan-worker', '60000 milliseconds', token, ['plan.step']] });
      expect(rows).toHaveLength(WORKER_BATCH);
    } finally {
      await client.query('ROLLBACK');
    }
  });
});
