// One PostgreSQL server run from the embedded binaries: initdb once per data directory, then
// `postgres` as a child process of this one. As root both run as the `postgres` OS user.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { EmbeddedPostgresError } from './embedded-postgres-error.mjs';
import { programPath } from './postgres-binaries.mjs';

const READY = 'database system is ready to accept connections';

export class EmbeddedServer {
  /**
   * @param {{ nativeDir: string, dataDir: string, port: number, password: string, flags?: string[],
   *   user?: { uid: number, gid: number }, log?: (message: string) => void }} options
   */
  constructor(options) {
    this.options = { flags: [], log: () => {}, ...options };
    this.child = undefined;
    this.stopOnExit = () => this.child?.kill('SIGINT');
  }

  /** The running server's process, if any. */
  get process() {
    return this.child;
  }

  /** Creates the cluster in `dataDir` (which must not hold one), user `postgres` with the password. */
  async initialise() {
    const { dataDir, password, user } = this.options;
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    // initdb reads the password from a file; it lives next to the data directory, for its owner only.
    const passwordFile = path.join(path.dirname(dataDir), `.pwfile-${randomBytes(6).toString('hex')}`);
    writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
    try {
      if (user) {
        chownSync(dataDir, user.uid, user.gid);
        chownSync(passwordFile, user.uid, user.gid);
      }
      await this.run('initdb', [
        `--pgdata=${dataDir}`,
        '--auth=password',
        '--username=postgres',
        `--pwfile=${passwordFile}`,
        '--encoding=UTF8',
        '--no-locale',
      ]);
    } finally {
      rmSync(passwordFile, { force: true });
    }
  }

  /** Starts the server and resolves once it accepts connections. */
  async start() {
    const { dataDir, port, flags, log } = this.options;
    const child = this.spawn('postgres', ['-D', dataDir, '-p', String(port), ...flags]);
    this.child = child;
    process.once('exit', this.stopOnExit); // a crashing caller must not leave the server running
    let output = '';
    try {
      await new Promise((resolve, reject) => {
        child.stderr.on('data', (chunk) => {
          const text = chunk.toString('utf8');
          log(text);
          output = (output + text).slice(-4000);
          if (output.includes(READY)) resolve();
        });
        child.once('error', (error) => reject(this.failure('postgres', error)));
        child.once('exit', (code, signal) => reject(new EmbeddedPostgresError(`postgres exited at startup (${signal ?? `code ${code}`}): ${lastLines(output)}`)));
      });
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** Stops the server (fast shutdown: open sessions are ended) and waits for it to exit. */
  async stop() {
    const child = this.child;
    if (!child) return;
    process.removeListener('exit', this.stopOnExit);
    // Ctrl-C in a terminal reaches the server too; it may be gone already.
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise((resolve) => {
        child.once('exit', resolve);
        if (!child.kill('SIGINT')) resolve();
      });
    }
    this.child = undefined;
  }

  /** Runs one of the binaries to completion. */
  run(program, args) {
    return new Promise((resolve, reject) => {
      const child = this.spawn(program, args);
      let output = '';
      child.stderr.on('data', (chunk) => {
        const text = chunk.toString('utf8');
        this.options.log(text);
        output = (output + text).slice(-4000);
      });
      child.once('error', (error) => reject(this.failure(program, error)));
      child.once('close', (code, signal) => {
        if (code === 0) resolve();
        else reject(new EmbeddedPostgresError(`${program} failed (${signal ?? `code ${code}`}): ${lastLines(output)}`));
      });
    });
  }

  spawn(program, args) {
    const { nativeDir, user } = this.options;
    return spawn(programPath(nativeDir, program), args, {
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
      // Messages in English, whatever the machine's locale: startup is detected by READY.
      env: { ...process.env, LC_MESSAGES: 'C' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  }

  /** A spawn error (EACCES, ENOENT) as one sentence. */
  failure(program, error) {
    const who = this.options.user ? 'the "postgres" user' : 'this process';
    return new EmbeddedPostgresError(`${who} cannot run ${programPath(this.options.nativeDir, program)} (${error.code ?? error.message})`, { cause: error });
  }
}

function lastLines(text) {
  const lines = text.trim().split('\n').filter(Boolean);
  return lines.slice(-3).join(' ').trim() || 'no output';
}
