// Child-side flows shared by every system: the system files only supply "how to send one
// command" and "how to start/stop a worker".
import { CALLERS, INTAKE_BATCH, KEY_FIELD, makePayload, monoMs, runCallers, runQueueWaitMs, sleep } from './common';
import { emit, latencySummary, type ChildSpec, type Commands } from './protocol';
import { queriesSent } from './query-counter';
import { telemetryReport } from './telemetry';

export interface Sender {
  /** Sends one command (with an ordering key, if given); resolves when the system acknowledged it. */
  call(messageId: string, payload: Record<string, unknown>, orderingKey?: string): Promise<unknown>;
  /** Sends a batch in one call (the system's bulk intake), for the 'batch' mode. */
  callMany?(items: Array<{ messageId: string; payload: Record<string, unknown> }>): Promise<unknown>;
  close(): Promise<void>;
}

export interface RunningWorker {
  /** Tell idle workers that work was just enqueued (what a same-process producer would do). */
  nudge(): void;
  /** Graceful stop; may return extra numbers for the result. */
  stop(): Promise<Record<string, unknown> | void>;
}

/** The account a command of a keyed send run names (its ordering key in 'keyed' mode). */
export function accountOf(i: number, accounts: number, prefix = 'acc'): string {
  return `${prefix}-${i % accounts}`;
}

function payloadFor(spec: ChildSpec, i: number, prefix?: string): Record<string, unknown> {
  return spec.orderingKeys ? makePayload(i, { [KEY_FIELD]: accountOf(i, spec.orderingKeys, prefix) }) : makePayload(i);
}

/**
 * Keys and payloads of a send run: plain = distinct keys; dedup = every key twice (first pass, then
 * again); keyed = distinct keys, each command with its account as ordering key.
 */
export function sendPlan(spec: ChildSpec): { keys: string[]; payloads: Array<Record<string, unknown>>; orderingKeys?: string[] } {
  const distinct = spec.mode === 'dedup' ? Math.ceil(spec.count / 2) : spec.count;
  const base = Array.from({ length: distinct }, (_, i) => payloadFor(spec, i));
  const keys: string[] = [];
  const payloads: Array<Record<string, unknown>> = [];
  for (let i = 0; i < spec.count; i++) {
    keys.push(`cmd-${i % distinct}`);
    payloads.push(base[i % distinct]);
  }
  const orderingKeys = spec.mode === 'keyed' ? payloads.map((p) => p[KEY_FIELD] as string) : undefined;
  return { keys, payloads, orderingKeys };
}

/** receive / dedup: warm up, wait for go, time `count` calls from CALLERS concurrent callers. */
export async function runSendRole(spec: ChildSpec, commands: Commands, open: () => Promise<Sender>): Promise<void> {
  const sender = await open();
  const { keys, payloads, orderingKeys } = sendPlan(spec);
  // Keyed warm-up calls use keys of their own: the timed calls find their keys new, as planned.
  const warm = Array.from({ length: spec.warmup }, (_, i) => payloadFor(spec, 1_000_000 + i, 'warm-acc'));
  const warmKey = (i: number) => (spec.mode === 'keyed' ? (warm[i][KEY_FIELD] as string) : undefined);
  // Batches: INTAKE_BATCH commands per call, CALLERS calls at a time.
  const batched = spec.mode === 'batch';
  if (batched && !sender.callMany) throw new Error(`${spec.system} has no batch send`);
  const inBatches = (total: number, item: (i: number) => { messageId: string; payload: Record<string, unknown> }) =>
    runCallers(Math.ceil(total / INTAKE_BATCH), CALLERS, (b) =>
      sender.callMany!(Array.from({ length: Math.min(INTAKE_BATCH, total - b * INTAKE_BATCH) }, (_, j) => item(b * INTAKE_BATCH + j))),
    );
  if (batched) await inBatches(spec.warmup, (i) => ({ messageId: `warm-${i}`, payload: warm[i] }));
  else await runCallers(spec.warmup, CALLERS, (i) => sender.call(`warm-${i}`, warm[i], warmKey(i)));
  emit({ type: 'ready' });
  await commands.expect('go');
  const q0 = queriesSent();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  if (batched) await inBatches(spec.count, (i) => ({ messageId: keys[i], payload: payloads[i] }));
  else await runCallers(spec.count, CALLERS, (i) => sender.call(keys[i], payloads[i], orderingKeys?.[i]));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  // After the timed calls: flushing the telemetry SDK is not measured.
  const telemetry = await telemetryReport();
  emit({ type: 'result', elapsedMs, calls: spec.count, queries: queriesSent() - q0, cpuMs: (cpu.user + cpu.system) / 1000, telemetry });
  await commands.next();
  await sender.close();
}

/** Latencies (ms, send → handler start) recorded by latency handlers in this process. */
export const recordedLatencies: number[] = [];

export function recordLatency(payload: unknown): void {
  const { sentAt, warmup } = payload as { sentAt?: number; warmup?: boolean };
  if (typeof sentAt === 'number' && !warmup) recordedLatencies.push(monoMs() - sentAt);
}

/** work: start the worker, nudge it on every go, report after stop. */
export async function runWorkRole(spec: ChildSpec, commands: Commands, start: () => Promise<RunningWorker>): Promise<void> {
  const worker = await start();
  emit({ type: 'ready' });
  // Statements sent, CPU used and time spent waiting for a CPU so far, at every go (work was
  // enqueued) and mark (the orchestrator saw it done).
  const queryMarks: number[] = [];
  const cpuMarksMs: number[] = [];
  const waitMarksMs: number[] = [];
  const mark = () => {
    const cpu = process.cpuUsage();
    queryMarks.push(queriesSent());
    cpuMarksMs.push((cpu.user + cpu.system) / 1000);
    waitMarksMs.push(runQueueWaitMs());
  };
  commands.on('go', () => {
    mark();
    worker.nudge();
  });
  commands.on('mark', mark);
  await commands.next(); // stop
  const extra = (await worker.stop()) ?? {};
  const latency = spec.handler === 'latency' ? latencySummary(recordedLatencies) : undefined;
  emit({ type: 'result', ...extra, latency, queryMarks, cpuMarksMs, waitMarksMs, rssMiB: process.memoryUsage().rss / 1048576 });
}

/** latency-send: on go, send warm-up + count commands at a steady rate, each stamped just before the call. */
export async function runLatencySendRole(spec: ChildSpec, commands: Commands, open: () => Promise<Sender>): Promise<void> {
  const sender = await open();
  const total = spec.warmup + spec.count;
  const payloads = Array.from({ length: total }, (_, i) => makePayload(i, { warmup: i < spec.warmup, sentAt: 0 }));
  emit({ type: 'ready' });
  await commands.expect('go');
  const intervalMs = 1000 / (spec.rate ?? 200);
  const pending: Array<Promise<unknown>> = [];
  let errors = 0;
  let worstLateMs = 0;
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const target = t0 + i * intervalMs;
    let wait = target - performance.now();
    while (wait > 0.05) {
      await sleep(wait);
      wait = target - performance.now();
    }
    worstLateMs = Math.max(worstLateMs, -wait);
    const payload = payloads[i];
    payload.sentAt = monoMs();
    pending.push(sender.call(`lat-${i}`, payload).catch(() => errors++));
  }
  await Promise.all(pending);
  emit({ type: 'result', sent: total, errors, elapsedMs: performance.now() - t0, worstLateMs });
  await commands.next();
  await sender.close();
}
