// PostgreSQL refuses to run as root, so a root process runs it as the `postgres` OS user; that
// user must be able to reach the binaries and the data directory.
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { EmbeddedPostgresError } from './embedded-postgres-error.mjs';

/** The user the server runs as: undefined when this process is not root (it runs as itself). */
export function serverUser() {
  if (process.getuid?.() !== 0) return undefined;
  const existing = lookUp();
  if (existing) return existing;
  try {
    // What embedded-postgres's createPostgresUser option does.
    execFileSync('groupadd', ['postgres'], { stdio: 'ignore' });
    execFileSync('useradd', ['-g', 'postgres', 'postgres'], { stdio: 'ignore' });
  } catch (error) {
    throw new EmbeddedPostgresError('this process runs as root, PostgreSQL will not, and no "postgres" OS user exists or could be created', { cause: error });
  }
  const created = lookUp();
  if (!created) throw new EmbeddedPostgresError('the "postgres" OS user was created but cannot be looked up');
  return created;
}

function lookUp() {
  const id = (...args) => execFileSync('id', [...args, 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    return { name: 'postgres', uid: Number(id('-u')), gid: Number(id('-g')), groups: id('-G').split(/\s+/).map(Number) };
  } catch {
    return undefined;
  }
}

/** True when `user` may pass through every folder from / down to `folder`, itself included. */
export function canEnter(folder, user) {
  for (let dir = path.resolve(folder); ; dir = path.dirname(dir)) {
    const stat = statSync(dir);
    const shift = stat.uid === user.uid ? 6 : user.groups.includes(stat.gid) ? 3 : 0;
    if (((stat.mode >> shift) & 0o1) === 0) return false;
    if (dir === path.dirname(dir)) return true;
  }
}
