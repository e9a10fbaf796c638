// The chaos workers as child processes: start, SIGKILL, upgrade, restart, and tell apart why each
// one ended.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, closeSync, openSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { POISON_MARKER, type ChaosWorkerConfig, type Release } from './chaos-commands';

const ROOT = path.resolve(__dirname, '..');
const REGISTER = path.join(ROOT, 'scripts', 'register-ts.cjs');
const SKEW_CLOCK = path.join(ROOT, 'test', 'fixtures', 'skew-clock.cjs');
const WORKER_SCRIPT = path.join(__dirname, 'chaos-worker.ts');

/** What sets a slot's processes apart from the others'; every restart and upgrade keeps it. */
export interface SlotProfile {
  /** The host clock runs this far ahead (negative: behind), through test/fixtures/skew-clock.cjs. */
  clockSkewMs?: number;
  /** A connection pool of this size instead of the default. */
  poolMax?: number;
}

/** `clock +30 s, pool of 2`, or `plain`. */
export function describeProfile({ clockSkewMs, poolMax }: SlotProfile): string {
  const traits: string[] = [];
  if (clockSkewMs !== undefined) traits.push(`clock ${clockSkewMs >= 0 ? '+' : ''}${clockSkewMs / 1000} s`);
  if (poolMax !== undefined) traits.push(`pool of ${poolMax}`);
  return traits.join(', ') || 'plain';
}

interface Slot {
  name: string;
  logFile: string;
  profile: SlotProfile;
  /** The release its next process runs; an upgrade changes it, restarts keep it. */
  release: Release;
  child?: ChildProcess;
  ready: boolean;
  /** Why the harness is ending the current process, set before the signal so the exit is not taken for a crash. */
  stop?: 'kill' | 'upgrade' | 'shutdown';
  /** Log size when the current process started: poison markers after it belong to that process. */
  logOffset: number;
  exited?: Promise<void>;
  lastExit?: string;
}

export interface WorkerEvent {
  at: number;
  worker: string;
  pid: number;
  kind: 'harness-kill' | 'poison-crash' | 'upgrade' | 'unexpected-exit';
  detail: string;
}

/** One worker process, by its workerId (`<slot>-<pid>`). */
export interface WorkerProcess {
  worker: string;
  pid: number;
  release: Release;
  /** Its host clock minus the orchestrator's, measured when it reported ready. */
  clockOffsetMs?: number;
  /** How it ended, unless it ran until the final stop. */
  end?: WorkerEvent;
}

/** One slot's move to another release. */
export interface Upgrade {
  worker: string;
  release: Release;
  /** When the old process was sent SIGTERM. */
  at: number;
  oldPid: number;
  /** How long the old process took to exit. */
  exitMs: number;
  /** How the old process ended: 'upgrade' when it drained and exited on the signal. */
  oldEnd: WorkerEvent['kind'] | 'timeout';
  newPid?: number;
}

export class WorkerPool {
  private readonly slots: Slot[];
  readonly events: WorkerEvent[] = [];
  readonly processes = new Map<string, WorkerProcess>();
  readonly upgrades: Upgrade[] = [];
  /** While true, workers killed by the harness or by poison, or upgraded, are started again. */
  restarting = true;

  constructor(
    private readonly databaseUrl: string,
    profiles: SlotProfile[],
    release: Release,
    logDir: string,
    private readonly onEvent: (event: WorkerEvent) => void = () => undefined,
  ) {
    this.slots = profiles.map((profile, i) => ({
      name: `worker-${i + 1}`,
      logFile: path.join(logDir, `worker-${i + 1}.log`),
      profile,
      release,
      ready: false,
      logOffset: 0,
    }));
  }

  get logFiles(): string[] {
    return this.slots.map((slot) => slot.logFile);
  }

  get size(): number {
    return this.slots.length;
  }

  /** Each slot's name, profile and current release. */
  get fleet(): Array<{ worker: string; profile: SlotProfile; release: Release; logFile: string }> {
    return this.slots.map((slot) => ({ worker: slot.name, profile: slot.profile, release: slot.release, logFile: slot.logFile }));
  }

  /**
   * What ended a worker process (by workerId), to explain an attempt it held, with how long after
   * the attempt's start (`since`, when known) that came.
   */
  fateOf(workerId: string | null, since?: Date | null): string {
    const record = workerId ? this.processes.get(workerId) : undefined;
    if (!record) return 'not a process of this run';
    if (!record.end) return 'ran until the final stop';
    const after = since ? `, ${((record.end.at - since.getTime()) / 1000).toFixed(1)} s after the attempt started` : '';
    return `${record.end.detail.replace(/;.*/, '')}${after}`;
  }

  /** Whether a kill, crash or upgrade ended the process within `ms` after `since`. */
  endedWithin(workerId: string | null, since: Date, ms: number): boolean {
    const end = workerId ? this.processes.get(workerId)?.end : undefined;
    return end !== undefined && end.at - since.getTime() <= ms;
  }

  /** Whether the harness SIGKILLed the process at most `ms` after `since` (and not before it). */
  killedWithin(workerId: string | null, since: Date, ms: number): boolean {
    const end = workerId ? this.processes.get(workerId)?.end : undefined;
    return end?.kind === 'harness-kill' && end.at >= since.getTime() && end.at - since.getTime() <= ms;
  }

  /** Pids of the workers that are up and processing now, by name. */
  readyPids(): Map<string, number> {
    return new Map(this.slots.filter((slot) => slot.ready).map((slot) => [slot.name, slot.child!.pid!]));
  }

  readyCount(): number {
    return this.slots.filter((slot) => slot.ready).length;
  }

  async startAll(timeoutMs: number): Promise<void> {
    for (const slot of this.slots) this.spawn(slot);
    await this.waitUntil(() => this.readyCount() === this.slots.length, timeoutMs, 'all workers ready');
  }

  /**
   * SIGKILLs one random ready worker, other than the slots in `spare`; it is started again once it
   * is gone. Returns its name.
   */
  async killRandom(spare: ReadonlySet<string> = new Set()): Promise<string | undefined> {
    const ready = this.slots.filter((slot) => slot.ready && slot.child && !spare.has(slot.name));
    const slot = ready[Math.floor(Math.random() * ready.length)];
    if (!slot) return undefined;
    slot.stop = 'kill';
    slot.ready = false; // not to be chosen for an upgrade while it dies
    slot.child!.kill('SIGKILL');
    await slot.exited;
    return slot.name;
  }

  /**
   * A rolling-deploy step: waits until the slot's process is up (it may be booting after a crash),
   * SIGTERMs it so that it drains (Nest's shutdown hooks), and starts the new release in its place
   * once it has exited. One that does not exit within `timeoutMs` is SIGKILLed.
   */
  async upgrade(name: string, release: Release, timeoutMs: number): Promise<Upgrade> {
    const slot = this.slots.find((s) => s.name === name)!;
    await this.waitUntil(() => slot.ready, timeoutMs, `${name} up before its upgrade`);
    const old = slot.child!;
    const record: Upgrade = { worker: name, release, at: Date.now(), oldPid: old.pid!, exitMs: 0, oldEnd: 'timeout' };
    this.upgrades.push(record);
    slot.release = release;
    slot.stop = 'upgrade';
    slot.ready = false;
    old.kill('SIGTERM');
    const drained = await this.exitsWithin(slot, timeoutMs);
    if (!drained) {
      slot.stop = 'kill';
      old.kill('SIGKILL');
      await slot.exited;
    }
    record.exitMs = Date.now() - record.at;
    const end = this.processes.get(`${name}-${old.pid}`)!.end!;
    if (drained) record.oldEnd = end.kind;
    if (end.kind === 'unexpected-exit') return record; // not replaced; reported as a violation
    await this.waitUntil(() => slot.ready && slot.child !== old, timeoutMs, `${name} up after its upgrade`);
    record.newPid = slot.child!.pid;
    return record;
  }

  /**
   * SIGTERM to all: Nest's shutdown hooks close the app and re-raise the signal. Returns the
   * workers that did not exit in time or exited otherwise than by that signal.
   */
  async stopAll(timeoutMs: number): Promise<string[]> {
    this.restarting = false;
    const running = this.slots.filter((slot) => slot.child && slot.child.exitCode === null && slot.child.signalCode === null);
    for (const slot of running) {
      slot.stop = 'shutdown';
      slot.child!.kill('SIGTERM');
    }
    const problems: string[] = [];
    await Promise.all(
      running.map(async (slot) => {
        if (!(await this.exitsWithin(slot, timeoutMs))) {
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

  private async exitsWithin(slot: Slot, timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const exited = await Promise.race([
      slot.exited!.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    return exited;
  }

  private spawn(slot: Slot): void {
    appendFileSync(slot.logFile, `\n===== ${slot.name} starting at ${new Date().toISOString()} (${slot.release} release) =====\n`);
    slot.logOffset = statSync(slot.logFile).size;
    const log = openSync(slot.logFile, 'a');
    const { clockSkewMs, poolMax } = slot.profile;
    const config: ChaosWorkerConfig = { release: slot.release, poolMax };
    const skew = clockSkewMs === undefined ? [] : ['-r', SKEW_CLOCK];
    const env = clockSkewMs === undefined ? {} : { INBOX_TEST_CLOCK_SKEW_MS: String(clockSkewMs) };
    const child = spawn(process.execPath, [...skew, '-r', REGISTER, WORKER_SCRIPT, this.databaseUrl, slot.name, JSON.stringify(config)], {
      cwd: ROOT,
      stdio: ['ignore', log, log, 'ipc'],
      env: { ...process.env, ...env, NO_COLOR: '1' }, // plain log files
    });
    closeSync(log); // the child holds its own copy
    const record: WorkerProcess = { worker: slot.name, pid: child.pid!, release: slot.release };
    this.processes.set(`${slot.name}-${child.pid}`, record);
    slot.child = child;
    slot.ready = false;
    slot.stop = undefined;
    child.on('message', (message: { clock?: number }) => {
      if (typeof message.clock === 'number') record.clockOffsetMs = message.clock - Date.now();
      slot.ready = true;
    });
    slot.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(this.onExit(slot, child, code, signal))));
  }

  private onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    slot.ready = false;
    slot.lastExit = signal ? `signal ${signal}` : `code ${code}`;
    if (slot.stop === 'shutdown') return;
    const base = { at: Date.now(), worker: slot.name, pid: child.pid! };
    let event: WorkerEvent;
    if (slot.stop === 'kill') {
      event = { ...base, kind: 'harness-kill', detail: 'SIGKILL by the harness' };
    } else if (signal === 'SIGKILL' && this.poisonSince(slot)) {
      event = { ...base, kind: 'poison-crash', detail: `SIGKILL by ${this.poisonSince(slot)}` };
    } else if (slot.stop === 'upgrade' && (signal === 'SIGTERM' || code === 0)) {
      event = { ...base, kind: 'upgrade', detail: `drained on SIGTERM; the ${slot.release} release takes its place` };
    } else {
      event = { ...base, kind: 'unexpected-exit', detail: `exited on its own (${slot.lastExit}); see ${slot.logFile}` };
    }
    this.events.push(event);
    this.processes.get(`${slot.name}-${child.pid}`)!.end = event;
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
