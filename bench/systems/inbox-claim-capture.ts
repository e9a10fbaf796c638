// The claim statement as the nestjs-inbox worker sends it, seen from outside the library: its
// prepared statement is named `nestjs_inbox_claim_<hash>` (visible in pg_prepared_statements), and
// the query counter sees every statement this process sends. The scale workload's claim probe then
// runs that very text with the processor's own binding, without importing library internals.
import type { CapturedStatement, CapturedValue } from '../protocol';
import { observeQueries } from '../query-counter';

const CLAIM_NAME = /^nestjs_inbox_claim_[0-9a-f]+$/;

/** Starts watching; the returned function gives the last claim statement sent so far. */
export function captureClaimStatement(): () => CapturedStatement | undefined {
  let last: CapturedStatement | undefined;
  let opening: string | undefined;
  observeQueries(([config]) => {
    // The worker opens the claim's transaction with a simple query that sets its planner settings.
    if (typeof config === 'string' && /^BEGIN\b/i.test(config)) opening = config;
    const { name, text, values } = (config ?? {}) as { name?: unknown; text?: unknown; values?: unknown[] };
    if (typeof name !== 'string' || !CLAIM_NAME.test(name) || typeof text !== 'string') return;
    const sentAt = Date.now();
    last = { name, text, opening, values: (values ?? []).map((v) => (v instanceof Date ? { msFromSend: v.getTime() - sentAt } : (v as CapturedValue))) };
  });
  return () => last;
}
