import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

const REGISTER = path.join(__dirname, '..', '..', 'scripts', 'register-ts.cjs');

/** A Nest worker in its own Node process, speaking through marker lines on stdout. */
export class ChildWorker {
  private output = '';
  private exited = false;
  readonly process: ChildProcess;

  /** `preload`: modules required before the script (e.g. a clock shift); `env`: added to the environment. */
  constructor(script: string, args: string[], options: { preload?: string[]; env?: Record<string, string> } = {}) {
    const preload = (options.preload ?? []).flatMap((module) => ['-r', module]);
    this.process = spawn(process.execPath, [...preload, '-r', REGISTER, script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
    });
    this.process.stdout!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.process.stderr!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.process.on('exit', () => (this.exited = true));
  }

  /** Resolves with the first stdout line starting with `marker`, or fails at the deadline. */
  async waitForLine(marker: string, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.output.split('\n').find((l) => l.startsWith(marker));
      if (line) return line;
      if (this.exited) throw new Error(`worker exited before printing ${marker}:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`worker did not print ${marker} within ${timeoutMs} ms:\n${this.output}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Everything the worker printed so far. */
  get log(): string {
    return this.output;
  }

  /** SIGKILL: no shutdown hook runs, the connection just drops. */
  async kill(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise((resolve) => this.process.once('exit', resolve));
    this.process.kill('SIGKILL');
    await exited;
  }
}
