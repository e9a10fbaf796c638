// Finds the PostgreSQL server that tests, the sample and the tools run against.
// DATABASE_URL wins; without it an embedded server (real PostgreSQL binaries from npm)
// is started in a git-ignored data directory under .data/. As root, the server runs as the
// `postgres` user; when that user cannot enter the checkout, the binaries run from a copy and
// the data lives under the system temp folder (see postgres-binaries.mjs and dataDirectoryFor).
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EmbeddedPostgresError } from './embedded-postgres-error.mjs';
import { EmbeddedServer } from './embedded-server.mjs';
import { installedBinaries, reachableBinaries } from './postgres-binaries.mjs';
import { canEnter, serverUser } from './postgres-user.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The embedded server listens on 127.0.0.1 only; its password is no secret. */
const PASSWORD = 'postgres';

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
 * Data directories live in .data/ of the checkout. When the server runs as the `postgres` user
 * and that user cannot enter the checkout (e.g. under /root), they live in a folder under the
 * system temp directory instead, named after the checkout.
 */
function dataDirectoryFor(name, user) {
  if (!user || canEnter(root, user)) return path.join(root, '.data', `postgres-${name}`);
  if (!canEnter(tmpdir(), user)) {
    throw new EmbeddedPostgresError(`the "postgres" user can enter neither this checkout (${root}) nor the temp folder ${tmpdir()} for the data`);
  }
  const id = createHash('sha1').update(root).digest('hex').slice(0, 8);
  return path.join(tmpdir(), `nestjs-inbox-${id}`, `postgres-${name}`);
}

/**
 * Creates the folder that holds the data directory, open to the `postgres` user whatever the
 * umask. Returns true when this call created it (so a failed start can remove it again).
 */
function openParent(dataDir, user) {
  const parent = path.dirname(dataDir);
  const created = !existsSync(parent);
  mkdirSync(parent, { recursive: true });
  if (user) chmodSync(parent, 0o755);
  return created;
}

function removeIfEmpty(folder) {
  try {
    rmdirSync(folder);
  } catch {
    // Another run's data is in it.
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
function freeDataDirectory(name, user) {
  for (let n = 1; n <= 8; n++) {
    const dir = dataDirectoryFor(n === 1 ? name : `${name}-${n}`, user);
    if (!inUse(dir)) return dir;
  }
  throw new EmbeddedPostgresError(`every embedded PostgreSQL data directory for "${name}" is in use by a running server`);
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
 * Starts (or reuses) a server. `name` picks the data directory, so the sample and the test suite
 * can run side by side; `fresh` deletes that directory's data first. Returns the admin URL, a stop
 * function, and a restart function that stops the server, waits `downtimeMs` (embedded server
 * only) and starts it again on the same port, so clients reconnect to the URL they already have.
 */
export async function startPostgres(name = 'test', { log = () => {}, fresh = false } = {}) {
  if (process.env.DATABASE_URL) {
    const url = process.env.DATABASE_URL;
    return { url, embedded: false, stop: async () => {}, restart: () => restartSystemServer(url) };
  }
  const user = serverUser();
  const nativeDir = reachableBinaries(await installedBinaries(), user);
  const dataDir = freeDataDirectory(name, user);
  const port = await freePort();
  const server = new EmbeddedServer({
    nativeDir,
    dataDir,
    port,
    user,
    password: PASSWORD,
    flags: ['-c', 'max_connections=300', '-c', 'fsync=off', '-c', 'listen_addresses=127.0.0.1'],
    log,
  });
  const createdParent = openParent(dataDir, user);
  let initialised = false;
  try {
    if (fresh || !existsSync(path.join(dataDir, 'PG_VERSION'))) {
      rmSync(dataDir, { recursive: true, force: true });
      initialised = true;
      await server.initialise();
    }
    removeStalePidFile(dataDir);
    await server.start();
  } catch (error) {
    // Leave nothing behind but a data directory that already held data before this call.
    if (initialised) rmSync(dataDir, { recursive: true, force: true });
    if (createdParent) removeIfEmpty(path.dirname(dataDir));
    throw error;
  }
  const url = `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`;
  const restart = async ({ downtimeMs = 0 } = {}) => {
    await server.stop();
    await sleep(downtimeMs);
    await server.start();
  };
  return { url, embedded: true, server, stop: () => server.stop(), restart };
}
