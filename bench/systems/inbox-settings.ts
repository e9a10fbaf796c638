// nestjs-inbox's benchmark worker settings, apart from the adapter so that other systems' children
// can size a like-for-like host without loading the library.
import { envInt } from '../common';

/** Worker settings (env overrides exist for tuning runs: BENCH_INBOX_CONCURRENCY, _BATCH, _POLL_MS, _POOL). */
export const INBOX_WORKER = {
  concurrency: envInt('BENCH_INBOX_CONCURRENCY', 8),
  batchSize: envInt('BENCH_INBOX_BATCH', 100),
  pollIntervalMs: envInt('BENCH_INBOX_POLL_MS', 100),
};
/** Connections: one per handler in flight, plus the claim/sweep and a spare. */
export const INBOX_WORKER_POOL = envInt('BENCH_INBOX_POOL', INBOX_WORKER.concurrency + 4);
