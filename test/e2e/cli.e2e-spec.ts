import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { InboxStatus } from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, ScriptedHandler, TransferHandler } from '../fixtures/handlers';
import { proxyFor } from '../support/tcp-proxy';
import { createTestApp, ManualClock } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

const ROOT = path.join(__dirname, '..', '..');

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI from source in a child process, as an operator would run the built one. */
function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  const { DATABASE_URL: _ignored, ...inherited } = process.env;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['-r', './scripts/register-ts.cjs', 'lib/cli/main.ts', ...args],
      { cwd: ROOT, timeout: 30_000, env: { ...inherited, ...env } },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr }),
    );
  });
}

/** No stack trace, one clear line: what every expected error must look like. */
function expectFailure(result: CliResult, code: number, message: string | RegExp): void {
  expect({ code: result.code, stdout: result.stdout }).toEqual({ code, stdout: '' });
  expect(result.stderr).toMatch(message);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

/**
 * Entries in every state, produced by the library itself; the CLI runs after this app is gone.
 * Returns their ids by messageId.
 */
async function populate(url: string): Promise<Record<string, string>> {
  await sql(url, EFFECTS_TABLE_SQL);
  const clock = new ManualClock();
  const app = await createTestApp({
    url,
    handlers: [ScriptedHandler, TransferHandler],
    inbox: { clock, maxAttempts: 2, backoff: { initialDelayMs: 1000, maxDelayMs: 1000, jitter: 0 }, acceptUnknownCommandTypes: true },
  });
  try {
    const receive = (messageId: string, commandType: string, payload: Record<string, unknown>) => app.inbox.receive({ messageId, commandType, payload });
    await receive('ok-1', 'test.scripted', {});
    await receive('perm-1', 'test.scripted', { permanent: true });
    await receive('perm-2', 'test.scripted', { permanent: true });
    await receive('invalid-1', 'test.transfer', { account: '', amount: 0 });
    await receive('orphan-1', 'test.unknown', {});
    await receive('flaky-1', 'test.scripted', { alwaysFail: true });
    await app.processor.runOnce();
    clock.advance(5_000); // past flaky-1's backoff: its second and last attempt
    await app.processor.runOnce();
    await receive('failing-1', 'test.scripted', { alwaysFail: true }); // fails once, retries later
    await app.processor.runOnce();
    // No worker handles test.unknown: it waits, Pending, until an operator decides.
    const orphan = (await app.inbox.findByMessageId('orphan-1'))!;
    expect(orphan.status).toBe(InboxStatus.Pending);
    await app.inbox.deadLetter(orphan.id, { actor: 'ops', reason: 'no worker handles test.unknown' });
  } finally {
    await app.close();
  }
  await sql(url, `INSERT INTO inbox_entries (message_id, command_type, payload, received_at) VALUES ('pending-1', 'test.scripted', '{}', '2020-01-01T00:00:00Z')`);
  // failing-1's retry is due a second after the test clock's time; on the real clock, keep it in the future.
  await sql(url, `UPDATE inbox_entries SET next_retry_at = now() + interval '1 hour' WHERE message_id = 'failing-1'`);
  const ids: Record<string, string> = {};
  for (const { id, message_id } of await sql<{ id: string; message_id: string }>(url, 'SELECT id, message_id FROM inbox_entries')) ids[message_id] = id;
  const rows = await sql<{ message_id: string; status: string; dead_letter_reason: string | null }>(
    url,
    `SELECT message_id, status, dead_letter_reason FROM inbox_entries WHERE message_id IN ('flaky-1', 'failing-1') ORDER BY message_id`,
  );
  expect(rows).toEqual([
    { message_id: 'failing-1', status: InboxStatus.Failed, dead_letter_reason: null },
    { message_id: 'flaky-1', status: InboxStatus.DeadLetter, dead_letter_reason: 'retries_exhausted' },
  ]);
  return ids;
}

describe('operator CLI', () => {
  /** Read by the reading and error specs, never changed. */
  let db: TestDatabase;
  let ids: Record<string, string> = {};

  /** Runs against `url` and expects success. */
  const cliOn = async (url: string, ...args: string[]): Promise<string> => {
    const result = await run(['--database-url', url, ...args]);
    if (result.code !== 0) throw new Error(`exit ${result.code} for ${args.join(' ')}:\n${result.stderr}`);
    return result.stdout;
  };
  const cli = (...args: string[]) => cliOn(db.url, ...args);
  const cliJson = async <T = any>(...args: string[]): Promise<T> => JSON.parse(await cli(...args, '--json')) as T;

  beforeAll(async () => {
    db = await createTestDatabase('cli');
    ids = await populate(db.url);
  });

  afterAll(async () => {
    await db?.drop();
  });

  describe('reading', () => {
    it('stats: counts by status and dead letters by reason', async () => {
      const stats = await cliJson('stats');
      expect(stats).toEqual({
        byStatus: { pending: 1, processing: 0, completed: 1, failed: 1, dead_letter: 5 },
        deadLetters: {
          retries_exhausted: { open: 1, discarded: 0 },
          permanent_error: { open: 2, discarded: 0 },
          invalid_payload: { open: 1, discarded: 0 },
          no_handler: { open: 0, discarded: 0 },
          lease_expired: { open: 0, discarded: 0 },
          manual: { open: 1, discarded: 0 },
        },
        // pending-1 (received in 2020) waits; failing-1's retry is not due yet.
        due: [{ commandType: 'test.scripted', due: 1, oldestDueAt: '2020-01-01T00:00:00.000Z' }],
        total: 8,
      });
      const text = await cli('stats');
      expect(text).toMatch(/^dead_letter\s+5$/m);
      expect(text).toMatch(/^permanent_error\s+2\s+0$/m);
      expect(text).toMatch(/^total\s+8$/m);
      expect(text).toMatch(/^test\.scripted\s+1\s+2020-01-01T00:00:00Z$/m);
    });

    it('takes the database URL from DATABASE_URL', async () => {
      const result = await run(['stats', '--json'], { DATABASE_URL: db.url });
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout).total).toBe(8);
    });

    it('list: filters, newest first; --json prints full entries', async () => {
      const dead = await cliJson<Array<Record<string, unknown>>>('list', '--status', 'dead_letter', '--dead-letter-reason', 'permanent_error');
      expect(dead.map((e) => e.messageId).sort()).toEqual(['perm-1', 'perm-2']);
      expect(dead[0]).toMatchObject({ status: 'dead_letter', deadLetterReason: 'permanent_error', payload: { permanent: true }, error: 'business rule violated' });
      expect(new Date(dead[0].receivedAt as string).getTime()).not.toBeNaN();

      const messageIds = (...args: string[]) => cliJson<Array<{ messageId: string }>>('list', ...args).then((entries) => entries.map((e) => e.messageId));
      const [{ received_at: lastReceived }] = await sql<{ received_at: Date }>(db.url, `SELECT received_at FROM inbox_entries WHERE message_id = 'failing-1'`);
      const [all, limited, byType, byError, before, after] = await Promise.all([
        messageIds(),
        messageIds('--limit', '3'),
        messageIds('--type', 'test.transfer'),
        messageIds('--error-contains', 'FLAKY'),
        messageIds('--received-before', '2021-01-01'),
        messageIds('--received-after', lastReceived.toISOString()),
      ]);
      expect(all).toHaveLength(8);
      expect([all[0], all[7]]).toEqual(['failing-1', 'pending-1']); // newest first
      expect(limited).toHaveLength(3);
      expect(byType).toEqual(['invalid-1']);
      expect(byError.sort()).toEqual(['failing-1', 'flaky-1']);
      expect(before).toEqual(['pending-1']);
      expect(after).toEqual(['failing-1']);
    });

    it('list: a table with one line per entry, and a note when --limit cuts it', async () => {
      const text = await cli('list', '--status', 'failed');
      const lines = text.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^id\s+messageId\s+type\s+status\s+retries\s+reason\s+receivedAt\s+error$/);
      expect(lines).toHaveLength(2);
      expect(lines[1]).toContain(ids['failing-1']);
      expect(lines[1]).toMatch(/failing-1\s+test\.scripted\s+failed\s+1\s+-\s+\S+Z\s+flaky dependency down \(attempt 1\)/);
      expect(await cli('list', '--limit', '2')).toContain('(newest 2 of 8 matching entries;');
      expect(await cli('list', '--type', 'nobody')).toBe('No matching entries.\n');
    });

    it('show: the entry and every attempt', async () => {
      const { entry, history } = await cliJson('show', ids['flaky-1']);
      expect(entry).toMatchObject({ id: ids['flaky-1'], status: 'dead_letter', retryCount: 2, deadLetterReason: 'retries_exhausted' });
      expect(history).toEqual([
        expect.objectContaining({ event: 'attempt', attempt: 1, outcome: 'failed', errorClass: 'Error', errorMessage: 'flaky dependency down (attempt 1)' }),
        expect.objectContaining({ event: 'attempt', attempt: 2, outcome: 'dead_letter', errorMessage: expect.stringContaining('flaky dependency down (attempt 2)') }),
      ]);
      const text = await cli('show', ids['perm-1']);
      expect(text).toMatch(/^status\s+dead_letter$/m);
      expect(text).toMatch(/^deadLetterReason\s+permanent_error$/m);
      expect(text).toMatch(/^1\s+attempt\s+dead_letter\s+\S+Z\s+\d+ ms\s+\S+\s+PermanentError: business rule violated$/m);
    });

    it('show: an unknown id exits 1', async () => {
      expectFailure(await run(['--database-url', db.url, 'show', '00000000-0000-4000-8000-000000000000']), 1, /No inbox entry with id 00000000-0000-4000-8000-000000000000/);
    });
  });

  describe('operating', () => {
    /** Each change runs on a database of its own, populated afresh. */
    let opDb: TestDatabase;
    let opIds: Record<string, string>;
    const cli = (...args: string[]) => cliOn(opDb.url, ...args);
    const cliJson = async <T = any>(...args: string[]): Promise<T> => JSON.parse(await cli(...args, '--json')) as T;
    const row = async (messageId: string) =>
      (await sql<{ status: string; dead_letter_reason: string | null; discarded_at: Date | null; retry_count: number }>(
        opDb.url,
        'SELECT status, dead_letter_reason, discarded_at, retry_count FROM inbox_entries WHERE message_id = $1',
        [messageId],
      ))[0];

    beforeEach(async () => {
      opDb = await createTestDatabase('cli_op');
      opIds = await populate(opDb.url);
    });

    afterEach(async () => {
      await opDb?.drop();
    });

    it('replay --all --dry-run counts and changes nothing', async () => {
      expect(await cliJson('replay', '--all', '--dead-letter-reason', 'permanent_error', '--actor', 'ops', '--dry-run')).toEqual({
        matched: 2,
        replayed: 0,
        dryRun: true,
      });
      expect(await cli('replay', '--all', '--actor', 'ops', '--dry-run')).toBe('Dry run: 5 dead_letter entries match; nothing was changed.\n');
      expect(await row('perm-1')).toMatchObject({ status: InboxStatus.DeadLetter });
      expect(await row('perm-2')).toMatchObject({ status: InboxStatus.DeadLetter });
    });

    it('replay --all replays the matching dead letters, with a progress bar on request', async () => {
      const result = await run(
        ['--database-url', opDb.url, 'replay', '--all', '--dead-letter-reason', 'permanent_error', '--actor', 'ops', '--reason', 'fixed', '--batch-size', '1', '--progress'],
      );
      expect(result.code).toBe(0);
      expect(result.stdout).toBe('Replayed 2 of 2 matching dead_letter entries.\n');
      expect(result.stderr).toContain('2/2 entries');
      for (const messageId of ['perm-1', 'perm-2']) expect(await row(messageId)).toMatchObject({ status: InboxStatus.Pending, retry_count: 0 });
      expect(await row('flaky-1')).toMatchObject({ status: InboxStatus.DeadLetter }); // another reason: untouched

      const { entry, history } = await cliJson('show', opIds['perm-1']);
      expect(entry).toMatchObject({ status: 'pending', deadLetterReason: null });
      expect(history.at(-1)).toMatchObject({ event: 'replayed', actor: 'ops', reason: 'fixed' });
      expect(await cli('show', opIds['perm-1'])).toMatch(/^\s+replayed\s+\S+Z\s+ops\s+fixed$/m);
    });

    it('replay without a bar prints only the summary; --json prints it as JSON', async () => {
      const result = await run(['--database-url', opDb.url, 'replay', '--all', '--status', 'failed', '--type', 'test.scripted', '--actor', 'ops', '--json']);
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(JSON.parse(result.stdout)).toEqual({ matched: 1, replayed: 1, dryRun: false });
      expect(await row('failing-1')).toMatchObject({ status: InboxStatus.Pending });
    });

    it('replay <id> replays one entry and records who asked', async () => {
      expect(await cli('replay', opIds['invalid-1'], '--actor', 'alice', '--reason', 'schema fixed')).toContain(`Replayed ${opIds['invalid-1']}`);
      expect(await row('invalid-1')).toMatchObject({ status: InboxStatus.Pending });
      const { history } = await cliJson('show', opIds['invalid-1']);
      expect(history.at(-1)).toMatchObject({ event: 'replayed', actor: 'alice', reason: 'schema fixed' });
    });

    it('replay of an entry in the wrong state exits 1', async () => {
      expectFailure(await run(['--database-url', opDb.url, 'replay', opIds['ok-1'], '--actor', 'ops']), 1, /Cannot replay inbox entry .*"completed"/);
    });

    it('discard closes a dead letter, which bulk replay then skips', async () => {
      const discarded = await cliJson('discard', opIds['orphan-1'], '--actor', 'ops', '--reason', 'obsolete command');
      expect(discarded).toMatchObject({ id: opIds['orphan-1'], status: 'dead_letter', deadLetterReason: 'manual' });
      expect(discarded.discardedAt).not.toBeNull();
      expect((await row('orphan-1')).discarded_at).not.toBeNull();
      const { history } = await cliJson('show', opIds['orphan-1']);
      expect(history.at(-1)).toMatchObject({ event: 'discarded', actor: 'ops', reason: 'obsolete command' });
      expect(await cliJson('replay', '--all', '--type', 'test.unknown', '--actor', 'ops', '--dry-run')).toMatchObject({ matched: 0 });
      expect((await cliJson('stats')).deadLetters.manual.discarded).toBe(1);
      expect(await cli('list', '--type', 'test.unknown')).toContain('dead_letter (discarded)');

      expectFailure(await run(['--database-url', opDb.url, 'discard', opIds['orphan-1'], '--actor', 'ops']), 1, /Cannot discard .*"dead_letter \(discarded\)"/);
    });

    it('dead-letter stops a pending entry by hand', async () => {
      expect(await cli('dead-letter', opIds['pending-1'], '--actor', 'bob', '--reason', 'customer cancelled')).toContain(`Dead-lettered ${opIds['pending-1']}`);
      expect(await row('pending-1')).toMatchObject({ status: InboxStatus.DeadLetter, dead_letter_reason: 'manual' });
      const { history } = await cliJson('show', opIds['pending-1']);
      expect(history).toEqual([expect.objectContaining({ event: 'dead_letter', actor: 'bob', reason: 'customer cancelled' })]);
      expectFailure(await run(['--database-url', opDb.url, 'dead-letter', opIds['ok-1'], '--actor', 'bob']), 1, /Cannot dead-letter .*"completed"/);
    });
  });

  describe('ordering keys', () => {
    let keysDb: TestDatabase;
    let blocking: string;
    let waiting: string;

    beforeAll(async () => {
      keysDb = await createTestDatabase('cli_keys');
      await sql(keysDb.url, EFFECTS_TABLE_SQL);
      const app = await createTestApp({ url: keysDb.url, handlers: [ScriptedHandler] });
      try {
        const receive = (messageId: string, payload: Record<string, unknown>) =>
          app.inbox.receive({ messageId, commandType: 'test.scripted', payload, orderingKey: 'account-7' });
        blocking = (await receive('key-1', { permanent: true })).entry.id;
        waiting = (await receive('key-2', {})).entry.id;
        await receive('key-3', {});
        await app.processor.runOnce();
      } finally {
        await app.close();
      }
    });

    afterAll(async () => {
      await keysDb?.drop();
    });

    it('blocked: the keys a dead letter holds, with the entries waiting behind it; show says why an entry waits', async () => {
      const keys = JSON.parse(await cliOn(keysDb.url, 'blocked', '--json')) as Array<{ orderingKey: string; waiting: number; blockedBy: { id: string } }>;
      expect(keys).toEqual([expect.objectContaining({ orderingKey: 'account-7', waiting: 2, blockedBy: expect.objectContaining({ id: blocking }) })]);
      const text = await cliOn(keysDb.url, 'blocked');
      expect(text).toMatch(new RegExp(`^account-7\\s+2\\s+${blocking}\\s+test\\.scripted\\s+permanent_error\\s+\\S+Z\\s+business rule violated$`, 'm'));
      expect(await cliOn(keysDb.url, 'blocked', '--type', 'other.type')).toBe('No ordering key is blocked.\n');
      const shown = await cliOn(keysDb.url, 'show', waiting);
      expect(shown).toMatch(/^orderingKey\s+account-7 #2 \(waiting\)$/m);
      expect(shown).toMatch(new RegExp(`waiting\\s.*waits behind entry ${blocking}`));
    });
  });

  describe('errors', () => {
    const url = () => ['--database-url', db.url];
    const usage: Array<[string, () => string[], RegExp]> = [
      ['an unknown command', () => [...url(), 'frobnicate'], /unknown command 'frobnicate'/],
      ['an invalid status', () => [...url(), 'list', '--status', 'done'], /argument 'done' is invalid\. Allowed choices are pending, processing/],
      ['an invalid dead-letter reason', () => [...url(), 'list', '--dead-letter-reason', 'bad'], /Allowed choices are retries_exhausted/],
      ['a status bulk replay cannot take', () => [...url(), 'replay', '--all', '--status', 'completed', '--actor', 'ops'], /Allowed choices are dead_letter, failed/],
      ['a non-UUID id', () => [...url(), 'show', '42'], /expected an entry id \(a UUID\)/],
      ['an invalid date', () => [...url(), 'list', '--received-after', 'yesterday'], /expected an ISO 8601 date/],
      ['an impossible date', () => [...url(), 'list', '--received-before', '2025-02-30'], /expected an ISO 8601 date/],
      ['a limit out of range', () => [...url(), 'list', '--limit', '0'], /expected an integer from 1 to 1000/],
      ['a missing --actor', () => [...url(), 'discard', ids['perm-1']], /required option '--actor <name>' not specified/],
      ['replay without id or --all', () => [...url(), 'replay', '--actor', 'ops'], /give an entry id, or --all/],
      ['replay with both id and --all', () => [...url(), 'replay', ids['perm-1'], '--all', '--actor', 'ops'], /either an entry id or --all/],
      ['filters on a single replay', () => [...url(), 'replay', ids['perm-1'], '--type', 'x', '--actor', 'ops'], /apply only with --all/],
      ['an invalid table name', () => [...url(), '--table', 'Robert"; DROP', 'stats'], /Invalid nestjs-inbox option "tableName"/],
      ['a missing database URL', () => ['stats'], /no database URL: pass --database-url or set DATABASE_URL/],
      ['a database URL that is not one', () => ['--database-url', 'localhost:5432', 'stats'], /must start with postgres:\/\//],
    ];

    it.each(usage)('exits 2 on %s', async (_name, args, message) => {
      expectFailure(await run(args()), 2, message);
    });

    it('exits 1 on a table that does not exist', async () => {
      expectFailure(await run([...url(), '--table', 'nope', 'stats']), 1, /relation "nope" does not exist \(wrong --table/);
    });

    it('exits 3, password masked, on a refused connection', async () => {
      const result = await run(['--database-url', 'postgres://postgres:s3cret@127.0.0.1:1/x', 'stats']);
      expectFailure(result, 3, /^error: cannot reach the database at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/x: connect ECONNREFUSED 127\.0\.0\.1:1\n$/);
      expect(result.stderr).not.toContain('s3cret');
    });

    it('exits 3, password masked, when the server cannot speak the TLS the URL asks for', async () => {
      const secured = new URL(db.url);
      secured.password = 's3cret';
      secured.searchParams.set('sslmode', 'verify-full');
      const result = await run(['--database-url', secured.toString(), 'stats']);
      expectFailure(result, 3, /^error: cannot reach the database at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/inbox_cli_\w+\?sslmode=verify-full: .*SSL.*\n$/);
      expect(result.stderr).not.toContain('s3cret');
    });

    it('exits 3 when the server never answers (connection timeout)', async () => {
      const proxy = proxyFor(db.url);
      const silent = await proxy.start(db.url);
      proxy.set('blackhole');
      try {
        const started = Date.now();
        expectFailure(await run([...['--database-url', silent], 'stats']), 3, /cannot reach the database at postgres:\/\/postgres(:\*\*\*)?@127\.0\.0\.1:\d+\/inbox_cli_\w+: .*timeout/i);
        expect(Date.now() - started).toBeLessThan(20_000);
      } finally {
        await proxy.close();
      }
    });

    it('prints the version of package.json on --version (exit 0)', async () => {
      const { version } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
      expect(await run(['--version'])).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
    });

    it('shows help on --help (exit 0), without touching the database', async () => {
      const result = await run(['replay', '--help']);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('--dead-letter-reason <reason>');
      expect(result.stdout).toContain('corrected payload is not offered here');
    });
  });
});
