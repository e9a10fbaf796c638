// The telemetry workload's three ways of running a nestjs-inbox child, set up at the very start of
// the child (bench/child.ts, before any system loads), and what the child then reports:
//   absent — `require('@opentelemetry/api')` fails, as when the optional peer is not installed:
//            the library runs without telemetry;
//   api    — the API installed, nothing registered (the library's default: the API's no-op tracer
//            and meter answer);
//   sdk    — the SDK registered globally: AsyncLocalStorage context manager, a BasicTracerProvider
//            with a BatchSpanProcessor and a MeterProvider with a PeriodicExportingMetricReader
//            (every 1 s), both over exporters that count what they are given and discard it.
//            Sampling is the default (ParentBased(AlwaysOn)): every span is created and batched.
//   sdk-inbox-off — the same SDK, its context manager's store entered once (as the batch
//            processor's first export does), but the inbox given no-op providers: what the SDK
//            costs the application by itself, the library's telemetry apart.
// Only types are imported here: the packages are required when a mode needs them.
import Module from 'node:module';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { TelemetryOptions } from '../lib';

export type TelemetryMode = 'absent' | 'api' | 'sdk' | 'sdk-inbox-off';

/** What a child reports about its telemetry (in its result message, as `telemetry`). */
export interface TelemetryReport {
  mode: TelemetryMode;
  /** Whether the library found the API (lib/telemetry/opentelemetry.ts). */
  libraryHasApi: boolean;
  /** Whether any SDK package was loaded in the child. */
  sdkLoaded: boolean;
  /** sdk: spans the exporter was given, in all. */
  spans: number;
  /** sdk: metric data points the exporter was given, over all its exports. */
  metricPoints: number;
  /** sdk: metric exports. */
  metricExports: number;
  /** sdk: the library's counters in the last export (cumulative), by name. */
  counters: Record<string, number>;
}

const API = '@opentelemetry/api';
const LIBRARY_SCOPE = 'nestjs-inbox';

let mode: TelemetryMode | undefined;
let flush: (() => Promise<void>) | undefined;
const counts = { spans: 0, metricPoints: 0, metricExports: 0, counters: {} as Record<string, number> };

/** Sets the child up for `wanted`; must run before anything requires the library (or the API). */
export function setUpTelemetry(wanted: TelemetryMode): void {
  mode = wanted;
  if (wanted === 'absent') return hideApi();
  if (wanted === 'sdk' || wanted === 'sdk-inbox-off') registerSdk();
}

/**
 * The module's telemetry option for the mode: no-op providers when the inbox's telemetry is to be
 * off while the SDK runs; none (the global providers) otherwise.
 */
export function inboxTelemetryOption(): TelemetryOptions | undefined {
  if (mode !== 'sdk-inbox-off') return undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const api = require(API) as typeof import('@opentelemetry/api');
  return { tracerProvider: new api.ProxyTracerProvider(), meterProvider: { getMeter: () => api.createNoopMeter() } };
}

/** Makes every resolution of the API (and its subpaths) fail as a missing package does. */
function hideApi(): void {
  const loader = Module as unknown as { _resolveFilename: (request: string, ...rest: unknown[]) => string };
  const resolve = loader._resolveFilename;
  loader._resolveFilename = function resolveWithoutApi(this: unknown, request: string, ...rest: unknown[]): string {
    if (request === API || request.startsWith(`${API}/`)) {
      const error = new Error(`Cannot find module '${request}' (hidden by the benchmark's telemetry workload)`) as NodeJS.ErrnoException;
      error.code = 'MODULE_NOT_FOUND';
      throw error;
    }
    return resolve.call(this, request, ...rest);
  };
}

function registerSdk(): void {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const api = require(API) as typeof import('@opentelemetry/api');
  const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks') as typeof import('@opentelemetry/context-async-hooks');
  const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base');
  const { DataPointType, MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics') as typeof import('@opentelemetry/sdk-metrics');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const SUCCESS = 0; // ExportResultCode.SUCCESS

  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  // With the inbox's spans off, nothing would enter the context manager's store; the batch
  // processor's first export does so in any application with the SDK.
  if (mode === 'sdk-inbox-off') api.context.with(api.ROOT_CONTEXT, () => undefined);
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [
      new BatchSpanProcessor({
        export(spans: ReadableSpan[], done: (result: { code: number }) => void) {
          counts.spans += spans.length;
          done({ code: SUCCESS });
        },
        shutdown: () => Promise.resolve(),
        forceFlush: () => Promise.resolve(),
      }),
    ],
  });
  const meterProvider = new MeterProvider({
    readers: [
      new PeriodicExportingMetricReader({
        exportIntervalMillis: 1000,
        exporter: {
          export(metrics: ResourceMetrics, done: (result: { code: number }) => void) {
            counts.metricExports++;
            for (const scope of metrics.scopeMetrics) {
              for (const metric of scope.metrics) {
                counts.metricPoints += metric.dataPoints.length;
                if (scope.scope.name === LIBRARY_SCOPE && metric.dataPointType === DataPointType.SUM) {
                  counts.counters[metric.descriptor.name] = (metric.dataPoints as Array<{ value: number }>).reduce((sum, point) => sum + point.value, 0);
                }
              }
            }
            done({ code: SUCCESS });
          },
          forceFlush: () => Promise.resolve(),
          shutdown: () => Promise.resolve(),
        },
      }),
    ],
  });
  api.trace.setGlobalTracerProvider(tracerProvider);
  api.metrics.setGlobalMeterProvider(meterProvider);
  flush = async () => {
    await tracerProvider.forceFlush();
    await meterProvider.forceFlush();
  };
}

/**
 * Flushes the SDK's pending spans and metrics into the exporters (call while the application still
 * runs: the library's gauges read the database) and says what the child ran with; undefined when
 * the child was not started for the telemetry workload.
 */
export async function telemetryReport(): Promise<TelemetryReport | undefined> {
  if (!mode) return undefined;
  await flush?.();
  const loaded = Object.keys(require.cache);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { openTelemetry } = require('../lib/telemetry/opentelemetry') as typeof import('../lib/telemetry/opentelemetry');
  return {
    mode,
    libraryHasApi: openTelemetry !== undefined,
    sdkLoaded: loaded.some((file) => /[\\/]@opentelemetry[\\/]sdk-/.test(file)),
    ...counts,
  };
}
