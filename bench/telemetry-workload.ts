// The telemetry workload, orchestrator side: which way each entrant's child runs (bench/telemetry.ts),
// and the checks that it ran that way. With the SDK, the spans and metric points the exporters were
// given are reported, so the measurement cannot silently measure a library that emitted nothing.
import { METRIC } from '../lib/telemetry/attributes';
import type { TelemetryMode, TelemetryReport } from './telemetry';
import type { Entrant, RunContext } from './workloads';

export type TelemetryVariant = `${'drain' | 'receive'}-${TelemetryMode}`;

/** The child's telemetry mode for a telemetry-workload entrant; undefined for every other entrant. */
export function telemetryModeOf(entrant: Entrant): TelemetryMode | undefined {
  const match = /^(?:drain|receive)-(absent|api|sdk|sdk-inbox-off)$/.exec(entrant.variant ?? '');
  return match ? (match[1] as TelemetryMode) : undefined;
}

/**
 * Checks what the child reported and records the SDK's output. `commands`: every command the child
 * handled (warm-up included); `counter`: the library counter that counted them.
 */
export function recordTelemetry(ctx: RunContext, entrant: Entrant, reported: unknown, commands: number, counter: 'received' | 'processed'): void {
  const mode = telemetryModeOf(entrant);
  const report = reported as TelemetryReport | undefined;
  if (!mode || !report) throw new Error(`${entrant.label}: the child reported no telemetry`);
  if (report.mode !== mode) throw new Error(`${entrant.label}: the child ran with telemetry "${report.mode}", expected "${mode}"`);
  if (report.libraryHasApi !== (mode !== 'absent')) {
    throw new Error(`${entrant.label}: the library ${report.libraryHasApi ? 'found' : 'did not find'} the OpenTelemetry API`);
  }
  const withSdk = mode === 'sdk' || mode === 'sdk-inbox-off';
  if (report.sdkLoaded !== withSdk) throw new Error(`${entrant.label}: an SDK was ${report.sdkLoaded ? '' : 'not '}loaded`);
  if (mode === 'sdk-inbox-off' && report.spans > 0) throw new Error(`${entrant.label}: the inbox exported ${report.spans} spans with its telemetry off`);
  if (mode !== 'sdk') return;
  const counterName = METRIC[counter];
  const counted = report.counters[counterName] ?? 0;
  if (report.spans === 0 || report.metricPoints === 0) {
    throw new Error(`${entrant.label}: the SDK exported ${report.spans} spans and ${report.metricPoints} metric points`);
  }
  if (counted !== commands) throw new Error(`${entrant.label}: ${counterName} counted ${counted}, expected ${commands}`);
  const metric = (name: string, unit: string, digits: number, value: number) =>
    ctx.results.add({ workload: 'telemetry', system: entrant.label, metric: name, unit, digits }, ctx.rep, value);
  metric('spans exported per command', 'spans', 2, report.spans / commands);
  metric('metric points exported', 'points', 0, report.metricPoints);
  metric(`${counterName} / commands`, '×', 2, counted / commands);
}

/** The SDK setup, for the report's header. */
export const TELEMETRY_SETUP =
  'telemetry SDK: AsyncLocalStorageContextManager, BasicTracerProvider + BatchSpanProcessor (defaults) and MeterProvider + ' +
  'PeriodicExportingMetricReader (1 s), exporters that count and discard, registered globally; sampling ParentBased(AlwaysOn)';
