// The claim probe (scale and keys workloads): with N Pending entries waiting (plus the history, or keys), run
// the claim statement the nestjs-inbox worker itself sent during the drain (captured in the worker
// child, see systems/inbox-claim-capture.ts), bound the way the worker bound it, each time in a
// transaction opened as the worker opened it and rolled back; then EXPLAIN (ANALYZE, BUFFERS) it once.
import { appendFileSync } from 'node:fs';
import type { Client } from 'pg';
import { sleep } from './common';
import type { CapturedStatement, CapturedValue } from './protocol';
import { INBOX_WORKER } from './systems/inbox-settings';
import type { Entrant, RunContext } from './workloads';

const WARM_UP_RUNS = 3;

/** Where the probe's figures go: the workload's rows, and what the backlog was (for the plans file). */
export interface ProbeTarget {
  workload: string;
  backlog: string;
}

/** The captured values bound for a run now: timestamps keep their distance from "now". */
function bindNow(values: CapturedValue[]): unknown[] {
  const now = Date.now();
  return values.map((v) => (isTime(v) ? new Date(now + v.msFromSend) : v));
}

function isTime(value: CapturedValue): value is { msFromSend: number } {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export async function claimProbe(
  ctx: RunContext,
  entrant: Entrant,
  client: Client,
  enqueuePending: () => Promise<void>,
  claim: CapturedStatement | undefined,
  target: ProbeTarget = { workload: 'scale', backlog: `${ctx.sizes.drain} Pending entries` },
): Promise<void> {
  if (!claim) {
    throw new Error('the worker sent no statement named nestjs_inbox_claim_<hash> (prepared statements off, or renamed?): no claim to probe');
  }
  await enqueuePending();
  // A "now" bound a little in the past (the worker reads its clock before sending) must still see
  // the entries just stored as due.
  const earliest = Math.min(0, ...claim.values.map((v) => (isTime(v) ? v.msFromSend : 0)));
  await sleep(5 - earliest);
  const timings: number[] = [];
  for (let i = 0; i < ctx.sizes.claimSamples + WARM_UP_RUNS; i++) {
    await client.query(claim.opening ?? 'BEGIN');
    const t0 = performance.now();
    const { rowCount } = await client.query(claim.text, bindNow(claim.values));
    const dt = performance.now() - t0;
    await client.query('ROLLBACK');
    if (rowCount !== INBOX_WORKER.batchSize) throw new Error(`claim probe took ${rowCount} rows, expected ${INBOX_WORKER.batchSize}`);
    if (i >= WARM_UP_RUNS) timings.push(dt);
  }
  await client.query(claim.opening ?? 'BEGIN');
  const { rows } = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${claim.text}`, bindNow(claim.values));
  await client.query('ROLLBACK');
  const plan = rows.map((r) => r['QUERY PLAN']);
  const sorted = [...timings].sort((a, b) => a - b);
  const med = sorted[sorted.length >> 1];
  const execMs = Number(/Execution Time: ([\d.]+) ms/.exec(plan.join('\n'))?.[1] ?? NaN);
  // Key line: the scan that finds due entries, with its own Buffers line.
  const scanAt = plan.findIndex((line) => /Scan.* on inbox_entries/.test(line));
  const scan = scanAt >= 0 ? plan[scanAt].trim().replace(/^->\s*/, '') : '?';
  let scanBuffers = '';
  for (let i = scanAt + 1; scanAt >= 0 && i < plan.length && !plan[i].includes('->'); i++) {
    if (plan[i].trim().startsWith('Buffers:')) scanBuffers = plan[i].trim();
  }
  ctx.results.add({ workload: target.workload, system: entrant.label, metric: 'claim latency (client)', unit: 'ms', digits: 3 }, ctx.rep, med);
  ctx.results.add({ workload: target.workload, system: entrant.label, metric: 'claim EXPLAIN exec', unit: 'ms', digits: 3 }, ctx.rep, execMs);
  ctx.results.notes.push(
    `rep ${ctx.rep + 1} ${entrant.label}: ${scan.replace(/\s+/g, ' ')}${scanBuffers ? `; ${scanBuffers}` : ''}; Execution Time ${execMs.toFixed(3)} ms`,
  );
  appendFileSync(
    ctx.plansFile,
    `-- ${entrant.label}, repetition ${ctx.rep + 1}, ${new Date().toISOString()}\n` +
      `-- ${claim.name} (as the worker sent it, opened with ${JSON.stringify(claim.opening ?? 'BEGIN')}) claiming ${INBOX_WORKER.batchSize} with ${target.backlog}; ` +
      `client-side median ${med.toFixed(3)} ms over ${timings.length}\n` +
      `${plan.join('\n')}\n\n`,
  );
  ctx.log(`  ${target.workload} claim ${entrant.label}: median ${med.toFixed(3)} ms, EXPLAIN ${execMs.toFixed(3)} ms — ${scan.replace(/\s+/g, ' ')}`);
}
