import type * as OpenTelemetryApi from '@opentelemetry/api';

/**
 * The OpenTelemetry API, when the application has installed it (an optional peer dependency).
 * Without it every span and instrument of the library is skipped; with it but without an SDK, the
 * API's own no-op tracer and meter answer. Loaded with `require` so that a missing package is not
 * an error; only types come from the import above, and none of them reach the public declarations.
 */
export type OpenTelemetry = typeof OpenTelemetryApi;

export const openTelemetry: OpenTelemetry | undefined = loadOptional();

function loadOptional(): OpenTelemetry | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('@opentelemetry/api') as OpenTelemetry;
  } catch {
    return undefined;
  }
}

/** The library's name and version, as its tracer and meter report them. */
export const INSTRUMENTATION_SCOPE = { name: 'nestjs-inbox', version: packageVersion() };

function packageVersion(): string {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('../../package.json') as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}
