// The CPU the library's own telemetry calls take per receive and per completed attempt, with the
// OpenTelemetry SDK registered as in the benchmark's telemetry workload (bench/telemetry.ts), and
// nothing else running: no database, no handler. Attempts run as a worker's batches of 100 do. It
// isolates the library's share from the SDK's context manager and from the work it instruments.
//   node -r ./scripts/register-ts.cjs bench/telemetry-calls.ts      (npm run bench:telemetry-calls)
import { median } from './stats';
import { setUpTelemetry } from './telemetry';

const CALLS = 100_000;
const ROUNDS = 7;
/** Attempts per batch, the benchmark's batch size. */
const BATCH = 100;

setUpTelemetry('sdk');
// Loaded after the SDK is registered, as the benchmark's children load the library.
/* eslint-disable @typescript-eslint/no-require-imports */
const { resolveInboxOptions } = require('../lib/inbox-options') as typeof import('../lib/inbox-options');
const { InboxTracing } = require('../lib/telemetry/inbox-tracing') as typeof import('../lib/telemetry/inbox-tracing');
const { InboxMetrics } = require('../lib/telemetry/inbox-metrics') as typeof import('../lib/telemetry/inbox-metrics');
/* eslint-enable @typescript-eslint/no-require-imports */
import type { InboxRow } from '../lib/store/schema';
import type { InboxSnapshots } from '../lib/telemetry/inbox-snapshot';

const TRACE_PARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

async function main(): Promise<void> {
  const options = resolveInboxOptions({});
  const tracing = new InboxTracing(options);
  // The gauges read no database here: the metric reader's collections find no snapshot.
  const metrics = new InboxMetrics(options, { read: () => Promise.resolve(undefined) } as unknown as InboxSnapshots);
  const store = (context: unknown) => Promise.resolve({ duplicate: false, context });

  // What the receiver does around its statement for a new command.
  const receive = async (i: number) => {
    await tracing.send({ commandType: 'bench.cmd', messageId: `cmd-${i}`, correlationId: null }, store);
    metrics.received('bench.cmd', 'new');
  };
  // What the worker and the outcome writer do around the handlers of a batch whose first attempts
  // complete: a span per attempt, the batch's completions counted together, the timings of each.
  const batch = (first: number) => {
    const attempts = [];
    for (let i = first; i < first + BATCH; i++) {
      const row = { id: `entry-${i}`, message_id: `cmd-${i}`, command_type: 'bench.cmd', correlation_id: null, retry_count: 0, trace_parent: TRACE_PARENT, trace_state: null } as unknown as InboxRow;
      const span = tracing.startAttempt(row);
      tracing.runInAttempt(span, () => undefined);
      attempts.push({ row, span, seconds: 0.001 });
    }
    metrics.completed(attempts, (attempt) => attempt.row.command_type, (attempt) => attempt.seconds);
    for (const attempt of attempts) {
      tracing.endAttempt(attempt.span, 'completed');
      metrics.timings('bench.cmd', 5, 2);
    }
  };

  const perCall = { receive: [] as number[], attempt: [] as number[] };
  for (let round = 0; round <= ROUNDS; round++) {
    let start = process.cpuUsage();
    for (let i = 0; i < CALLS; i++) await receive(i);
    let used = process.cpuUsage(start);
    const receiveUs = (used.user + used.system) / CALLS;
    start = process.cpuUsage();
    for (let i = 0; i < CALLS; i += BATCH) batch(i);
    used = process.cpuUsage(start);
    // The first round warms up.
    if (round === 0) continue;
    perCall.receive.push(receiveUs);
    perCall.attempt.push((used.user + used.system) / CALLS);
  }
  console.log(`library telemetry CPU, median of ${ROUNDS} rounds of ${CALLS.toLocaleString('en-US')} calls:`);
  console.log(`  per receive:            ${median(perCall.receive).toFixed(2)} µs  (rounds ${perCall.receive.map((v) => v.toFixed(2)).join(', ')})`);
  console.log(`  per completed attempt:  ${median(perCall.attempt).toFixed(2)} µs  (rounds ${perCall.attempt.map((v) => v.toFixed(2)).join(', ')})`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
