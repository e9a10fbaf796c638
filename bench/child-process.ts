// Orchestrator side of a benchmark child process (see protocol.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { peakRssMiB } from './common';
import { MARKER, type ChildMessage, type ChildSpec } from './protocol';

const REGISTER = path.join(__dirname, '..', 'scripts', 'register-ts.cjs');
const ENTRY = path.join(__dirname, 'child.ts');
const OUTPUT_TAIL = 8_000;

export interface SpawnOptions {
  /** Write a V8 CPU profile of the child into this directory. */
  cpuProfileDir?: string;
}

export class BenchChild {
  private readonly proc: ChildProcess;
  private readonly messages: ChildMessage[] = [];
  private readonly waiters: Array<() => void> = [];
  private output = '';
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exited: Promise<void>;
  readonly label: string;

  constructor(readonly spec: ChildSpec, options: SpawnOptions = {}) {
    this.label = `${spec.system}/${spec.role}${spec.handler ? `/${spec.handler}` : ''}${spec.telemetry ? ` (telemetry ${spec.telemetry})` : ''}`;
    const nodeArgs = ['-r', REGISTER];
    if (options.cpuProfileDir) {
      nodeArgs.unshift('--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`, `--cpu-prof-name=${spec.system}-${spec.role}${spec.telemetry ? `-telemetry-${spec.telemetry}` : ''}-${Date.now()}.cpuprofile`);
    }
    this.proc = spawn(process.execPath, [...nodeArgs, ENTRY, JSON.stringify(spec)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let pending = '';
    this.proc.stdout!.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (line.startsWith(MARKER)) this.push(JSON.parse(line.slice(MARKER.length)) as ChildMessage);
        else this.remember(`${line}\n`);
      }
    });
    this.proc.stderr!.on('data', (chunk: Buffer) => this.remember(chunk.toString()));
    this.proc.stdin!.on('error', () => undefined); // child gone; exit handling reports it
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        this.wakeAll();
        resolve();
      });
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Peak RSS of the child so far (kernel high-water mark), MiB. */
  peakRssMiB(): number | undefined {
    return peakRssMiB(this.pid);
  }

  send(command: string): void {
    if (!this.exitInfo) this.proc.stdin!.write(`${command}\n`);
  }

  /** Waits for the next message of `type`; an 'error' message or an exit fails it. */
  async waitFor(type: ChildMessage['type'], timeoutMs = 120_000): Promise<ChildMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.messages.findIndex((m) => m.type === type || m.type === 'error');
      if (index >= 0) {
        const [message] = this.messages.splice(index, 1);
        if (message.type === 'error') throw new Error(`${this.label} failed: ${String(message.message)}\n${this.output}`);
        return message;
      }
      if (this.exitInfo) {
        throw new Error(`${this.label} exited (${this.exitInfo.code ?? this.exitInfo.signal}) before "${type}":\n${this.output}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label}: no "${type}" within ${timeoutMs} ms:\n${this.output}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Asks the child to stop and returns its result message. */
  async stop(timeoutMs = 60_000): Promise<ChildMessage> {
    this.send('stop');
    const result = await this.waitFor('result', timeoutMs);
    await this.exit(timeoutMs);
    return result;
  }

  /** Waits for the process to end; SIGKILL after the timeout. */
  async exit(timeoutMs = 30_000): Promise<void> {
    if (this.exitInfo) return;
    this.proc.stdin!.end();
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.proc.kill('SIGKILL');
        resolve();
      }, timeoutMs);
    });
    await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    await this.exited;
  }

  /** Last resort on errors. */
  kill(): void {
    if (!this.exitInfo) this.proc.kill('SIGKILL');
  }

  private push(message: ChildMessage): void {
    this.messages.push(message);
    this.wakeAll();
  }

  private wakeAll(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }

  private remember(text: string): void {
    this.output = (this.output + text).slice(-OUTPUT_TAIL);
  }
}
