import { Injectable } from '@nestjs/common';
import { InboxHandler, InboxStatus, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** Executions across both application instances in this process, by messageId. */
const executions = new Map<string, number>();

@Injectable()
@InboxHandler('test.count')
class CountingHandler implements InboxCommandHandler<Record<string, never>> {
  executed = 0;

  async execute(_command: Record<string, never>, context: InboxContext): Promise<void> {
    this.executed++;
    executions.set(context.entry.messageId, (executions.get(context.entry.messageId) ?? 0) + 1);
    // A unique constraint would also expose a double effect.
    await context.manager.query('INSERT INTO unique_effects (message_id) VALUES ($1)', [context.entry.messageId]);
    // Give the other instance a chance to try the same row while this transaction holds it.
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('two processors on one database', () => {
  let db: TestDatabase;
  let first: TestApp;
  let second: TestApp;

  beforeAll(async () => {
    db = await createTestDatabase('concurrency');
    await sql(db.url, 'CREATE TABLE unique_effects (message_id text PRIMARY KEY)');
    const inbox = { concurrency: 8, batchSize: 5, pollIntervalMs: 5 };
    first = await createTestApp({ url: db.url, handlers: [CountingHandler], inbox: { ...inbox, workerId: 'first' } });
    second = await createTestApp({ url: db.url, handlers: [CountingHandler], inbox: { ...inbox, workerId: 'second' } });
  });

  afterAll(async () => {
    await first?.close();
    await second?.close();
    await db?.drop();
  });

  it('never run one entry twice, and together complete every entry', async () => {
    const total = 400;
    // Receive through both instances, interleaved, while both poll every 5 ms.
    await Promise.all(
      Array.from({ length: total }, (_, i) =>
        (i % 2 ? first : second).inbox.receive({ messageId: `c-${i}`, commandType: 'test.count', payload: {} }),
      ),
    );
    await waitFor(async () => (await first.inbox.countByStatus()).completed === total, `${total} completed entries`, 30_000);

    expect([...executions.values()].every((n) => n === 1)).toBe(true);
    expect(executions.size).toBe(total);
    const [{ n }] = await sql<{ n: string }>(db.url, 'SELECT count(*) AS n FROM unique_effects');
    expect(Number(n)).toBe(total);
    // Both instances took part (each wakes its own processor on receive).
    expect(first.get(CountingHandler).executed).toBeGreaterThan(0);
    expect(second.get(CountingHandler).executed).toBeGreaterThan(0);
    expect(first.get(CountingHandler).executed + second.get(CountingHandler).executed).toBe(total);
    const counts = await first.inbox.countByStatus();
    expect(counts).toMatchObject({ [InboxStatus.Failed]: 0, [InboxStatus.DeadLetter]: 0, [InboxStatus.Processing]: 0 });
  });
});
