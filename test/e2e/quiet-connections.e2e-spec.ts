import { Injectable } from '@nestjs/common';
import { InboxHandler, InboxStatus, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { Client } from 'pg';
import { pgPoolOf } from '../../lib/store/connection';
import { CaptureLogger } from '../support/capture-logger';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** Attempts the keyed handler made, in order; it waits for the gate before it finishes. */
const runs: number[] = [];
let gate: Promise<void> = Promise.resolve();

@Injectable()
@InboxHandler('quiet.keyed', { orderingKey: (payload: { account: string }) => payload.account })
class KeyedHandler implements InboxCommandHandler<{ account: string }> {
  async execute(_command: { account: string }, context: InboxContext): Promise<void> {
    runs.push(context.entry.attempt);
    await gate;
    await context.manager.query('SELECT 1');
  }
}

/**
 * A worker connection quiet for a lease is looked into: one whose statement waits for a lock longer
 * than a lease is at work, not gone, and keeps its place.
 */
describe('worker connections waiting longer than a lease', () => {
  let db: TestDatabase;
  let app: TestApp;
  let other: Client;
  let otherPid: number;
  const logger = new CaptureLogger();

  beforeAll(async () => {
    db = await createTestDatabase('quiet_connections');
    app = await createTestApp({ url: db.url, handlers: [KeyedHandler], logger, inbox: { leaseMs: 1_000, pollIntervalMs: 50, notify: false, concurrency: 2 } });
    other = new Client({ connectionString: db.url });
    await other.connect();
    otherPid = (await other.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  });

  afterAll(async () => {
    await other?.end();
    await app?.close();
    await db?.drop();
  });

  /** The sessions other than `other`'s waiting for a lock, and for how long the longest has (ms). */
  const lockWaits = async () =>
    (
      await sql<{ n: number; longest: number | null }>(
        db.url,
        `SELECT count(*)::int AS n, (extract(epoch FROM max(now() - query_start)) * 1000)::int AS longest FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1`,
        [otherPid],
      )
    )[0];
  const statusOf = async (id: string) => (await sql<{ status: string }>(db.url, 'SELECT status FROM inbox_entries WHERE id = $1', [id]))[0]?.status;

  it("keeps a pass waiting for a migration's lock on the table, in one session", async () => {
    await other.query('BEGIN');
    await other.query('LOCK TABLE inbox_entries IN ACCESS EXCLUSIVE MODE');
    try {
      // The worker's polls queue behind the lock; three leases on, still one session waits.
      await waitFor(async () => ((await lockWaits()).longest ?? 0) >= 3_000, 'a worker statement waiting for three leases');
      expect((await lockWaits()).n).toBe(1);
    } finally {
      await other.query('COMMIT');
    }
    expect(logger.find('warn', /silent for leaseMs/)).toEqual([]);
    const { entry } = await app.inbox.receive({ messageId: 'after-migration', commandType: 'quiet.keyed', payload: { account: 'migration' } });
    await waitFor(async () => (await statusOf(entry.id)) === InboxStatus.Completed, 'a command received after the migration to run');
  });

  it('completes a batch whose hand-over waits longer than a lease for an application transaction on its key', async () => {
    runs.length = 0;
    let open!: () => void;
    gate = new Promise<void>((resolve) => (open = resolve));
    const { entry } = await app.inbox.receive({ messageId: 'held-key', commandType: 'quiet.keyed', payload: { account: 'held' } });
    await waitFor(() => runs.length === 1, 'the handler to start');
    // An application's transaction holds the key's row (a receive of the key it has not committed)
    // when the batch comes to hand the key over.
    await other.query('BEGIN');
    await other.query(`SELECT 1 FROM inbox_entries_keys WHERE ordering_key = 'held' FOR UPDATE`);
    open();
    try {
      await waitFor(async () => ((await lockWaits()).longest ?? 0) >= 2_500, 'the batch waiting for the key for two and a half leases');
    } finally {
      await other.query('COMMIT');
    }
    await waitFor(async () => (await statusOf(entry.id)) === InboxStatus.Completed, 'the entry to complete');
    // Its batch waited and committed: the handler ran once.
    expect(runs).toEqual([1]);
    expect(logger.find('warn', /silent for leaseMs/)).toEqual([]);
  });
});

/** A worker statement waiting for a lock while the server turns new connections away at a limit. */
describe('a worker connection waiting longer than a lease when no connection is left to look into it', () => {
  let db: TestDatabase;
  let app: TestApp;
  let other: Client;
  let otherPid: number;
  const fillers: Client[] = [];
  const logger = new CaptureLogger();
  const role = `inbox_limited_${process.pid}`;
  let limitedUrl: string;

  beforeAll(async () => {
    db = await createTestDatabase('quiet_refused');
    // The application's role may hold four connections at once.
    await sql(db.url, `CREATE ROLE ${role} LOGIN PASSWORD '${role}' CONNECTION LIMIT 4`);
    await sql(db.url, `ALTER DATABASE "${db.name}" OWNER TO ${role}`);
    const url = new URL(db.url);
    url.username = role;
    url.password = role;
    limitedUrl = url.toString();
    // Idle pool connections close at once: the slots they free are taken below.
    app = await createTestApp({ url: limitedUrl, handlers: [KeyedHandler], logger, typeorm: { extra: { idleTimeoutMillis: 100 } }, inbox: { leaseMs: 1_000, pollIntervalMs: 50, notify: false, concurrency: 1 } });
    other = new Client({ connectionString: db.url });
    await other.connect();
    otherPid = (await other.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  });

  afterAll(async () => {
    for (const filler of fillers) await filler.end().catch(() => undefined);
    await other?.end();
    await app?.close();
    await sql(db.url, `REASSIGN OWNED BY ${role} TO CURRENT_USER; DROP OWNED BY ${role}`);
    await sql(db.url, `DROP ROLE ${role}`);
    await db?.drop();
  });

  it('leaves it waiting', async () => {
    const longestWait = async () =>
      (
        await sql<{ longest: number | null }>(
          db.url,
          `SELECT (extract(epoch FROM max(now() - query_start)) * 1000)::int AS longest FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1`,
          [otherPid],
        )
      )[0].longest ?? 0;
    await other.query('BEGIN');
    await other.query('LOCK TABLE inbox_entries IN ACCESS EXCLUSIVE MODE');
    try {
      await waitFor(async () => (await longestWait()) > 0, 'a worker statement waiting for the lock');
      const pool = pgPoolOf(app.dataSource);
      await waitFor(() => pool.idleCount === 0, "the pool's idle connections closed");
      // The role's other connection slots are taken (another instance, say): nothing is left to ask with.
      for (;;) {
        const filler = new Client({ connectionString: limitedUrl });
        const connected = await filler.connect().then(() => true, () => false);
        if (!connected) break;
        fillers.push(filler);
      }
      await waitFor(async () => (await longestWait()) >= 3_000, 'the worker statement waiting for three leases');
    } finally {
      await other.query('COMMIT');
    }
    expect(logger.find('warn', /silent for leaseMs/)).toEqual([]);
  });
});

/** Calls another service and writes nothing: its batch says nothing to the server meanwhile. */
@Injectable()
@InboxHandler('quiet.call', { timeoutMs: 700, orderingKey: (command: { account: string }) => command.account })
class ExternalCallHandler implements InboxCommandHandler<{ account: string }> {
  readonly calls: string[] = [];

  async execute(_command: { account: string }, { entry }: InboxContext): Promise<void> {
    this.calls.push(entry.messageId);
    await new Promise((resolve) => setTimeout(resolve, 450)); // the other service's answer
  }
}

describe('a batch of handlers that do no database work, together longer than a lease', () => {
  let db: TestDatabase;
  let sender: TestApp;
  let app: TestApp;

  beforeAll(async () => {
    db = await createTestDatabase('quiet_handlers');
    // Commands arrive through an application without a worker: one claim then takes them all.
    sender = await createTestApp({ url: db.url, handlers: [ExternalCallHandler], inbox: { worker: false, notify: false } });
    app = await createTestApp({ url: db.url, handlers: [ExternalCallHandler], inbox: { leaseMs: 1_000, notify: false, batchSize: 5, concurrency: 1 } });
  });

  afterAll(async () => {
    await app?.close();
    await sender?.close();
    await db?.drop();
  });

  it('completes the batch, each handler called once (a key\'s run here: 4 × 450 ms in one transaction)', async () => {
    const messageIds = ['call-1', 'call-2', 'call-3', 'call-4'];
    for (const messageId of messageIds) await sender.inbox.receive({ messageId, commandType: 'quiet.call', payload: { account: 'a' } });
    await app.processor.runOnce();
    const rows = await sql<{ message_id: string; status: InboxStatus }>(db.url, 'SELECT message_id, status FROM inbox_entries ORDER BY ordering_seq');
    expect(rows).toEqual(messageIds.map((message_id) => ({ message_id, status: InboxStatus.Completed })));
    // Nothing went back as a crash suspect after its handler had been called.
    expect(await sql(db.url, 'SELECT event FROM inbox_entries_history')).toEqual([]);
    expect(app.get(ExternalCallHandler).calls).toEqual(messageIds);
  });
});
