import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { SYSTEM_CLOCK } from './store/database-clock';
import { DEFAULT_TABLE_NAME } from './inbox.constants';
import { InboxConfigurationError } from './errors/inbox.error';
import type {
  BackoffOptions,
  InboxClock,
  InboxModuleOptions,
  PayloadValidationOptions,
  ResolvedInboxOptions,
  RetentionOptions,
} from './interfaces/inbox-options.interface';
import { DEAD_LETTER_POLICIES, type DeadLetterPolicy } from './state/ordering';

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({
  initialDelayMs: 1000,
  multiplier: 2,
  maxDelayMs: 300_000,
  jitter: 0.2,
});

/** A plain, unquoted PostgreSQL identifier, optionally schema-qualified. */
const TABLE_NAME_PATTERN = /^[a-z_][a-z0-9_]{0,54}(\.[a-z_][a-z0-9_]{0,54})?$/;  // leaves room for the "_history" suffix

const KNOWN_OPTIONS = new Set([
  'maxAttempts', 'backoff', 'pollIntervalMs', 'batchSize', 'concurrency', 'leaseMs', 'handlerTimeoutMs', 'receiveTimeoutMs', 'worker',
  'shutdownTimeoutMs', 'tableName', 'acceptUnknownCommandTypes', 'maxPayloadBytes', 'workerId', 'clock', 'attemptHistory', 'preparedStatements', 'notify', 'retention',
  'unclaimedWarningMs', 'listenerTimeoutMs', 'payloadValidation', 'onDeadLetter', 'telemetry',
]);
const KNOWN_BACKOFF = new Set(Object.keys(DEFAULT_BACKOFF));

function fail(name: string, reason: string, value: unknown): never {
  let shown: string;
  try {
    shown = typeof value === 'string' ? JSON.stringify(value) : String(value);
  } catch {
    shown = typeof value;
  }
  throw new InboxConfigurationError(`Invalid nestjs-inbox option "${name}": ${reason} (got ${shown}).`);
}

/** The longest delay a Node timer keeps (about 24.8 days): a longer one fires at once. Also the largest PostgreSQL session timeout. */
export const MAX_TIMER_MS = 2_147_483_647;
/** The longest a shared snapshot may be kept: a day (it becomes a PostgreSQL interval). */
export const MAX_SNAPSHOT_AGE_MS = 86_400_000;

function integer(name: string, value: unknown, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(name, `expected an integer from ${min} to ${max}`, value);
  }
  return value;
}

function number(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    fail(name, `expected a number from ${min} to ${max}`, value);
  }
  return value;
}

/** What a dead-lettered holder of an ordering key does to the later entries of its key. */
export function resolveDeadLetterPolicy(name: string, value: unknown, fallback: DeadLetterPolicy): DeadLetterPolicy {
  if (value === undefined) return fallback;
  if (!DEAD_LETTER_POLICIES.includes(value as DeadLetterPolicy)) fail(name, `expected one of ${DEAD_LETTER_POLICIES.map((p) => `'${p}'`).join(', ')}`, value);
  return value as DeadLetterPolicy;
}

function boolean(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') fail(name, 'expected true or false', value);
  return value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Validates backoff settings; `prefix` names them in errors (`backoff` for the module,
 * `@InboxHandler(...).backoff` for a handler). Missing fields come from `base`.
 */
export function resolveBackoff(value: unknown, base: BackoffOptions, prefix: string, checkBounds = true): BackoffOptions {
  if (value === undefined) return base;
  if (!isPlainObject(value)) fail(prefix, 'expected an object', value);
  for (const key of Object.keys(value)) {
    if (!KNOWN_BACKOFF.has(key)) fail(`${prefix}.${key}`, `unknown option; known: ${[...KNOWN_BACKOFF].join(', ')}`, value[key]);
  }
  const resolved: BackoffOptions = {
    initialDelayMs: integer(`${prefix}.initialDelayMs`, value.initialDelayMs, base.initialDelayMs, 0),
    multiplier: number(`${prefix}.multiplier`, value.multiplier, base.multiplier, 1, 1000),
    maxDelayMs: integer(`${prefix}.maxDelayMs`, value.maxDelayMs, base.maxDelayMs, 0),
    jitter: number(`${prefix}.jitter`, value.jitter, base.jitter, 0, 1),
  };
  if (checkBounds && resolved.maxDelayMs < resolved.initialDelayMs) {
    fail(`${prefix}.maxDelayMs`, `must not be smaller than initialDelayMs (${resolved.initialDelayMs})`, resolved.maxDelayMs);
  }
  return resolved;
}

export function resolveMaxAttempts(name: string, value: unknown, fallback: number): number {
  return integer(name, value, fallback, 1, 1000);
}

/**
 * A handler's time limit must end before its claim's lease, so that a timed-out attempt is
 * recorded by its own worker rather than counted as a crash by another.
 */
export function resolveHandlerTimeout(name: string, value: unknown, fallback: number, leaseMs: number): number {
  const timeout = integer(name, value, fallback, 1, MAX_TIMER_MS);
  if (timeout >= leaseMs) fail(name, `must be smaller than leaseMs (${leaseMs})`, timeout);
  return timeout;
}

export const DEFAULT_PAYLOAD_VALIDATION: Readonly<Required<PayloadValidationOptions>> = Object.freeze({
  whitelist: true,
  forbidNonWhitelisted: false,
});

/** Validates payload validation settings; missing fields come from `base`. */
export function resolvePayloadValidation(
  name: string,
  value: unknown,
  base: Required<PayloadValidationOptions>,
): Required<PayloadValidationOptions> {
  if (value === undefined) return base;
  if (!isPlainObject(value)) fail(name, 'expected an object', value);
  for (const key of Object.keys(value)) {
    if (!(key in DEFAULT_PAYLOAD_VALIDATION)) fail(`${name}.${key}`, `unknown option; known: ${Object.keys(DEFAULT_PAYLOAD_VALIDATION).join(', ')}`, value[key]);
  }
  return {
    whitelist: boolean(`${name}.whitelist`, value.whitelist, base.whitelist),
    forbidNonWhitelisted: boolean(`${name}.forbidNonWhitelisted`, value.forbidNonWhitelisted, base.forbidNonWhitelisted),
  };
}

const DAY_MS = 86_400_000;
export const DEFAULT_RETENTION: Readonly<RetentionOptions> = Object.freeze({
  payloadRetentionMs: 7 * DAY_MS,
  deduplicationWindowMs: 30 * DAY_MS,
  intervalMs: 3_600_000,
  batchSize: 500,
});

function resolveRetention(value: unknown): RetentionOptions {
  if (value === undefined) return { ...DEFAULT_RETENTION };
  if (!isPlainObject(value)) fail('retention', 'expected an object', value);
  for (const key of Object.keys(value)) {
    if (!(key in DEFAULT_RETENTION)) fail(`retention.${key}`, `unknown option; known: ${Object.keys(DEFAULT_RETENTION).join(', ')}`, value[key]);
  }
  const retention: RetentionOptions = {
    payloadRetentionMs: integer('retention.payloadRetentionMs', value.payloadRetentionMs, DEFAULT_RETENTION.payloadRetentionMs, 0),
    deduplicationWindowMs: integer('retention.deduplicationWindowMs', value.deduplicationWindowMs, DEFAULT_RETENTION.deduplicationWindowMs, 0),
    intervalMs: integer('retention.intervalMs', value.intervalMs, DEFAULT_RETENTION.intervalMs, 0, MAX_TIMER_MS),
    batchSize: integer('retention.batchSize', value.batchSize, DEFAULT_RETENTION.batchSize, 1, 100_000),
  };
  if (retention.deduplicationWindowMs < retention.payloadRetentionMs) {
    fail('retention.deduplicationWindowMs', `must not be shorter than payloadRetentionMs (${retention.payloadRetentionMs})`, retention.deduplicationWindowMs);
  }
  return retention;
}

export function defaultWorkerId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

/** Applies defaults and checks every option, failing with an error that names the option. */
export function resolveInboxOptions(options: InboxModuleOptions | undefined): ResolvedInboxOptions {
  const raw: unknown = options ?? {};
  if (!isPlainObject(raw)) fail('options', 'expected an object', raw);
  for (const key of Object.keys(raw)) {
    // isGlobal and dataSource are module extras that ConfigurableModuleBuilder may pass through.
    if (!KNOWN_OPTIONS.has(key) && key !== 'isGlobal' && key !== 'dataSource') {
      fail(key, `unknown option; known: ${[...KNOWN_OPTIONS].join(', ')}`, raw[key]);
    }
  }
  const worker = boolean('worker', raw.worker, true);
  const tableName = raw.tableName === undefined ? DEFAULT_TABLE_NAME : raw.tableName;
  if (typeof tableName !== 'string' || !TABLE_NAME_PATTERN.test(tableName)) {
    fail('tableName', 'expected a lower-case PostgreSQL identifier ([a-z_][a-z0-9_]*, optionally schema.table)', tableName);
  }
  const workerId = raw.workerId === undefined ? defaultWorkerId() : raw.workerId;
  // Stored with every claim: PostgreSQL refuses a NUL in a text, and every claim would fail.
  if (typeof workerId !== 'string' || workerId.length === 0 || workerId.length > 255 || workerId.includes('\u0000')) {
    fail('workerId', 'expected a non-empty string of at most 255 characters, without NUL', workerId);
  }
  const clock = raw.clock === undefined ? SYSTEM_CLOCK : raw.clock;
  if (!isPlainObject(clock) || typeof (clock as { now?: unknown }).now !== 'function') {
    fail('clock', 'expected an object with a now(): Date method', clock);
  }
  const leaseMs = integer('leaseMs', raw.leaseMs, 60_000, 100, MAX_TIMER_MS);
  const handlerTimeoutMs = resolveHandlerTimeout('handlerTimeoutMs', raw.handlerTimeoutMs, Math.min(30_000, Math.floor(leaseMs / 2)), leaseMs);
  return {
    maxAttempts: resolveMaxAttempts('maxAttempts', raw.maxAttempts, 5),
    backoff: resolveBackoff(raw.backoff, DEFAULT_BACKOFF, 'backoff'),
    pollIntervalMs: integer('pollIntervalMs', raw.pollIntervalMs, 1000, 1, 3_600_000),
    batchSize: integer('batchSize', raw.batchSize, 20, 1, 10_000),
    concurrency: integer('concurrency', raw.concurrency, 4, 1, 1000),
    leaseMs,
    handlerTimeoutMs,
    receiveTimeoutMs: integer('receiveTimeoutMs', raw.receiveTimeoutMs, 5_000, 1, 3_600_000),
    worker,
    shutdownTimeoutMs: integer('shutdownTimeoutMs', raw.shutdownTimeoutMs, 10_000, 0, MAX_TIMER_MS),
    tableName,
    acceptUnknownCommandTypes: boolean('acceptUnknownCommandTypes', raw.acceptUnknownCommandTypes, !worker),
    maxPayloadBytes: integer('maxPayloadBytes', raw.maxPayloadBytes, 1_048_576, 1, 256 * 1_048_576),
    workerId,
    clock: clock as unknown as InboxClock,
    attemptHistory: boolean('attemptHistory', raw.attemptHistory, true),
    preparedStatements: boolean('preparedStatements', raw.preparedStatements, true),
    notify: boolean('notify', raw.notify, true),
    retention: resolveRetention(raw.retention),
    unclaimedWarningMs: integer('unclaimedWarningMs', raw.unclaimedWarningMs, 300_000, 0),
    listenerTimeoutMs: integer('listenerTimeoutMs', raw.listenerTimeoutMs, 10_000, 1, MAX_TIMER_MS),
    payloadValidation: resolvePayloadValidation('payloadValidation', raw.payloadValidation, DEFAULT_PAYLOAD_VALIDATION),
    onDeadLetter: resolveDeadLetterPolicy('onDeadLetter', raw.onDeadLetter, 'block'),
    telemetry: resolveTelemetry(raw.telemetry),
  };
}

const KNOWN_TELEMETRY = ['tracerProvider', 'meterProvider', 'snapshotMaxAgeMs'];

function resolveTelemetry(value: unknown): ResolvedInboxOptions['telemetry'] {
  if (value === undefined) return { snapshotMaxAgeMs: 15_000 };
  if (!isPlainObject(value)) fail('telemetry', 'expected an object', value);
  for (const key of Object.keys(value)) {
    if (!KNOWN_TELEMETRY.includes(key)) fail(`telemetry.${key}`, `unknown option; known: ${KNOWN_TELEMETRY.join(', ')}`, value[key]);
  }
  const provider = (name: string, method: string) => {
    const candidate = value[name];
    if (candidate !== undefined && (typeof candidate !== 'object' || candidate === null || typeof (candidate as Record<string, unknown>)[method] !== 'function')) {
      fail(`telemetry.${name}`, `expected an object with a ${method}() method`, candidate);
    }
    return candidate as never;
  };
  return {
    tracerProvider: provider('tracerProvider', 'getTracer'),
    meterProvider: provider('meterProvider', 'getMeter'),
    snapshotMaxAgeMs: integer('telemetry.snapshotMaxAgeMs', value.snapshotMaxAgeMs, 15_000, 0, MAX_SNAPSHOT_AGE_MS),
  };
}
