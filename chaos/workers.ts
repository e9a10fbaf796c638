// The chaos workers as child processes: start, SIGKILL, restart, and tell apart why each one died.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, closeSync, openSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { POISON_MARKER } from './chaos-commands';

const ROOT = path.resolve(__dirname, '..');
const REGISTER = path.join(ROOT, 'scripts', 'register-ts.cjs');
const WORKER_SCRIPT = path.join(__dirname, 'chaos-worker.ts');

interface Slot {
  name: string;
  logFile: string;
  child?: ChildProcess;
  ready: boolean;
  /** Set just before the harness sends SIGKILL, so the exit is not mistaken for a crash. */
  killRequested: boolean;
  /** Log size when the current process started: poison markers after it belong to that process. */
  logOffset: number;
  exited?: Promise<void>;
  lastExit?: string;
}

export interface WorkerEvent {
  at: number;
  worker: string;
  pid: number;
  kind: 'harness-kill' | 'poison-crash' | 'unexpected-exit';
  detail: string;
}

export class WorkerPool {
  private readonly slots: Slot[];
  readonly events: WorkerEvent[] = [];
  /** Processes started in total, first starts included. */
  starts = 0;
  /** While true, workers killed by the harness or by poison are started again. */
  restarting = true;

  constructor(
    private readonly databaseUrl: string,
    count: number,
    logDir: string,
    private readonly onEvent: (event: WorkerEvent) => void = () => undefined,
  ) {
    this.slots = Array.from({ length: count }, (_, i) => ({
      name: `worker-${i + 1}`,
      logFile: path.join(logDir, `worker-${i + 1}.log`),
      ready: false,
      killRequested: false,
      logOffset: 0,
    }));
  }

  get logFiles(): string[] {
    return this.slots.map((slot) => slot.logFile);
  }

  /** Pids of the workers that are up and processing now, by name. */
  readyPids(): Map<string, number> {
    return new Map(this.slots.filter((slot) => slot.ready).map((slot) => [slot.name, slot.child!.pid!]));
  }

  get size(): number {
    return this.slots.length;
  }

  readyCount(): number {
    return this.slots.filter((slot) => slot.ready).length;
  }

  async startAll(timeoutMs: number): Promise<void> {
    for (const slot of this.slots) this.spawn(slot);
    await this.waitUntil(() => this.readyCount() === this.slots.length, timeoutMs, 'all workers ready');
  }

  /** SIGKILLs one random ready worker; it is started again once it is gone. Returns its name. */
  async killRandom(): Promise<string | undefined> {
    const ready = this.slots.filter((slot) => slot.ready && slot.child);
    const slot = ready[Math.floor(Math.random() * ready.length)];
    if (!slot) return undefined;
    slot.killRequested = true;
    slot.child!.kill('SIGKILL');
    await slot.exited;
    return slot.name;
  }

  /**
   * SIGTERM to all: Nest's shutdown hooks close the app and re-raise the signal. Returns the
   * workers that did not exit in time or exited otherwise than by that signal.
   */
  async stopAll(timeoutMs: number): Promise<string[]> {
    this.restarting = false;
    const running = this.slots.filter((slot) => slot.child && slot.child.exitCode === null && slot.child.signalCode === null);
    for (const slot of running) {
      slot.killRequested = true; // a clean stop, not a crash
      slot.child!.kill('SIGTERM');
    }
    const problems: string[] = [];
    await Promise.all(
      running.map(async (slot) => {
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          slot.exited!.then(() => false),
          new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
        ]);
        clearTimeout(timer);
        if (timedOut) {
          problems.push(`${slot.name} did not stop within ${timeoutMs} ms of SIGTERM`);
          slot.child!.kill('SIGKILL');
          await slot.exited;
        } else if (slot.lastExit !== 'signal SIGTERM' && slot.lastExit !== 'code 0') {
          problems.push(`${slot.name} stopped with ${slot.lastExit} after SIGTERM; see ${slot.logFile}`);
        }
      }),
    );
    return problems;
  }

  private spawn(slot: Slot): void {
    appendFileSync(slot.logFile, `\n===== ${slot.name} starting at ${new Date().toISOString()} =====\n`);
    slot.logOffset = statSync(slot.logFile).size;
    const log = openSync(slot.logFile, 'a');
    const child = spawn(process.execPath, ['-r', REGISTER, WORKER_SCRIPT, this.databaseUrl, slot.name], {
      cwd: ROOT,
      stdio: ['ignore', log, log, 'ipc'],
      env: { ...process.env, NO_COLOR: '1' }, // plain log files
    });
    closeSync(log); // the child holds its own copy
    this.starts++;
    slot.child = child;
    slot.ready = false;
    slot.killRequested = false;
    child.on('message', () => (slot.ready = true));
    slot.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(this.onExit(slot, child, code, signal))));
  }

  private onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    slot.ready = false;
    slot.lastExit = signal ? `signal ${signal}` : `code ${code}`;
    if (!this.restarting && slot.killRequested) return;
    const base = { at: Date.now(), worker: slot.name, pid: child.pid! };
    let event: WorkerEvent;
    if (slot.killRequested) {
      event = { ...base, kind: 'harness-kill', detail: 'SIGKILL by the harness' };
    } else if (signal === 'SIGKILL' && this.poisonSince(slot)) {
      event = { ...base, kind: 'poison-crash', detail: `SIGKILL by ${this.poisonSince(slot)}` };
    } else {
      event = { ...base, kind: 'unexpected-exit', detail: `exited on its own (${slot.lastExit}); see ${slot.logFile}` };
    }
    this.events.push(event);
    this.onEvent(event);
    // A worker that died on its own is not restarted: that would hide the failure.
    if (this.restarting && event.kind !== 'unexpected-exit') this.spawn(slot);
  }

  /** The poison message this process announced before killing itself, if any. */
  private poisonSince(slot: Slot): string | undefined {
    const output = readFileSync(slot.logFile).subarray(slot.logOffset).toString();
    const line = output.split('\n').find((l) => l.startsWith(POISON_MARKER));
    return line?.slice(POISON_MARKER.length + 1);
  }

  async waitUntil(condition: () => boolean, timeoutMs: number, what = 'workers'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; logs: ${this.logFiles.join(', ')}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
