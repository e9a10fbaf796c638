import { Injectable } from '@nestjs/common';
import { IsString, Validate, ValidatorConstraint, type ValidatorConstraintInterface } from 'class-validator';
import { Client } from 'pg';
import { InboxCommand, InboxHandler, InboxStatus, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { createTestApp, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

let admin: Client;

/** Polls until `check` holds. */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let tries = 0; tries < 2000; tries++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  throw new Error(`never: ${what}`);
}

const stateOf = async (pid: number) => (await admin.query('SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0];

/** Its session is ended by the server during a best-effort statement; it catches that, then (optionally) awaits a little before returning. */
async function bestEffort(manager: InboxContext['manager'], settleMs: number): Promise<void> {
  const [{ pid }] = (await manager.query('SELECT pg_backend_pid() AS pid')) as Array<{ pid: number }>;
  const audit = manager.query('SELECT pg_sleep(30)');
  await until(async () => (await stateOf(pid))?.state === 'active', 'the audit to run');
  await admin.query('SELECT pg_terminate_backend($1)', [pid]);
  try {
    await audit;
  } catch {
    // best effort: only logged
  }
  if (settleMs > 0) await new Promise((resolve) => setTimeout(resolve, settleMs)); // e.g. an async logger flush
}

/** Catches the end of its session, flushes a log line (100 ms), returns. */
@Injectable()
@InboxHandler('rerun.slow-catch', { maxAttempts: 1, timeoutMs: 3_000 })
class SlowCatchHandler implements InboxCommandHandler<Record<string, never>> {
  private readonly cut = new Set<string>();
  async execute(_command: unknown, { manager, entry }: InboxContext): Promise<void> {
    if (this.cut.has(entry.messageId)) return;
    this.cut.add(entry.messageId);
    await bestEffort(manager, 100);
  }
}

/** Catches the end of its session and returns at once. */
@Injectable()
@InboxHandler('rerun.catch', { maxAttempts: 1, timeoutMs: 5_000 })
class CatchHandler implements InboxCommandHandler<Record<string, never>> {
  private readonly cut = new Set<string>();
  async execute(_command: unknown, { manager, entry }: InboxContext): Promise<void> {
    if (this.cut.has(entry.messageId)) return;
    this.cut.add(entry.messageId);
    await bestEffort(manager, 0);
  }
}

/** Does no database work at all (an HTTP call, a computation). */
@Injectable()
@InboxHandler('rerun.pure', { maxAttempts: 1, timeoutMs: 2_000 })
class PureHandler implements InboxCommandHandler<Record<string, never>> {
  async execute(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A custom async validator doing I/O; its second call meets a blip (transient, by the materializer's own contract). */
@ValidatorConstraint({ name: 'accountExists', async: true })
class AccountExists implements ValidatorConstraintInterface {
  static calls = 0;
  async validate(): Promise<boolean> {
    AccountExists.calls++;
    if (AccountExists.calls === 2) throw Object.assign(new Error('account registry: ETIMEDOUT'), { code: 'ETIMEDOUT' });
    return true;
  }
}

@InboxCommand('rerun.checked')
class Checked {
  @IsString() @Validate(AccountExists) account!: string;
}

@Injectable()
@InboxHandler(Checked, { maxAttempts: 3 })
class CheckedHandler implements InboxCommandHandler<Checked> {
  async execute(_command: Checked, { manager }: InboxContext): Promise<void> {
    await manager.query('SELECT 1');
  }
}

/** Fails its first attempt. */
@Injectable()
@InboxHandler('rerun.boom', { maxAttempts: 3, backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 0 } })
class BoomHandler implements InboxCommandHandler<Record<string, never>> {
  async execute(_command: unknown, { manager, entry }: InboxContext): Promise<void> {
    await manager.query('SELECT 1');
    if (entry.attempt === 1) throw new Error('dependency blip');
  }
}

/**
 * What a batch does when it runs its entries again (a neighbour failed) and when the server ends its
 * session under a handler that catches the error.
 */
describe('a batch run again, and a session ended under a handler', () => {
  let db: TestDatabase;
  let app: TestApp;

  beforeAll(async () => {
    db = await createTestDatabase('reruns');
    admin = new Client({ connectionString: db.url });
    await admin.connect();
    app = await createTestApp({
      url: db.url,
      handlers: [SlowCatchHandler, CatchHandler, PureHandler, CheckedHandler, BoomHandler],
      inbox: { batchSize: 10, concurrency: 1 },
    });
  });

  afterAll(async () => {
    await app?.close();
    await admin?.end();
    await db?.drop();
  });

  const rowsOf = (prefix: string) =>
    sql<{ message_id: string; status: string; retry_count: number; error: string | null }>(
      db.url,
      `SELECT message_id, status, retry_count, error FROM inbox_entries WHERE message_id LIKE $1 ORDER BY message_id`,
      [`${prefix}-%`],
    );

  async function store(prefix: string, types: string[], payload = '{}'): Promise<void> {
    await sql(
      db.url,
      `INSERT INTO inbox_entries (message_id, command_type, payload, received_at)
       SELECT $2 || '-' || (o - 1), t, $3::jsonb, now() - interval '1 minute' + o * interval '1 ms'
       FROM unnest($1::text[]) WITH ORDINALITY AS x(t, o)`,
      [types, prefix, payload],
    );
  }

  it('charges nothing when a handler catches the end of its session and awaits something more before it returns', async () => {
    await store('slow', ['rerun.slow-catch']);
    await app.processor.runOnce();
    await app.processor.runOnce();
    expect(await rowsOf('slow')).toEqual([expect.objectContaining({ status: InboxStatus.Completed, retry_count: 0 })]);
  }, 30_000);

  it('charges nothing to the next handler, one that does no database work, after a handler caught the end of the session', async () => {
    await store('nb', ['rerun.catch', 'rerun.pure']);
    await app.processor.runOnce();
    await app.processor.runOnce();
    expect((await rowsOf('nb')).map((r) => [r.message_id, r.status, r.retry_count, r.error])).toEqual([
      ['nb-0', InboxStatus.Completed, 0, null],
      ['nb-1', InboxStatus.Completed, 0, null],
    ]);
  }, 30_000);

  it('records a command that cannot be made again for a rerun (its validator failed this time) as a failed attempt, and the culprit too', async () => {
    await sql(
      db.url,
      `INSERT INTO inbox_entries (message_id, command_type, payload, received_at) VALUES
        ('val-0', 'rerun.checked', '{"account": "a"}', now() - interval '1 minute'),
        ('val-1', 'rerun.boom', '{}', now() - interval '1 minute' + interval '1 ms')`,
    );
    await app.processor.runOnce();
    const rows = await rowsOf('val');
    // The culprit is charged, and so is the one whose command could not be made again (as it would
    // be at the claim): neither is left claimed until its lease expires.
    expect(rows.map((row) => [row.message_id, row.status, row.retry_count])).toEqual([
      ['val-0', InboxStatus.Failed, 1],
      ['val-1', InboxStatus.Failed, 1],
    ]);
  }, 30_000);
});
