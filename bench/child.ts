// Entry of every benchmark child process: node -r scripts/register-ts.cjs bench/child.ts '<ChildSpec JSON>'.
// Loads only the one system it runs (so a worker's RSS is that system's own footprint).
import './query-counter'; // first: patches pg before any system loads it
import { loadAdapter } from './systems';
import { Commands, emit, type ChildSpec } from './protocol';
import { setUpTelemetry } from './telemetry';

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as ChildSpec;
  // Before the system (and with it the library) loads: hide the OpenTelemetry API, or register the SDK.
  if (spec.telemetry) setUpTelemetry(spec.telemetry);
  const adapter = loadAdapter(spec.system);
  const role = adapter.roles[spec.role];
  if (!role) throw new Error(`${spec.system} has no "${spec.role}" role`);
  await role(spec, new Commands());
}

/** Exits once stdout has taken everything written to it: a pipe takes a long result line in parts. */
function exitAfterOutput(code: number): void {
  process.stdout.write('', () => process.exit(code));
}

main().then(
  () => exitAfterOutput(0),
  (error: unknown) => {
    emit({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    exitAfterOutput(1);
  },
);
