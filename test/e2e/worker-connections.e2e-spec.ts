import { DataSource } from 'typeorm';
import { resolveInboxOptions } from '../../lib/inbox-options';
import { pgPoolOf } from '../../lib/store/connection';
import { InboxStatements } from '../../lib/store/statements';
import { WorkerConnections } from '../../lib/worker/connections';
import { waitFor } from '../support/test-app';
import { createTestDatabase, type TestDatabase } from '../support/test-database';

describe('the worker connections when shutdown gives up', () => {
  let db: TestDatabase;
  let dataSource: DataSource;

  beforeAll(async () => {
    db = await createTestDatabase('worker_connections');
    // One connection: a second borrower waits for the pool.
    dataSource = await new DataSource({ type: 'postgres', url: db.url, extra: { max: 1 } }).initialize();
  });

  afterAll(async () => {
    // A connection left checked out would hold the pool's end for ever: the test has failed then.
    let deadline: NodeJS.Timeout | undefined;
    await Promise.race([dataSource?.destroy(), new Promise((resolve) => (deadline = setTimeout(resolve, 5_000)))]);
    clearTimeout(deadline);
    await db?.drop();
  });

  it('gives back, destroyed, a connection the pool hands over only after shutdown gave up', async () => {
    const connections = new WorkerConnections(dataSource, resolveInboxOptions({}), new InboxStatements('inbox_entries', 10));
    const pool = pgPoolOf(dataSource) as ReturnType<typeof pgPoolOf> & { waitingCount: number };
    let finish!: () => void;
    const holding = connections.use(() => new Promise<void>((resolve) => (finish = resolve)));
    const waiting = connections.use((queryRunner) => queryRunner.query('SELECT 1'));
    await waitFor(() => pool.totalCount === 1 && pool.waitingCount === 1, 'one borrower holding the connection, one waiting for the pool');
    // Shutdown gives up: the held connection is cut, and the pool hands a new one to the waiter.
    connections.abandon();
    finish();
    await holding;
    await expect(waiting).rejects.toThrow();
    // Nothing stays checked out: the pool could close.
    await waitFor(() => pool.totalCount === pool.idleCount, 'every connection back in the pool', 5_000);
  });
});
