import { Injectable, Scope } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import {
  InboxConfigurationError,
  InboxEntry,
  InboxHandler,
  InboxMigration,
  InboxModule,
  InboxStatus,
  type InboxCommandHandler,
  type InboxContext,
} from 'nestjs-inbox';
import { GatedHandler } from '../fixtures/gated-handler';
import { EFFECTS_TABLE_SQL, ScriptedHandler } from '../fixtures/handlers';
import { createTestApp, ManualClock, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';
import { pgPoolOf } from '../../lib/store/connection';
import { HISTORY_COLUMNS, INBOX_COLUMNS } from '../../lib/store/schema';

const activeTimers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;

describe('lifecycle', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase('lifecycle');
    await sql(db.url, EFFECTS_TABLE_SQL);
  });

  afterAll(async () => {
    await db?.drop();
  });

  const otherConnections = async () =>
    (await sql(db.url, 'SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')).length;

  const statusOf = async (messageId: string) =>
    (await sql<{ status: string }>(db.url, 'SELECT status FROM inbox_entries WHERE message_id = $1', [messageId]))[0]?.status;

  it('starts polling at bootstrap and processes without being driven', async () => {
    const app = await createTestApp({ url: db.url, handlers: [ScriptedHandler], inbox: { pollIntervalMs: 20 } });
    try {
      // Stored behind the library's back, so no wake-up: only the poll timer can find it.
      await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ('polled-1', 'test.scripted', '{}')`);
      await waitFor(async () => (await statusOf('polled-1')) === InboxStatus.Completed, 'the poll timer to process the entry');
    } finally {
      await app.close();
    }
  });

  it('waits on shutdown for an in-flight handler, commits it, and leaves no timer behind', async () => {
    const timersBefore = activeTimers();
    const app = await createTestApp({ url: db.url, handlers: [GatedHandler], inbox: { pollIntervalMs: 20, shutdownTimeoutMs: 20_000 } });
    const registry = app.get(SchedulerRegistry);
    expect(registry.getIntervals().sort()).toEqual(['nestjs-inbox:inbox_entries', 'nestjs-inbox:inbox_entries:retention']);
    const handler = app.get(GatedHandler);
    await app.inbox.receive({ messageId: 'slow-1', commandType: 'test.gated', payload: {} });
    await waitFor(() => handler.started, 'the slow handler to start');

    let closed = false;
    const closing = app.close().then(() => (closed = true));
    await waitFor(() => !app.processor.isRunning, 'shutdown to reach the processor');
    expect(closed).toBe(false);
    expect(handler.finished).toBe(false);

    handler.gate.open();
    await closing;
    expect(handler.finished).toBe(true);
    expect(await statusOf('slow-1')).toBe(InboxStatus.Completed);
    expect(registry.getIntervals()).toEqual([]);
    // Connection teardown may hold a timer for a moment; none may stay.
    await waitFor(() => activeTimers() <= timersBefore, 'timers to drop back to their count before the app started', 5_000);
    await waitFor(async () => (await otherConnections()) === 0, 'every connection of the app to be closed', 5_000);
  });

  it('gives up on a hung handler after shutdownTimeoutMs: its transaction rolls back and the claim stays for lease expiry', async () => {
    const app = await createTestApp({ url: db.url, handlers: [GatedHandler], inbox: { shutdownTimeoutMs: 300 } });
    const handler = app.get(GatedHandler);
    await app.inbox.receive({ messageId: 'hung-1', commandType: 'test.gated', payload: {} });
    await waitFor(() => handler.started, 'the hung handler to start');
    const started = Date.now();
    await app.close();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await statusOf('hung-1')).toBe(InboxStatus.Processing);
    expect(await sql(db.url, `SELECT 1 FROM effects WHERE message_id = 'hung-1'`)).toEqual([]);
    await waitFor(async () => (await otherConnections()) === 0, 'the abandoned connection to be closed', 5_000);
    handler.gate.open(); // let the orphaned promise end
  });

  it("takes back the start of a crash suspect's attempt it gives up at shutdown: the lease's expiry charges nothing", async () => {
    const clock = new ManualClock();
    await (await createTestApp({ url: db.url, inbox: { worker: false } })).close(); // the schema
    // A crash suspect: the worker of its last attempt vanished, and it was handed back to run alone.
    await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload, last_outcome, received_at) VALUES ('suspect-deploy', 'test.gated', '{}', 'lease_expired', now() - interval '1 minute')`);
    const app = await createTestApp({ url: db.url, handlers: [GatedHandler], inbox: { clock, notify: false, shutdownTimeoutMs: 300 } });
    const handler = app.get(GatedHandler);
    try {
      // The pass at boot runs it alone, its start committed first (a crash from here would be its).
      await waitFor(
        async () => (await sql(db.url, `SELECT 1 FROM inbox_entries WHERE message_id = 'suspect-deploy' AND processing_started_at IS NOT NULL`)).length > 0,
        'the suspect to start',
      );
      await waitFor(() => handler.started, 'its handler to run');
      // A deploy: the handler outlasts shutdownTimeoutMs.
      await app.close();
      expect(await sql(db.url, `SELECT status::text, processing_started_at FROM inbox_entries WHERE message_id = 'suspect-deploy'`)).toEqual([
        { status: InboxStatus.Processing, processing_started_at: null },
      ]);
    } finally {
      handler.gate.open(); // let the orphaned promise end
    }
    // Another worker (without the handler: it only sweeps) finds the lease expired: handed back uncharged, still a suspect.
    clock.advance(120_000);
    const sweeper = await createTestApp({ url: db.url, inbox: { clock, notify: false } });
    try {
      await sweeper.processor.runOnce();
      expect(await sql(db.url, `SELECT status::text, retry_count, last_outcome FROM inbox_entries WHERE message_id = 'suspect-deploy'`)).toEqual([
        { status: InboxStatus.Pending, retry_count: 0, last_outcome: 'lease_expired' },
      ]);
    } finally {
      await sweeper.close();
      // Left due, it would run first in the next test that boots a worker with this handler.
      await sql(db.url, `DELETE FROM inbox_entries WHERE message_id = 'suspect-deploy'`);
    }
  });

  it('runs each command once when InboxModule is imported twice', async () => {
    const app = await createTestApp({
      url: db.url,
      handlers: [ScriptedHandler],
      imports: [InboxModule.forRoot({ pollIntervalMs: 20 })],
    });
    try {
      expect(app.get(SchedulerRegistry).getIntervals().sort()).toEqual(['nestjs-inbox:inbox_entries', 'nestjs-inbox:inbox_entries:retention']);
      const handler = app.get(ScriptedHandler);
      for (let i = 0; i < 30; i++) await app.inbox.receive({ messageId: `twice-${i}`, commandType: 'test.scripted', payload: {} });
      const completed = async () =>
        (await sql<{ n: number }>(db.url, `SELECT count(*)::int AS n FROM inbox_entries WHERE message_id LIKE 'twice-%' AND status = 'completed'`))[0].n;
      await waitFor(async () => (await completed()) === 30, 'all entries to be processed');
      await app.processor.runOnce();
      const runs = handler.calls.filter((c) => c.messageId.startsWith('twice-'));
      expect(runs).toHaveLength(30);
      expect(new Set(runs.map((c) => c.messageId)).size).toBe(30);
    } finally {
      await app.close();
    }
  });

  it('runs each data source\'s table when two InboxModules use two data sources with the same table name', async () => {
    const second = await createTestDatabase('lifecycle_second');
    await sql(second.url, EFFECTS_TABLE_SQL);
    try {
      const app = await createTestApp({
        url: db.url,
        handlers: [ScriptedHandler],
        inbox: { pollIntervalMs: 20 },
        imports: [
          TypeOrmModule.forRootAsync({
            name: 'second',
            useFactory: () => ({ type: 'postgres', url: second.url, entities: [InboxEntry], migrations: [InboxMigration], migrationsRun: true, retryAttempts: 0, logging: false }),
          }),
          InboxModule.forRoot({ dataSource: 'second', isGlobal: false, pollIntervalMs: 20 }),
        ],
      });
      try {
        expect(app.get(SchedulerRegistry).getIntervals().sort()).toEqual([
          'nestjs-inbox:inbox_entries',
          'nestjs-inbox:inbox_entries:retention',
          'nestjs-inbox:inbox_entries@second',
          'nestjs-inbox:inbox_entries@second:retention',
        ]);
        // Stored behind the library's back, so no wake-up: only each table's poll can find its entry.
        await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ('first-source', 'test.scripted', '{}')`);
        await sql(second.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ('second-source', 'test.scripted', '{}')`);
        await waitFor(async () => (await statusOf('first-source')) === InboxStatus.Completed, 'the default data source\'s entry to be processed');
        await waitFor(
          async () => (await sql<{ status: string }>(second.url, `SELECT status FROM inbox_entries WHERE message_id = 'second-source'`))[0]?.status === InboxStatus.Completed,
          'the second data source\'s entry to be processed',
        );
      } finally {
        await app.close();
      }
    } finally {
      await second.drop();
    }
  });

  it('closes when shutdown gives up while a claim still waits for a pool connection', async () => {
    // A database of its own: no entry another test left due may take a slot first.
    const own = await createTestDatabase('lifecycle_pool_wait');
    await sql(own.url, EFFECTS_TABLE_SQL);
    // Two connections, three slots: two batches hold them at the gate, the third claim waits.
    const app = await createTestApp({
      url: own.url,
      handlers: [GatedHandler],
      typeorm: { extra: { max: 2 } },
      inbox: { concurrency: 3, batchSize: 1, notify: false, shutdownTimeoutMs: 300 },
    });
    const handler = app.get(GatedHandler);
    const pool = pgPoolOf(app.dataSource) as ReturnType<typeof pgPoolOf> & { waitingCount: number };
    try {
      await app.inbox.receiveMany(['pool-wait-1', 'pool-wait-2', 'pool-wait-3'].map((messageId) => ({ messageId, commandType: 'test.gated', payload: {} })));
      // A batch at the gate: its transaction idles after the handler's insert.
      const gated = async () =>
        (await sql<{ n: number }>(own.url, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction' AND query LIKE 'INSERT INTO effects%'`))[0].n;
      await waitFor(async () => (await gated()) === 2 && pool.waitingCount === 1, 'two batches at the gate and a claim waiting for a connection');
      // Shutdown gives up on the batches; their connections go, and the waiting claim gets one.
      let deadline: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        app.close().then(() => 'closed'),
        new Promise<string>((resolve) => (deadline = setTimeout(() => resolve('hung'), 10_000))),
      ]);
      clearTimeout(deadline);
      expect(outcome).toBe('closed');
    } finally {
      handler.gate.open();
      await own.drop();
    }
  });

  it('accepts forRootAsync options from a factory', async () => {
    const app = await createTestApp({
      url: db.url,
      handlers: [ScriptedHandler],
      inboxModule: InboxModule.forRootAsync({ useFactory: async () => ({ worker: false, acceptUnknownCommandTypes: true }) }),
    });
    try {
      const { entry } = await app.inbox.receive({ messageId: 'async-1', commandType: 'anything.goes', payload: {} });
      expect(entry.status).toBe(InboxStatus.Pending);
      expect(app.get(SchedulerRegistry).getIntervals()).toEqual([]); // receive-only: no processor
    } finally {
      await app.close();
    }
  });

  describe('boot errors', () => {
    @Injectable()
    @InboxHandler('test.dup')
    class FirstDuplicate implements InboxCommandHandler {
      async execute(): Promise<void> {}
    }

    @Injectable()
    @InboxHandler('test.dup')
    class SecondDuplicate implements InboxCommandHandler {
      async execute(): Promise<void> {}
    }

    @Injectable({ scope: Scope.REQUEST })
    @InboxHandler('test.request-scoped')
    class RequestScopedHandler implements InboxCommandHandler {
      async execute(): Promise<void> {}
    }

    @Injectable()
    @InboxHandler('test.no-execute')
    class NoExecuteHandler {}

    const bootFails = async (options: Parameters<typeof createTestApp>[0]) => {
      const attempt = createTestApp(options);
      await expect(attempt).rejects.toBeInstanceOf(InboxConfigurationError);
      return attempt.catch((error: Error) => error.message);
    };

    it('names both classes when two handlers claim one command type', async () => {
      const message = await bootFails({ url: db.url, handlers: [FirstDuplicate, SecondDuplicate] });
      expect(message).toContain('FirstDuplicate and SecondDuplicate both handle "test.dup"');
    });

    it('rejects a request-scoped handler', async () => {
      const message = await bootFails({ url: db.url, handlers: [RequestScopedHandler] });
      expect(message).toContain('RequestScopedHandler');
      expect(message).toContain('request- or transient-scoped');
    });

    it('rejects a handler class without execute', async () => {
      const message = await bootFails({ url: db.url, handlers: [NoExecuteHandler] });
      expect(message).toContain('NoExecuteHandler');
      expect(message).toContain('execute');
    });

    it('asks for ScheduleModule.forRoot() when a worker has no scheduler', async () => {
      const message = await bootFails({ url: db.url, handlers: [ScriptedHandler], withoutSchedule: true });
      expect(message).toContain('ScheduleModule.forRoot()');
    });

    it.each([
      [{ maxAttempts: 0 }, 'maxAttempts'],
      [{ backoff: { multiplier: 0.5 } }, 'backoff.multiplier'],
      [{ tableName: 'inbox; DROP TABLE x' }, 'tableName'],
      [{ concurrency: 1.5 }, 'concurrency'],
      [{ pollIntervalMs: -1 }, 'pollIntervalMs'],
      [{ worker: 'yes' }, 'worker'],
      [{ leaseMs: 'long' }, 'leaseMs'],
      [{ colour: 'blue' }, 'colour'],
    ])('fails the boot on invalid module option %j, naming %s', async (options, name) => {
      const message = await bootFails({ url: db.url, inbox: options as never });
      expect(message).toContain(`"${name}"`);
      const asyncMessage = await bootFails({
        url: db.url,
        inboxModule: InboxModule.forRootAsync({ useFactory: () => options as never }),
      });
      expect(asyncMessage).toContain(`"${name}"`);
    });

    it('fails the boot when the forRootAsync factory returns no options (a missing return)', async () => {
      for (const nothing of [undefined, null]) {
        const message = await bootFails({ url: db.url, inboxModule: InboxModule.forRootAsync({ useFactory: () => nothing as never }) });
        expect(message).toContain('the factory returned no options object');
      }
    });
  });

  it('rejects invalid decorator arguments when the class is declared', () => {
    expect(() => InboxHandler('')).toThrow(InboxConfigurationError);
    expect(() => InboxHandler('x'.repeat(256))).toThrow(InboxConfigurationError);
    expect(() => InboxHandler('ok', { maxAttempts: 0 })).toThrow(/maxAttempts/);
    expect(() => InboxHandler('ok', { backoff: { jitter: 2 } })).toThrow(/backoff\.jitter/);
    expect(() => InboxHandler('ok', { retries: 3 } as never)).toThrow(/unknown option "retries"/);
    expect(() => InboxHandler('ok', { payload: 'NotAClass' as never })).toThrow(/payload/);
  });
});

describe('fencing', () => {
  let db: TestDatabase;

  @Injectable()
  @InboxHandler('test.gated')
  class TakeoverHandler implements InboxCommandHandler {
    readonly attempts: number[] = [];
    async execute(_command: unknown, context: InboxContext): Promise<void> {
      this.attempts.push(context.entry.attempt);
      await context.manager.query('INSERT INTO effects (message_id, attempt, note) VALUES ($1, $2, $3)', [
        context.entry.messageId,
        context.entry.attempt,
        'takeover',
      ]);
    }
  }

  beforeAll(async () => {
    db = await createTestDatabase('fencing');
    await sql(db.url, EFFECTS_TABLE_SQL);
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('a worker whose claim was taken over cannot complete the entry or overwrite its outcome', async () => {
    const slow = await createTestApp({ url: db.url, handlers: [GatedHandler], inbox: { leaseMs: 200, workerId: 'slow' } });
    let other: TestApp | undefined;
    try {
      const gated = slow.get(GatedHandler);
      await slow.inbox.receive({ messageId: 'fenced-1', commandType: 'test.gated', payload: {} });
      await waitFor(() => gated.started, 'the slow worker to start the handler');
      // Started only now, so that it cannot have claimed the entry first.
      other = await createTestApp({ url: db.url, handlers: [TakeoverHandler], inbox: { workerId: 'other' } });

      // The slow worker's connection drops mid-handler (network partition, idle timeout, failover).
      await sql(db.url, 'SELECT pg_terminate_backend($1)', [gated.backendPid]);

      // Its lease runs out; the other worker counts the lost attempt and completes the entry.
      await waitFor(async () => {
        await other!.processor.runOnce();
        return (await other!.inbox.findByMessageId('fenced-1'))?.status === InboxStatus.Completed;
      }, 'the other worker to take over and complete the entry');

      // The slow handler now returns and its worker tries to finish the attempt.
      gated.gate.open();
      await waitFor(() => gated.finished, 'the slow handler to return');
      await slow.processor.runOnce();

      const entry = (await other.inbox.findByMessageId('fenced-1'))!;
      expect(entry.status).toBe(InboxStatus.Completed);
      expect(entry.retryCount).toBe(1);
      expect(entry.error).toBeNull();
      expect(other.get(TakeoverHandler).attempts).toEqual([2]);
      expect(await sql(db.url, `SELECT attempt, note FROM effects WHERE message_id = 'fenced-1'`)).toEqual([{ attempt: 2, note: 'takeover' }]);
    } finally {
      await slow.close();
      await other?.close();
    }
  });
});

describe('schema migration', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase('migration');
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('brings a table made by the first schema up to date, and runs again without effect', async () => {
    const { createInboxMigration } = await import('nestjs-inbox');
    const migration = new (createInboxMigration('legacy_inbox'))();
    const runner = { query: (statement: string) => sql(db.url, statement) };
    await migration.up(runner as never);
    // The first schema had none of the later columns, and told crash suspects by their error text:
    // take them away, as on a database made by it, with a suspect and a poison dead letter in it.
    await sql(
      db.url,
      `ALTER TABLE legacy_inbox DROP COLUMN processing_started_at, DROP COLUMN processed_by, DROP COLUMN max_attempts, DROP COLUMN last_outcome,
         DROP COLUMN ordering_key, DROP COLUMN ordering_seq, DROP COLUMN waiting, DROP COLUMN blocks_key, DROP COLUMN trace_parent, DROP COLUMN trace_state`,
    );
    await sql(db.url, `DROP TABLE legacy_inbox_keys`);
    await sql(db.url, `DROP TABLE legacy_inbox_stats`);
    await sql(db.url, `CREATE INDEX ix_legacy_inbox_due ON legacy_inbox ((COALESCE(next_retry_at, received_at))) WHERE status IN ('pending', 'failed')`);
    await sql(db.url, `CREATE INDEX ix_legacy_inbox_suspects ON legacy_inbox ((COALESCE(next_retry_at, received_at))) WHERE status IN ('pending', 'failed') AND COALESCE(error, '') LIKE 'Lease expired%'`);
    await sql(
      db.url,
      `INSERT INTO legacy_inbox (message_id, command_type, payload, status, retry_count, error, dead_letter_reason) VALUES
         ('suspect', 't', '{}', 'failed', 1, 'Lease expired: worker w did not finish within 60000 ms (crash, kill or hang).', NULL),
         ('poison', 't', '{}', 'dead_letter', 5, 'Gave up after 5 attempt(s): Lease expired: worker w …', 'lease_expired'),
         ('plain', 't', '{}', 'failed', 1, 'timeout', NULL)`,
    );
    await migration.up(runner as never);
    await migration.up(runner as never);
    const columns = await sql<{ column_name: string }>(
      db.url,
      `SELECT column_name FROM information_schema.columns WHERE table_name = 'legacy_inbox'
         AND column_name IN ('processing_started_at', 'processed_by', 'max_attempts', 'last_outcome', 'ordering_key', 'ordering_seq', 'waiting', 'blocks_key',
           'trace_parent', 'trace_state')
         ORDER BY 1`,
    );
    expect(columns.map((c) => c.column_name)).toEqual([
      'blocks_key',
      'last_outcome',
      'max_attempts',
      'ordering_key',
      'ordering_seq',
      'processed_by',
      'processing_started_at',
      'trace_parent',
      'trace_state',
      'waiting',
    ]);
    expect(await sql(db.url, `SELECT message_id, last_outcome FROM legacy_inbox ORDER BY message_id`)).toEqual([
      { message_id: 'plain', last_outcome: null },
      { message_id: 'poison', last_outcome: 'lease_expired' },
      { message_id: 'suspect', last_outcome: 'lease_expired' },
    ]);
    const indexes = await sql<{ name: string }>(
      db.url,
      `SELECT indexname AS name FROM pg_indexes WHERE tablename = 'legacy_inbox'
         AND (indexname LIKE '%suspects' OR indexname LIKE '%due' OR indexname LIKE '%claimable' OR indexname LIKE '%key_holder' OR indexname LIKE '%waiting') ORDER BY 1`,
    );
    expect(indexes.map((i) => i.name)).toEqual(['ix_legacy_inbox_claimable', 'ix_legacy_inbox_crash_suspects', 'ix_legacy_inbox_key_holder', 'ix_legacy_inbox_waiting']);
    expect(await sql(db.url, `SELECT count(*)::int AS n FROM legacy_inbox_keys`)).toEqual([{ n: 0 }]);
    // The snapshot table comes back with its one row, once however often the migration runs.
    expect(await sql(db.url, `SELECT id FROM legacy_inbox_stats`)).toEqual([{ id: 1 }]);
    expect(migration.name).toMatch(/1764400000000$/);
  });

  it('creates exactly the columns of the schema source, with their nullability', async () => {
    const { createInboxMigration } = await import('nestjs-inbox');
    const migration = new (createInboxMigration('fresh_inbox'))();
    await migration.up({ query: (statement: string) => sql(db.url, statement) } as never);
    const columnsOf = (table: string) =>
      sql<{ name: string; nullable: boolean }>(
        db.url,
        `SELECT column_name AS name, is_nullable = 'YES' AS nullable FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
        [table],
      );
    const expected = (columns: Record<string, { nullable: boolean }>) => Object.entries(columns).map(([name, spec]) => ({ name, nullable: spec.nullable }));
    expect(await columnsOf('fresh_inbox')).toEqual(expected(INBOX_COLUMNS));
    expect(await columnsOf('fresh_inbox_history')).toEqual(expected(HISTORY_COLUMNS));
  });

  it('applies the migration once when two instances boot at once on a database that has only the application\'s own migrations', async () => {
    const fresh = await createTestDatabase('migration_race');
    /** The application's earlier migration: its migrations table exists before the inbox's is added. */
    class AppOwnMigration1600000000000 {
      readonly name = 'AppOwnMigration1600000000000';
      async up(queryRunner: { query(text: string): Promise<unknown> }): Promise<void> {
        await queryRunner.query('CREATE TABLE IF NOT EXISTS app_things (id int PRIMARY KEY)');
      }
      async down(): Promise<void> {}
    }
    const dataSourceWith = (migrations: Array<new () => unknown>) =>
      new DataSource({ type: 'postgres', url: fresh.url, entities: [InboxEntry], migrations: migrations as never, migrationsRun: true, installExtensions: false, logging: false });
    try {
      const before = dataSourceWith([AppOwnMigration1600000000000]);
      await before.initialize();
      await before.destroy();
      const replicas = [dataSourceWith([AppOwnMigration1600000000000, InboxMigration]), dataSourceWith([AppOwnMigration1600000000000, InboxMigration])];
      const booted = await Promise.allSettled(replicas.map((replica) => replica.initialize()));
      for (const replica of replicas) if (replica.isInitialized) await replica.destroy();
      expect(booted.map((outcome) => (outcome.status === 'fulfilled' ? 'booted' : (outcome.reason as Error).message))).toEqual(['booted', 'booted']);
      expect(await sql(fresh.url, 'SELECT count(*)::int AS n FROM inbox_entries')).toEqual([{ n: 0 }]);
    } finally {
      await fresh.drop();
    }
  });
});
