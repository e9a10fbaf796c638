import path from 'node:path';
import { Injectable } from '@nestjs/common';
import { InboxHandler, InboxStatus, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { CRASH_COMMAND, CRASH_HANDLER_OPTIONS } from '../fixtures/crash-command';
import { EFFECTS_TABLE_SQL } from '../fixtures/handlers';
import { ChildWorker } from '../support/child-worker';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

const CRASH_WORKER = path.join(__dirname, '..', 'fixtures', 'crash-worker.ts');

/** This process's handler for the command that kills the child worker: it succeeds. */
@Injectable()
@InboxHandler(CRASH_COMMAND, CRASH_HANDLER_OPTIONS)
class SurvivingHandler implements InboxCommandHandler<Record<string, unknown>> {
  readonly attempts: number[] = [];
  async execute(_command: Record<string, unknown>, context: InboxContext): Promise<void> {
    this.attempts.push(context.entry.attempt);
    await context.manager.query('INSERT INTO effects (message_id, attempt, note) VALUES ($1, $2, $3)', [
      context.entry.messageId,
      context.entry.attempt,
      'survivor',
    ]);
  }
}

describe('lease expiry of a killed worker', () => {
  let db: TestDatabase;
  const children: ChildWorker[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('lease');
    await sql(db.url, EFFECTS_TABLE_SQL);
    // Create the schema once through an app with no worker.
    const setup = await createTestApp({ url: db.url, inbox: { worker: false } });
    await setup.close();
  });

  afterAll(async () => {
    await Promise.all(children.map((child) => child.kill()));
    await db?.drop();
  });

  async function startChild(): Promise<ChildWorker> {
    const child = new ChildWorker(CRASH_WORKER, [db.url]);
    children.push(child);
    return child;
  }

  const entryRow = async (messageId: string) =>
    (await sql<{ id: string; status: string; retry_count: number; error: string | null; locked_until: Date | null }>(
      db.url,
      'SELECT id, status, retry_count, error, locked_until FROM inbox_entries WHERE message_id = $1',
      [messageId],
    ))[0];

  const insertCommand = (messageId: string) =>
    sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ($1, $2, '{}')`, [messageId, CRASH_COMMAND]);

  it('hands a SIGKILLed batch back uncharged when its lease expires, and another worker completes the entry alone', async () => {
    let app: TestApp | undefined;
    try {
      await insertCommand('killed-once');
      const child = await startChild();
      const started = await child.waitForLine('STARTED');
      expect(started).toMatch(/ 1$/); // first attempt
      const claimed = await entryRow('killed-once');
      expect(claimed.status).toBe(InboxStatus.Processing); // the claim was committed before the handler ran
      await child.kill();

      app = await createTestApp({ url: db.url, handlers: [SurvivingHandler] });
      const processor = app.processor;
      const done = await waitFor(async () => {
        await processor.runOnce();
        const row = await entryRow('killed-once');
        return row.status === InboxStatus.Completed ? row : null;
      }, 'the entry to be completed by the surviving worker');
      // Its batch had started, so its worker's death may have been anyone's: not charged, but it ran
      // alone as a crash suspect, which is what completed it.
      expect(done.retry_count).toBe(0);
      expect(app.get(SurvivingHandler).attempts).toEqual([1]);
      const events = await sql<{ event: string; worker_id: string }>(db.url, 'SELECT event, worker_id FROM inbox_entries_history WHERE entry_id = $1 ORDER BY id', [done.id]);
      expect(events.map((e) => e.event)).toEqual(['released']);
      expect(events[0].worker_id).toMatch(/^crash-worker-/);
      // Only the surviving attempt's effect exists: the killed transaction rolled back.
      expect(await sql(db.url, 'SELECT attempt, note FROM effects WHERE message_id = $1', ['killed-once'])).toEqual([
        { attempt: 1, note: 'survivor' },
      ]);
    } finally {
      await app?.close();
    }
  });

  it('dead-letters a message that kills every worker that runs it: isolated by its first crash, then charged maxAttempts times', async () => {
    await insertCommand('poison');
    // The first crash is not charged (its batch had started: anyone's death); then it runs alone.
    const attempts = [1, ...Array.from({ length: CRASH_HANDLER_OPTIONS.maxAttempts! }, (_, i) => i + 1)];
    for (const attempt of attempts) {
      const child = await startChild();
      expect(await child.waitForLine('STARTED')).toMatch(new RegExp(` ${attempt}$`));
      await child.kill();
      // Wait (by polling the row) for the killed attempt's lease to run out.
      await waitFor(async () => {
        const [{ expired }] = await sql<{ expired: boolean }>(db.url, 'SELECT locked_until < now() AS expired FROM inbox_entries WHERE message_id = $1', ['poison']);
        return expired;
      }, 'the lease to expire');
    }
    // The next worker sweeps the last expired lease and gives up on the message.
    const sweeper = await startChild();
    const dead = await waitFor(async () => {
      const row = await entryRow('poison');
      return row.status === InboxStatus.DeadLetter ? row : null;
    }, 'the poison message to be dead-lettered');
    await sweeper.kill();
    expect(dead.retry_count).toBe(2);
    expect(dead.error).toMatch(/Lease expired/);
    const [{ reason }] = await sql<{ reason: string }>(db.url, 'SELECT dead_letter_reason AS reason FROM inbox_entries WHERE id = $1', [dead.id]);
    expect(reason).toBe('lease_expired');
    const history = await sql<{ event: string; attempt: number; outcome: string | null; worker_id: string }>(
      db.url,
      'SELECT event, attempt, outcome, worker_id FROM inbox_entries_history WHERE entry_id = $1 ORDER BY id',
      [dead.id],
    );
    expect(history.map((h) => [h.event, h.attempt, h.outcome])).toEqual([
      ['released', 1, null],
      ['attempt', 1, 'lease_expired'],
      ['attempt', 2, 'dead_letter'],
    ]);
    expect(history.every((h) => h.worker_id.startsWith('crash-worker-'))).toBe(true);
    expect(await sql(db.url, 'SELECT 1 FROM effects WHERE message_id = $1', ['poison'])).toEqual([]);
  });
});
