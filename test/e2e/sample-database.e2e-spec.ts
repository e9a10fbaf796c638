import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createTestApp } from '../support/test-app';
import { sql } from '../support/test-database';

const ROOT = path.join(__dirname, '..', '..');
/** Its own data directory, so the spec never touches the data of a sample someone runs. */
const NAME = 'sample-spec';

/**
 * The sample runner's database step in a child process, as `npm start` runs it (always the
 * embedded server): it prints what the runner prints, then keeps the server until told to stop.
 */
class SampleDatabase {
  private output = '';
  private readonly child: ChildProcess;

  constructor(fresh: boolean) {
    const code = `
      import { startSampleDatabase } from ${JSON.stringify(path.join(ROOT, 'scripts', 'sample-database.mjs'))};
      const postgres = await startSampleDatabase({ name: '${NAME}', fresh: ${fresh}, log: (line) => console.log('[run-sample] ' + line) });
      console.log('READY');
      process.stdin.once('data', async () => { await postgres.stop(); process.exit(0); });`;
    const { DATABASE_URL: _system, ...env } = process.env;
    this.child = spawn(process.execPath, ['--input-type=module', '-e', code], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.child.stderr!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
  }

  /** The lines the runner printed, once the server is up. */
  async lines(timeoutMs = 30_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (!this.output.includes('READY\n')) {
      if (this.child.exitCode !== null) throw new Error(`the sample database did not start:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`the sample database did not start within ${timeoutMs} ms:\n${this.output}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return this.output.split('\n').filter((line) => line.startsWith('[run-sample]'));
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin!.write('stop\n');
    await exited;
  }
}

/** The CLI from source, as `node dist/cli/main.js` runs it after the build. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const { DATABASE_URL: _system, ...env } = process.env;
  return new Promise((resolve) => {
    execFile(process.execPath, ['-r', './scripts/register-ts.cjs', 'lib/cli/main.ts', ...args], { cwd: ROOT, env, timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code) : 0, stdout, stderr }),
    );
  });
}

describe('the sample runner\'s embedded database', () => {
  const running: SampleDatabase[] = [];
  const start = async (fresh: boolean) => {
    const database = new SampleDatabase(fresh);
    running.push(database);
    return { database, lines: await database.lines() };
  };
  /** The URL of the "operator CLI" line, checked to be a complete command. */
  const cliUrl = (lines: string[]): string => {
    const line = lines.find((candidate) => candidate.includes('operator CLI'));
    const match = /node dist\/cli\/main\.js stats --database-url (postgres:\/\/\S+)$/.exec(line ?? '');
    if (!match) throw new Error(`no operator CLI line in:\n${lines.join('\n')}`);
    return match[1];
  };

  afterAll(async () => {
    await Promise.all(running.map((database) => database.stop()));
  });

  /** Stores one command through the library, creating the inbox table as an app would. */
  const receiveOne = async (url: string, messageId: string) => {
    const app = await createTestApp({ url, inbox: { worker: false, acceptUnknownCommandTypes: true } });
    try {
      await app.inbox.receive({ messageId, commandType: 'bank.deposit', payload: {} });
    } finally {
      await app.close();
    }
  };

  it('prints a database URL the operator CLI accepts as it is, password included', async () => {
    const { database, lines } = await start(true);
    const url = cliUrl(lines);
    expect(lines).toContainEqual(`[run-sample] embedded PostgreSQL ready at ${url} (fresh: the previous data was deleted)`);
    expect(url).not.toContain('***');
    await receiveOne(url, 'cli-1');

    const stats = await cli(['--json', 'stats', '--database-url', url]);
    expect({ code: stats.code, stderr: stats.stderr }).toEqual({ code: 0, stderr: '' });
    expect(JSON.parse(stats.stdout)).toMatchObject({ byStatus: { pending: 1 }, total: 1 });
    await database.stop();
  });

  it('keeps the data between runs, and starts empty with --fresh', async () => {
    const first = await start(true);
    await receiveOne(cliUrl(first.lines), 'kept-1');
    await first.database.stop();

    const again = await start(false);
    const url = cliUrl(again.lines);
    expect(again.lines).toContainEqual(`[run-sample] embedded PostgreSQL ready at ${url}`);
    expect(await sql(url, 'SELECT message_id FROM inbox_entries')).toEqual([{ message_id: 'kept-1' }]);
    await again.database.stop();

    const fresh = await start(true);
    expect(await sql(cliUrl(fresh.lines), `SELECT 1 FROM pg_tables WHERE tablename = 'inbox_entries'`)).toEqual([]);
    await fresh.database.stop();
  });
});
