import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { readmeTypeScriptBlocks } from '../support/readme-blocks';
import { installScratchApp, NEST_APP_TSCONFIG, packLikeAFreshClone, ROOT, run, scratchFolder, type Run } from '../support/scratch-package';
import { waitFor } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

const PEERS = [
  '@nestjs/common',
  '@nestjs/core',
  '@nestjs/platform-express',
  '@nestjs/schedule',
  '@nestjs/typeorm',
  'typeorm',
  'pg',
  'class-validator',
  'class-transformer',
  'reflect-metadata',
  'rxjs',
];
const { version } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * The library as users get it: packed from a fresh clone, installed from the tarball into a new
 * Nest 12 app with its peers, the README's Quick start pasted in, compiled with tsc and run.
 * Slow (an npm install): about half a minute with a warm npm cache.
 */
describe('the packed library in a new app', () => {
  let scratch: string;
  let app: string;
  let tarball: string;
  let files: string[];

  beforeAll(async () => {
    scratch = scratchFolder('package');
    tarball = await packLikeAFreshClone(scratch);
    files = (await run('tar', ['tzf', tarball], { cwd: scratch })).stdout.split('\n').filter(Boolean);
    app = path.join(scratch, 'app');
    mkdirSync(app);
    await installScratchApp(app, tarball, PEERS, ['typescript', '@types/node']);
  }, 300_000);

  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('ships the build, the licence and the README, without source maps pointing at unshipped sources', () => {
    expect(files).toEqual(
      expect.arrayContaining([
        'package/package.json',
        'package/LICENSE',
        'package/README.md',
        'package/dist/index.js',
        'package/dist/index.d.ts',
        'package/dist/cli/main.js',
        'package/dist/http/inbox-exception.filter.js',
      ]),
    );
    expect(files.filter((file) => file.endsWith('.map') || /^package\/(lib|test|scripts|sample)\//.test(file))).toEqual([]);
    const index = readFileSync(path.join(app, 'node_modules', 'nestjs-inbox', 'dist', 'index.js'), 'utf8');
    expect(index).not.toContain('sourceMappingURL');
  });

  it('runs the CLI with npx: --help and --version', async () => {
    const help = await run('npx', ['--no-install', 'nestjs-inbox', '--help'], { cwd: app, env: { DATABASE_URL: '' } });
    expect(help).toMatchObject({ code: 0, stderr: '' });
    expect(help.stdout).toMatch(/^Usage: nestjs-inbox \[options\] \[command\]/);
    expect(await run('npx', ['--no-install', 'nestjs-inbox', '--version'], { cwd: app })).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
  });

  describe('the README Quick start, pasted in', () => {
    let db: TestDatabase;
    let server: ChildProcess | undefined;
    let output = '';
    let compiled: Run;

    beforeAll(async () => {
      for (const block of readmeTypeScriptBlocks().filter((candidate) => candidate.file)) {
        mkdirSync(path.dirname(path.join(app, block.file!)), { recursive: true });
        writeFileSync(path.join(app, block.file!), `${block.code}\n`);
      }
      writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify(NEST_APP_TSCONFIG, null, 2));
      compiled = await run('npx', ['--no-install', 'tsc', '-p', 'tsconfig.json'], { cwd: app });
      db = await createTestDatabase('package');
    }, 120_000);

    afterAll(async () => {
      if (server && server.exitCode === null && server.signalCode === null) {
        server.kill('SIGKILL');
        await new Promise((resolve) => server!.once('exit', resolve));
      }
      await db?.drop();
    });

    it('compiles with tsc as a Nest 12 app (ES modules, strict)', () => {
      expect(compiled).toEqual({ code: 0, stdout: '', stderr: '' });
    });

    it('runs: a deposit over HTTP is received, then Completed with its effect; a missing key answers 400', async () => {
      const port = await freePort();
      const child = spawn(process.execPath, ['dist/main.js'], { cwd: app, env: { ...process.env, DATABASE_URL: db.url, PORT: String(port) } });
      server = child;
      child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const base = `http://127.0.0.1:${port}`;
      const exited = () => child.exitCode !== null || child.signalCode !== null;
      await waitFor(
        async () => {
          if (exited()) throw new Error(`the app exited:\n${output}`);
          return fetch(`${base}/deposits/00000000-0000-4000-8000-000000000000`).then((response) => response.status === 404, () => false);
        },
        'the Quick start app to listen',
        30_000,
      );
      await sql(db.url, `INSERT INTO accounts (id) VALUES ('acc-ada')`);

      const post = (headers: Record<string, string>) =>
        fetch(`${base}/deposits`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ accountId: 'acc-ada', amount: 500 }) });
      const accepted = await post({ 'idempotency-key': 'dep-ada-1' });
      expect(accepted.status).toBe(202);
      const { id, status } = (await accepted.json()) as { id: string; status: string };
      expect(status).toBe('pending');
      const done = await waitFor(async () => {
        const entry = (await (await fetch(`${base}/deposits/${id}`)).json()) as { status: string };
        return entry.status === 'completed' ? entry : undefined;
      }, 'the deposit to complete');
      expect(done).toEqual({ id, status: 'completed', error: null });
      expect(await sql(db.url, 'SELECT account_id, amount, message_id FROM account_events')).toEqual([
        { account_id: 'acc-ada', amount: 500, message_id: 'dep-ada-1' },
      ]);

      const missingKey = await post({});
      expect(missingKey.status).toBe(400);
      expect(await missingKey.json()).toMatchObject({ error: 'InboxArgumentError', argument: 'command.messageId' });

      child.kill('SIGTERM');
      await waitFor(() => exited(), 'the app to stop on SIGTERM');
    });
  });
});
