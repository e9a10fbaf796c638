import { Injectable } from '@nestjs/common';
import { InboxHandler, InboxStatus, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { CaptureLogger } from '../support/capture-logger';
import { createTestApp, ManualClock, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

@Injectable()
@InboxHandler('fleet.old')
class OldCommandHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(_command: Record<string, unknown>, { manager, entry }: InboxContext): Promise<void> {
    await manager.query('INSERT INTO fleet_effects (message_id) VALUES ($1)', [entry.messageId]);
  }
}

/** Only the newer release has this one. */
@Injectable()
@InboxHandler('fleet.new')
class NewCommandHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(_command: Record<string, unknown>, { manager, entry }: InboxContext): Promise<void> {
    await manager.query('INSERT INTO fleet_effects (message_id) VALUES ($1)', [entry.messageId]);
  }
}

describe('a rolling deploy: workers with different handler sets on one table', () => {
  let db: TestDatabase;
  const apps: TestApp[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('rolling');
    await sql(db.url, 'CREATE TABLE fleet_effects (message_id text PRIMARY KEY)');
  });

  afterAll(async () => {
    for (const app of apps) await app.close();
    await db?.drop();
  });

  async function start(options: Parameters<typeof createTestApp>[0]): Promise<TestApp> {
    const app = await createTestApp(options);
    apps.push(app);
    return app;
  }

  it('leaves a command type to the workers that can run it, while workers without its handler keep polling', async () => {
    const inbox = { pollIntervalMs: 20, concurrency: 2, batchSize: 5 };
    await start({ url: db.url, handlers: [OldCommandHandler], inbox: { ...inbox, workerId: 'old-release' } });
    const newer = await start({ url: db.url, handlers: [OldCommandHandler, NewCommandHandler], inbox: { ...inbox, workerId: 'new-release' } });

    await Promise.all(
      Array.from({ length: 50 }, (_, i) => newer.inbox.receive({ messageId: `new-${i}`, commandType: 'fleet.new', payload: {} })),
    );
    const done = await waitFor(async () => {
      const rows = await sql<{ status: string; n: number }>(
        db.url,
        `SELECT status, count(*)::int AS n FROM inbox_entries WHERE command_type = 'fleet.new' GROUP BY status`,
      );
      const counts = Object.fromEntries(rows.map((row) => [row.status, row.n]));
      return (counts.completed ?? 0) + (counts.dead_letter ?? 0) === 50 ? counts : null;
    }, 'every fleet.new command to be settled');
    expect(done).toEqual({ completed: 50 });
    const [{ n }] = await sql<{ n: number }>(db.url, `SELECT count(*)::int AS n FROM fleet_effects WHERE message_id LIKE 'new-%'`);
    expect(n).toBe(50);
  });

  it('keeps a type no running worker handles Pending, visible, and warns once it has waited past the threshold', async () => {
    const clock = new ManualClock();
    const logger = new CaptureLogger();
    const worker = await start({
      url: db.url,
      handlers: [OldCommandHandler],
      logger,
      inbox: { clock, workerId: 'lonely', acceptUnknownCommandTypes: true, unclaimedWarningMs: 60_000 },
    });
    const { entry } = await worker.inbox.receive({ messageId: 'orphan-1', commandType: 'fleet.orphan', payload: {} });
    await worker.inbox.receive({ messageId: 'orphan-2', commandType: 'fleet.orphan', payload: {} });
    await worker.processor.runOnce();
    expect(await worker.inbox.get(entry.id)).toMatchObject({ status: InboxStatus.Pending, retryCount: 0 });
    expect(logger.find('warn', /fleet\.orphan/)).toEqual([]);

    clock.advance(61_000);
    await worker.processor.runOnce();
    expect(await worker.inbox.get(entry.id)).toMatchObject({ status: InboxStatus.Pending, retryCount: 0 });
    const warnings = logger.find('warn', /fleet\.orphan/);
    expect(warnings).toHaveLength(1);
    expect(warnings[0].message).toMatch(/2 entr(y|ies) of command type "fleet\.orphan"/);
    expect(warnings[0].message).toMatch(/no running worker/);

    // What an operator sees.
    expect((await worker.inbox.countByStatus()).pending).toBe(2);
    const waiting = await worker.inbox.dueByCommandType();
    expect(waiting.find((row) => row.commandType === 'fleet.orphan')).toMatchObject({ due: 2 });
  });
});
