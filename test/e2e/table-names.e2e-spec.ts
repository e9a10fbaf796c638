import { Injectable } from '@nestjs/common';
import { createInboxMigration, InboxConfigurationError, InboxHandler, InboxModule, InboxStatus, type InboxCommandHandler } from 'nestjs-inbox';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

@Injectable()
@InboxHandler('test.named')
class NamedHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(): Promise<void> {}
}

/** The longest table name the option accepts: a 55-character schema and a 55-character table. */
const SCHEMA = `s${'x'.repeat(54)}`;
const LONGEST = `${SCHEMA}.t${'y'.repeat(53)}a`;
/** Shares its first 54 characters with LONGEST: derived names must not collide. */
const NEIGHBOUR = `${SCHEMA}.t${'y'.repeat(53)}b`;
/** A short name in the same schema: its indexes are the reference set. */
const SHORT = `${SCHEMA}.inbox`;

describe('table names at the longest accepted length', () => {
  let db: TestDatabase;
  const apps: TestApp[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('tablenames');
    await sql(db.url, `CREATE SCHEMA "${SCHEMA}"`);
  });

  afterAll(async () => {
    for (const app of apps) await app.close();
    await db?.drop();
  });

  async function start(tableName: string): Promise<TestApp> {
    const migration = createInboxMigration(tableName);
    const app = await createTestApp({
      url: db.url,
      handlers: [NamedHandler],
      typeorm: { migrations: [migration] },
      inboxModule: InboxModule.forRoot({ tableName, pollIntervalMs: 60_000 }),
    });
    apps.push(app);
    return app;
  }

  const indexesOf = (table: string) =>
    sql<{ name: string }>(db.url, `SELECT indexname AS name FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY 1`, [SCHEMA, table]);

  it('creates every index and constraint, with names within 63 bytes, and serves receives and the processor', async () => {
    const first = await start(LONGEST);
    const second = await start(NEIGHBOUR);
    for (const [app, prefix] of [[first, 'a'], [second, 'b']] as const) {
      for (let i = 0; i < 20; i++) {
        const { entry } = await app.inbox.receive({ messageId: `${prefix}-${i}`, commandType: 'test.named', payload: { i } });
        expect(entry.status).toBe(InboxStatus.Pending);
      }
      await waitFor(async () => (await app.inbox.count({ status: InboxStatus.Completed })) === 20, `table ${prefix} drained`);
    }
    await start(SHORT);
    const tableOf = (name: string) => name.split('.')[1];
    const [mine, theirs, reference] = [await indexesOf(tableOf(LONGEST)), await indexesOf(tableOf(NEIGHBOUR)), await indexesOf('inbox')];
    // As many indexes as a short-named table has, none shared between the two long ones, none cut short.
    expect(mine.length).toBe(reference.length);
    expect(theirs.length).toBe(reference.length);
    expect(new Set([...mine, ...theirs].map((i) => i.name)).size).toBe(reference.length * 2);
    for (const { name } of [...mine, ...theirs]) expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
    const history = await sql<{ name: string }>(db.url, `SELECT tablename AS name FROM pg_tables WHERE schemaname = $1 AND tablename LIKE '%history' ORDER BY 1`, [SCHEMA]);
    expect(history.map((h) => h.name)).toEqual([`${tableOf(SHORT)}_history`, `${tableOf(LONGEST)}_history`, `${tableOf(NEIGHBOUR)}_history`].sort());
  });

  it('refuses a name one character longer, naming the option', () => {
    expect(() => InboxModule.forRoot({ tableName: `${LONGEST}z` })).toThrow(InboxConfigurationError);
    expect(() => InboxModule.forRoot({ tableName: `${LONGEST}z` })).toThrow(/tableName/);
  });
});
