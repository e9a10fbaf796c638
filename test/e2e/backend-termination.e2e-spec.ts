import path from 'node:path';
import { Client } from 'pg';
import { EFFECTS_TABLE_SQL } from '../fixtures/handlers';
import { ChildWorker } from '../support/child-worker';
import { proxyFor, type TcpProxy } from '../support/tcp-proxy';
import { createTestApp, waitFor } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

const RESTART_WORKER = path.join(__dirname, '..', 'fixtures', 'restart-worker.ts');
const OPERATOR_APP = path.join(__dirname, '..', 'fixtures', 'operator-app.ts');
const APPLICATION_NAME = 'restart-worker';

/** What a termination found a backend doing. */
type Moment = 'starting' | 'idle' | 'mid-claim' | 'mid-batch' | 'mid-handler' | 'listening';

interface Terminated {
  state: string | null;
  query: string;
}

function momentOf({ state, query }: Terminated): Moment {
  if (state === null || state === '') return 'starting';
  if (/^LISTEN/i.test(query) && state === 'idle') return 'listening';
  if (state === 'idle') return 'idle';
  if (state.startsWith('idle in transaction')) return 'mid-batch';
  if (/pg_sleep/.test(query)) return 'mid-handler';
  return 'mid-claim';
}

// What a PostgreSQL restart does to a worker: every backend of its database is terminated
// (57P01, "terminating connection due to administrator command"), whatever the connection was
// doing, including connections still being set up. The worker must live through it.
describe('backends terminated under a running worker', () => {
  let db: TestDatabase;
  let admin: Client;
  let child: ChildWorker | undefined;
  let proxy: TcpProxy | undefined;

  beforeAll(async () => {
    db = await createTestDatabase('termination');
    await sql(db.url, EFFECTS_TABLE_SQL);
    const setup = await createTestApp({ url: db.url, inbox: { worker: false } });
    await setup.close();
    admin = new Client({ connectionString: db.url });
    admin.on('error', () => undefined);
    await admin.connect();
  });

  afterEach(async () => {
    await child?.kill();
    child = undefined;
    await proxy?.close();
    proxy = undefined;
  });

  afterAll(async () => {
    await admin?.end().catch(() => undefined);
    await db?.drop();
  });

  let sequence = 0;
  const insert = async (count: number, payload: { sleepMs?: number }, prefix = 'cmd') => {
    const ids = Array.from({ length: count }, () => `${prefix}-${sequence++}`);
    await admin.query(`INSERT INTO inbox_entries (message_id, command_type, payload) SELECT m, 'test.restart', $2 FROM unnest($1::text[]) AS m`, [
      ids,
      JSON.stringify(payload),
    ]);
    return ids;
  };

  /** The worker's backends as pg_stat_activity shows them. */
  const backends = async () =>
    (
      await admin.query<Terminated & { pid: number }>(
        `SELECT pid, state, query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1`,
        [APPLICATION_NAME],
      )
    ).rows;

  /** Every backend of the test database but ours, as a restart would. */
  const terminateAll = async (): Promise<Terminated[]> =>
    (
      await admin.query<Terminated>(
        `SELECT state, query, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`,
      )
    ).rows;

  /** Polls pg_stat_activity back to back (a connection is set up in a few milliseconds) until `found`. */
  const whenBackends = async (found: (rows: Terminated[]) => boolean, description: string, timeoutMs = 5_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (found(await backends())) return true;
      if (child!.process.exitCode !== null || child!.process.signalCode !== null) throw new Error(`the worker exited while waiting for ${description}:\n${child!.log}`);
      if (Date.now() > deadline) return false;
    }
  };

  const alive = () => child!.process.exitCode === null && child!.process.signalCode === null;

  /** Waits for the commands to complete, on the worker that is still running. */
  const completes = (ids: string[]) =>
    waitFor(
      async () => (await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM inbox_entries WHERE message_id = ANY($1) AND status = 'completed'`, [ids])).rows[0].n === ids.length,
      'the commands sent after the terminations to complete',
      30_000,
    );

  it('survives connections that the server ends the moment they are set up', async () => {
    proxy = proxyFor(db.url);
    child = new ChildWorker(RESTART_WORKER, [await proxy.start(db.url), APPLICATION_NAME]);
    await child.waitForLine('READY');
    await completes(await insert(4, {}, 'before'));

    // Its connections drop; the pool opens new ones, each of which the server ends right after its setup.
    proxy.terminateAfterStartup(5, (pid) => admin.query('SELECT pg_terminate_backend($1)', [pid]));
    await insert(4, {});
    await terminateAll();
    await waitFor(() => proxy!.terminatedAtStartup === 5 || !alive(), 'five connections ended at their setup');

    expect(child.log).not.toMatch(/Unhandled 'error' event/);
    expect(alive()).toBe(true);
    await completes(await insert(10, {}, 'after'));
    expect(alive()).toBe(true);
  });

  it('keeps an application alive that only reads the inbox, its data source initialised after boot, when new connections are ended at once', async () => {
    proxy = proxyFor(db.url);
    child = new ChildWorker(OPERATOR_APP, [await proxy.start(db.url), APPLICATION_NAME]);
    await child.waitForLine('READY');
    // Its connections drop; the pool opens new ones, each of which the server ends right after its setup.
    proxy.terminateAfterStartup(5, (pid) => admin.query('SELECT pg_terminate_backend($1)', [pid]));
    await terminateAll();
    await waitFor(() => proxy!.terminatedAtStartup === 5 || !alive(), 'five connections ended at their setup');
    expect(child.log).not.toMatch(/Unhandled 'error' event/);
    expect(alive()).toBe(true);
    // And it answers again.
    await waitFor(async () => (await backends()).some((row) => /count/i.test(row.query)) || !alive(), 'a new statement from it');
    expect(alive()).toBe(true);
  });

  it('survives terminations while idle, connecting, claiming, mid-batch and mid-handler, then completes new commands', async () => {
    child = new ChildWorker(RESTART_WORKER, [db.url, APPLICATION_NAME]);
    await child.waitForLine('READY');
    const hits = new Map<Moment, number>();
    const record = (rows: Terminated[]) => rows.forEach((row) => hits.set(momentOf(row), (hits.get(momentOf(row)) ?? 0) + 1));

    for (let round = 0; round < 6 && alive(); round++) {
      // Idle: connections parked in the pool (and the LISTEN connection).
      if (await whenBackends((rows) => rows.some((row) => row.state === 'idle' && !/^LISTEN/i.test(row.query)), 'an idle connection')) record(await terminateAll());
      // Mid-handler: a handler inside its statement, its batch's transaction open.
      await insert(2, { sleepMs: 200 });
      if (await whenBackends((rows) => rows.some((row) => /pg_sleep/.test(row.query) && row.state === 'active'), 'a handler mid-statement')) record(await terminateAll());
      // Claiming and batches under way (crash suspects among them: every batch cut above comes back as one).
      await insert(8, {});
      if (await whenBackends((rows) => rows.some((row) => row.state !== 'idle' && !/pg_sleep/.test(row.query)), 'a claim or batch under way')) record(await terminateAll());
      // Connecting: the worker reconnects at once after a termination; cut the new connections too.
      for (let cut = 0; cut < 10 && alive(); cut++) {
        if (await whenBackends((rows) => rows.length > 0, 'a new connection', 2_000)) record(await terminateAll());
      }
    }

    expect(child.log).not.toMatch(/Unhandled 'error' event|uncaughtException/);
    expect(alive()).toBe(true);
    expect(hits.get('idle') ?? 0).toBeGreaterThan(0);
    expect(hits.get('mid-handler') ?? 0).toBeGreaterThan(0);

    // The database is back: new commands complete on the same process.
    await completes(await insert(10, {}, 'after'));
    expect(alive()).toBe(true);
    expect(child.log).not.toMatch(/Unhandled 'error' event/);
  }, 120_000);
});
