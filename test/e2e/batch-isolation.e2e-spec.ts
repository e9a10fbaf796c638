import { Injectable } from '@nestjs/common';
import { IsInt, IsString } from 'class-validator';
import { Client } from 'pg';
import { DeadLetterReason, InboxCommand, InboxHandler, InboxStatus, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { createTestApp, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

interface IsolationPayload {
  /**
   * ok: writes its effect. swallow: inserts a row that already exists and catches the error (the
   * "insert, ignore duplicates" idiom), which leaves its transaction aborted. throw-once: fails its
   * first attempt. spoof-once: fails its first attempt with a message that looks like the library's
   * own lease-expiry text. sever-once: the first time it runs, its statement ends its own
   * connection (as a server restart would). refused-once: fails its first attempt with a
   * connection error of its own (a service it calls is down), the batch's connection intact.
   * deferred: inserts a row that already exists where the constraint is checked only at commit:
   * the batch's commit fails, no statement of the handler does. sever-alone: like sever-once, on its
   * third run (its batch's first two failed as a whole: it then runs in a transaction of its own).
   */
  mode: 'ok' | 'swallow' | 'throw-once' | 'spoof-once' | 'sever-once' | 'refused-once' | 'deferred' | 'sever-alone';
}

@Injectable()
@InboxHandler('test.isolation', { maxAttempts: 3, backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } })
class IsolationHandler implements InboxCommandHandler<IsolationPayload> {
  readonly runs: Array<{ messageId: string; attempt: number; txid: string }> = [];
  private readonly severed = new Set<string>();

  async execute(command: IsolationPayload, { manager, entry }: InboxContext): Promise<void> {
    const [{ txid }] = (await manager.query('SELECT txid_current()::text AS txid')) as Array<{ txid: string }>;
    this.runs.push({ messageId: entry.messageId, attempt: entry.attempt, txid });
    if (command.mode === 'swallow') {
      try {
        await manager.query('INSERT INTO unique_keys (key) VALUES ($1)', ['taken']);
      } catch {
        // "already there, fine" — but PostgreSQL has aborted the transaction
      }
      return;
    }
    if (command.mode === 'deferred') await manager.query('INSERT INTO deferred_keys (key) VALUES ($1)', ['taken']);
    const severNow = command.mode === 'sever-alone' && this.runs.filter((run) => run.messageId === entry.messageId).length === 3;
    if ((command.mode === 'sever-once' || severNow) && !this.severed.has(entry.messageId)) {
      this.severed.add(entry.messageId);
      await manager.query('SELECT pg_terminate_backend(pg_backend_pid())');
    }
    await manager.query('INSERT INTO isolation_effects (message_id, attempt) VALUES ($1, $2)', [entry.messageId, entry.attempt]);
    if (command.mode === 'refused-once' && entry.attempt === 1) throw Object.assign(new Error('connect ECONNREFUSED 10.0.0.7:443'), { code: 'ECONNREFUSED' });
    if (command.mode === 'throw-once' && entry.attempt === 1) throw new Error('dependency blip');
    if (command.mode === 'spoof-once' && entry.attempt === 1) throw new Error('Lease expired: voucher V-1 is past its date');
  }
}

/** The same handler for a second type whose failures wait a minute before their retry. */
@Injectable()
@InboxHandler('test.spoof', { backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 0 } })
class SpoofHandler implements InboxCommandHandler<IsolationPayload> {
  constructor(private readonly isolation: IsolationHandler) {}

  execute(command: IsolationPayload, context: InboxContext): Promise<void> {
    return this.isolation.execute(command, context);
  }
}

@InboxCommand('test.charge')
class Charge {
  @IsString() account!: string;
  @IsInt() amount!: number;
}

/** Normalises its command in place (euros to cents), as handlers do, before it writes it. */
@Injectable()
@InboxHandler(Charge)
class ChargeHandler implements InboxCommandHandler<Charge> {
  async execute(command: Charge, { manager, entry }: InboxContext): Promise<void> {
    command.amount = command.amount * 100;
    await manager.query('INSERT INTO charges (message_id, cents) VALUES ($1, $2)', [entry.messageId, command.amount]);
  }
}

/** The same with a plain payload (no class): it adds to the array it was given. */
@Injectable()
@InboxHandler('test.tags')
class TagsHandler implements InboxCommandHandler<{ tags: string[] }> {
  async execute(command: { tags: string[] }, { manager, entry }: InboxContext): Promise<void> {
    command.tags.push('seen');
    await manager.query('INSERT INTO charges (message_id, cents, tags) VALUES ($1, 0, $2)', [entry.messageId, command.tags.join(',')]);
  }
}

/**
 * A best-effort write whose failure it catches and only logs; the first time it runs, the server
 * ends its session during that write (a restart, pg_terminate_backend from outside).
 */
@Injectable()
@InboxHandler('test.best-effort', { maxAttempts: 1, timeoutMs: 5_000 })
class BestEffortHandler implements InboxCommandHandler<Record<string, never>> {
  admin?: Client;
  private readonly cut = new Set<string>();

  async execute(_command: Record<string, never>, { manager, entry }: InboxContext): Promise<void> {
    await manager.query('INSERT INTO isolation_effects (message_id, attempt) VALUES ($1, $2)', [entry.messageId, entry.attempt]);
    if (this.cut.has(entry.messageId)) return;
    this.cut.add(entry.messageId);
    const [{ pid }] = (await manager.query('SELECT pg_backend_pid() AS pid')) as Array<{ pid: number }>;
    const audit = manager.query('SELECT pg_sleep(30)');
    await waitForState(this.admin!, pid, 'active');
    await this.admin!.query('SELECT pg_terminate_backend($1)', [pid]);
    try {
      await audit;
    } catch {
      // only logged: the audit is best effort
    }
  }
}

/** Polls until the session `pid` is in `state`. */
async function waitForState(admin: Client, pid: number, state: string): Promise<void> {
  for (let tries = 0; tries < 500; tries++) {
    const { rows } = await admin.query('SELECT state FROM pg_stat_activity WHERE pid = $1', [pid]);
    if (rows[0]?.state === state) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`session ${pid} never ${state}`);
}

describe('batch isolation', () => {
  let db: TestDatabase;
  let app: TestApp;
  let admin: Client;

  beforeAll(async () => {
    db = await createTestDatabase('isolation');
    await sql(db.url, 'CREATE TABLE unique_keys (key text PRIMARY KEY)');
    await sql(db.url, `INSERT INTO unique_keys VALUES ('taken')`);
    await sql(db.url, 'CREATE TABLE deferred_keys (key text, CONSTRAINT deferred_key UNIQUE (key) DEFERRABLE INITIALLY DEFERRED)');
    await sql(db.url, `INSERT INTO deferred_keys VALUES ('taken')`);
    await sql(db.url, 'CREATE TABLE isolation_effects (message_id text NOT NULL, attempt int NOT NULL)');
    await sql(db.url, 'CREATE TABLE charges (message_id text PRIMARY KEY, cents int NOT NULL, tags text)');
    admin = new Client({ connectionString: db.url });
    await admin.connect();
    app = await createTestApp({ url: db.url, handlers: [IsolationHandler, SpoofHandler, ChargeHandler, TagsHandler, BestEffortHandler], inbox: { batchSize: 10, concurrency: 1 } });
    app.get(BestEffortHandler).admin = admin;
  });

  afterAll(async () => {
    await app?.close();
    await admin?.end();
    await db?.drop();
  });

  /** Stores entries in receive order without waking the processor, so that one claim takes them all. */
  async function store(prefix: string, modes: IsolationPayload['mode'][], commandType = 'test.isolation'): Promise<void> {
    await sql(
      db.url,
      `INSERT INTO inbox_entries (message_id, command_type, payload, received_at)
       SELECT $2 || '-' || (o - 1), $3, jsonb_build_object('mode', p), now() - interval '1 minute' + o * interval '1 ms'
       FROM unnest($1::text[]) WITH ORDINALITY AS x(p, o)`,
      [modes, prefix, commandType],
    );
  }

  const rowsOf = (prefix: string) =>
    sql<{ message_id: string; status: string; retry_count: number; reason: string | null; error: string | null }>(
      db.url,
      `SELECT message_id, status, retry_count, dead_letter_reason AS reason, error FROM inbox_entries
       WHERE message_id LIKE $1 ORDER BY message_id`,
      [`${prefix}-%`],
    );

  const failedAttemptsOf = (prefix: string) =>
    sql<{ message_id: string }>(
      db.url,
      `SELECT e.message_id FROM inbox_entries_history h JOIN inbox_entries e ON e.id = h.entry_id
       WHERE e.message_id LIKE $1 AND h.event = 'attempt' ORDER BY e.message_id`,
      [`${prefix}-%`],
    );

  it('blames a handler that swallowed a database error, and charges none of its neighbours', async () => {
    await store('sw', ['ok', 'ok', 'ok', 'swallow', 'ok', 'ok']);
    await app.processor.runOnce();

    const rows = await rowsOf('sw');
    const neighbours = rows.filter((row) => row.message_id !== 'sw-3');
    expect(neighbours.map((row) => [row.message_id, row.status, row.retry_count])).toEqual(
      ['sw-0', 'sw-1', 'sw-2', 'sw-4', 'sw-5'].map((id) => [id, InboxStatus.Completed, 0]),
    );
    const swallower = rows.find((row) => row.message_id === 'sw-3')!;
    expect(swallower).toMatchObject({ status: InboxStatus.DeadLetter, retry_count: 3, reason: DeadLetterReason.RetriesExhausted });
    expect(swallower.error).toMatch(/returned normally but left its transaction aborted/);
    // Every failed attempt on record is the swallower's.
    expect((await failedAttemptsOf('sw')).map((row) => row.message_id)).toEqual(['sw-3', 'sw-3', 'sw-3']);
    const effects = await sql<{ message_id: string }>(db.url, `SELECT message_id FROM isolation_effects WHERE message_id LIKE 'sw-%' ORDER BY message_id`);
    expect(effects.map((e) => e.message_id)).toEqual(['sw-0', 'sw-1', 'sw-2', 'sw-4', 'sw-5']);
  });

  it('charges only the entry whose own transaction fails at commit (a deferred constraint), not its neighbours', async () => {
    await store('df', ['ok', 'deferred', 'ok']);
    await app.processor.runOnce();
    const rows = await rowsOf('df');
    expect(rows.map((row) => [row.message_id, row.status])).toEqual([
      ['df-0', InboxStatus.Completed],
      ['df-1', InboxStatus.DeadLetter],
      ['df-2', InboxStatus.Completed],
    ]);
    expect(rows[1]).toMatchObject({ retry_count: 3, reason: DeadLetterReason.RetriesExhausted });
    expect(rows[1].error).toMatch(/deferred_key/);
    expect((await failedAttemptsOf('df')).map((row) => row.message_id)).toEqual(['df-1', 'df-1', 'df-1']);
    const effects = await sql<{ message_id: string }>(db.url, `SELECT message_id FROM isolation_effects WHERE message_id LIKE 'df-%' ORDER BY message_id`);
    expect(effects.map((e) => e.message_id)).toEqual(['df-0', 'df-2']);
  });

  it('charges nothing to an entry whose connection breaks while it runs in a transaction of its own after a commit failed', async () => {
    await store('da', ['deferred', 'sever-alone', 'ok']);
    await app.processor.runOnce();
    // The one whose connection broke, and the one after it, went back uncharged as crash suspects;
    // the next pass runs each alone.
    await app.processor.runOnce();
    const rows = await rowsOf('da');
    expect(rows.map((row) => [row.message_id, row.status, row.retry_count])).toEqual([
      ['da-0', InboxStatus.DeadLetter, 3],
      ['da-1', InboxStatus.Completed, 0],
      ['da-2', InboxStatus.Completed, 0],
    ]);
    expect((await failedAttemptsOf('da')).map((row) => row.message_id)).toEqual(['da-0', 'da-0', 'da-0']);
  });

  it("gives a rerun each command as stored, not as its first run left it (a handler that changed it in place)", async () => {
    await sql(
      db.url,
      `INSERT INTO inbox_entries (message_id, command_type, payload, received_at) VALUES
        ('mut-0', 'test.charge', '{"account": "a", "amount": 5}', now() - interval '1 minute'),
        ('mut-1', 'test.tags', '{"tags": ["x"]}', now() - interval '1 minute' + interval '1 ms'),
        ('mut-2', 'test.isolation', '{"mode": "swallow"}', now() - interval '1 minute' + interval '2 ms')`,
    );
    await app.processor.runOnce();
    // The swallower made the others run again; what they committed is what one run of the stored command writes.
    expect(await sql(db.url, `SELECT message_id, cents, tags FROM charges WHERE message_id LIKE 'mut-%' ORDER BY message_id`)).toEqual([
      { message_id: 'mut-0', cents: 500, tags: null },
      { message_id: 'mut-1', cents: 0, tags: 'x,seen' },
    ]);
  });

  it('charges nothing when the session is ended under a handler that catches the error and returns', async () => {
    await sql(db.url, `INSERT INTO inbox_entries (message_id, command_type, payload) VALUES ('caught-0', 'test.best-effort', '{}')`);
    await app.processor.runOnce();
    // Back uncharged as a crash suspect (maxAttempts 1: charged, it would be dead-lettered); the next pass runs it alone.
    await app.processor.runOnce();
    expect(await rowsOf('caught')).toEqual([expect.objectContaining({ message_id: 'caught-0', status: InboxStatus.Completed, retry_count: 0 })]);
  });

  it('keeps the blame on the swallower when the batch already runs with savepoints', async () => {
    // The first handler's failure rolls the batch back; the rest runs again with a savepoint each,
    // and there the swallower, then its neighbours run.
    await store('sp', ['throw-once', 'swallow', 'ok', 'ok']);
    await app.processor.runOnce();

    const rows = await rowsOf('sp');
    expect(rows.map((row) => [row.message_id, row.status, row.retry_count])).toEqual([
      ['sp-0', InboxStatus.Completed, 1],
      ['sp-1', InboxStatus.DeadLetter, 3],
      ['sp-2', InboxStatus.Completed, 0],
      ['sp-3', InboxStatus.Completed, 0],
    ]);
    expect((await failedAttemptsOf('sp')).map((row) => row.message_id)).toEqual(['sp-0', 'sp-1', 'sp-1', 'sp-1']);
  });

  it('charges nobody when a handler\'s statement fails because the batch\'s own connection died', async () => {
    await store('sever', ['ok', 'sever-once', 'ok']);
    await app.processor.runOnce();
    const history = await sql<{ event: string; reason: string | null }>(
      db.url,
      `SELECT h.event, h.reason FROM inbox_entries_history h JOIN inbox_entries e ON e.id = h.entry_id WHERE e.message_id = 'sever-1' ORDER BY h.id`,
    );
    expect(history[0]).toEqual({ event: 'released', reason: 'its batch lost its connection' });
    expect(history.map((record) => record.event)).not.toContain('attempt');
    // Back uncharged as crash suspects, each then run alone: all complete on their first attempt.
    await app.processor.runOnce();
    expect(await rowsOf('sever')).toEqual([
      expect.objectContaining({ message_id: 'sever-0', status: InboxStatus.Completed, retry_count: 0 }),
      expect.objectContaining({ message_id: 'sever-1', status: InboxStatus.Completed, retry_count: 0 }),
      expect.objectContaining({ message_id: 'sever-2', status: InboxStatus.Completed, retry_count: 0 }),
    ]);
  });

  it('charges a handler whose own call failed with a connection error while the batch\'s connection was fine', async () => {
    await store('refused', ['refused-once']);
    await app.processor.runOnce();
    expect((await rowsOf('refused'))[0]).toMatchObject({ status: InboxStatus.Completed, retry_count: 1 });
    const [attempt] = await sql<{ outcome: string; error_message: string }>(
      db.url,
      `SELECT h.outcome, h.error_message FROM inbox_entries_history h JOIN inbox_entries e ON e.id = h.entry_id WHERE e.message_id = 'refused-0' AND h.event = 'attempt'`,
    );
    expect(attempt).toEqual({ outcome: 'failed', error_message: 'connect ECONNREFUSED 10.0.0.7:443' });
  });

  it('does not take a business error that reads like a lease expiry for a crash', async () => {
    const handler = app.get(IsolationHandler);
    await store('spoof', ['spoof-once'], 'test.spoof');
    await app.processor.runOnce(); // the first attempt fails with "Lease expired: …" and waits a minute
    expect((await rowsOf('spoof'))[0]).toMatchObject({ status: InboxStatus.Failed, retry_count: 1 });
    // The minute passes; two neighbours are due with it.
    await sql(db.url, `UPDATE inbox_entries SET next_retry_at = now() - interval '1 second' WHERE message_id = 'spoof-0'`);
    await store('spoofn', ['ok', 'ok'], 'test.spoof');
    await app.processor.runOnce();

    expect((await rowsOf('spoof'))[0]).toMatchObject({ status: InboxStatus.Completed, retry_count: 1 });
    const retry = handler.runs.find((run) => run.messageId === 'spoof-0' && run.attempt === 2)!;
    const neighbours = handler.runs.filter((run) => run.messageId.startsWith('spoofn-'));
    // A crash suspect would run alone, in a transaction of its own: this retry shares its batch's.
    expect(neighbours.map((run) => run.txid)).toEqual([retry.txid, retry.txid]);
  });
});
