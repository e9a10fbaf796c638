// The line protocol between the orchestrator and its child processes: the child prints
// `@bench {json}` lines on stdout, the orchestrator writes one command word per line on stdin.
import { createInterface } from 'node:readline';
import type { SystemName } from './common';
import type { TelemetryMode } from './telemetry';

export const MARKER = '@bench ';

export type Role = 'send' | 'work' | 'latency-send';
/**
 * What a worker's handler does: append an event row, throw, record its latency, or nothing; `keyed`
 * appends an event row under an ordering key derived from the payload, `keyed-slow` waits 2 ms
 * (an I/O-bound handler: it holds no CPU) under one (nestjs-inbox only).
 */
export type Handler = 'event' | 'fail' | 'latency' | 'noop' | KeyedHandler;
export type KeyedHandler = 'keyed' | 'keyed-slow';

/** What a child is asked to do (passed as JSON in argv). */
export interface ChildSpec {
  system: SystemName;
  role: Role;
  url: string;
  /** send: calls to time; latency-send: commands after the warm-up. */
  count: number;
  warmup: number;
  /**
   * send: 'plain' (distinct keys), 'dedup' (each key twice), 'keyed' (distinct keys, each with an
   * ordering key) or 'batch' (distinct keys, INTAKE_BATCH commands per call).
   */
  mode?: 'plain' | 'dedup' | 'keyed' | 'batch';
  /** work: what the handler does. */
  handler?: Handler;
  /** raw-pg work: one transaction per batch or per command; graphile-worker work: inside a Nest + TypeORM app. */
  variant?: 'batch' | 'per-command' | 'nest-host';
  /** nestjs-inbox work: report the last claim statement the worker sent (text and binding), for the claim probe. */
  captureClaim?: boolean;
  /** send: payloads name one of this many accounts (KEY_FIELD); in 'keyed' mode it is also the ordering key. */
  orderingKeys?: number;
  /** nestjs-inbox work: handlers in flight (else the benchmark's default). */
  concurrency?: number;
  /** nestjs-inbox work: entries per claim (else the benchmark's default). */
  batchSize?: number;
  /** latency-send: commands per second. */
  rate?: number;
  /** nestjs-inbox (telemetry workload): OpenTelemetry API absent, installed without an SDK, or with the SDK registered (bench/telemetry.ts). */
  telemetry?: TelemetryMode;
}

/**
 * A parameter of a captured statement: timestamps are kept relative to the moment the statement
 * was sent ("now", "now + lease"), so that it can be bound afresh later; anything else verbatim.
 */
export type CapturedValue = { msFromSend: number } | string | number | boolean | null | string[];

/** A statement a worker sent, as a work child reports it (see systems/inbox-claim-capture.ts). */
export interface CapturedStatement {
  name: string;
  text: string;
  values: CapturedValue[];
  /** The statement that opened its transaction (with the settings the worker gives the claim), if any. */
  opening?: string;
}

export interface ChildMessage {
  type: 'ready' | 'result' | 'error';
  [key: string]: unknown;
}

export function emit(message: ChildMessage): void {
  process.stdout.write(`${MARKER}${JSON.stringify(message)}\n`);
}

/** Commands from the orchestrator ('go', 'stop'), one per line on stdin. */
export class Commands {
  private readonly queue: string[] = [];
  private waiting: ((command: string) => void) | undefined;
  private readonly listeners = new Map<string, () => void>();

  constructor() {
    const lines = createInterface({ input: process.stdin });
    lines.on('line', (line) => {
      const command = line.trim();
      if (!command) return;
      const listener = this.listeners.get(command);
      if (listener) return listener();
      if (this.waiting) {
        const resolve = this.waiting;
        this.waiting = undefined;
        resolve(command);
      } else {
        this.queue.push(command);
      }
    });
    // Orchestrator gone: nothing will tell us to stop.
    lines.on('close', () => {
      if (this.waiting) this.waiting('stop');
      else this.queue.push('stop');
    });
  }

  /** Calls `fn` for every `command` line instead of queueing it. */
  on(command: string, fn: () => void): void {
    this.listeners.set(command, fn);
  }

  next(): Promise<string> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => (this.waiting = resolve));
  }

  async expect(command: string): Promise<void> {
    const got = await this.next();
    if (got !== command && got !== 'stop') throw new Error(`expected "${command}", got "${got}"`);
    if (got === 'stop' && command !== 'stop') throw new Error(`stopped while waiting for "${command}"`);
  }
}

/** p-th percentile (0..100) of a sorted array, nearest-rank. */
export function percentileOfSorted(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function latencySummary(values: number[]): { n: number; p50: number; p99: number; max: number; mean: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentileOfSorted(sorted, 50),
    p99: percentileOfSorted(sorted, 99),
    max: sorted[sorted.length - 1] ?? NaN,
    mean: sorted.reduce((a, b) => a + b, 0) / (sorted.length || 1),
  };
}
