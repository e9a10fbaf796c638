import type { DataSource } from 'typeorm';
import type { DeadLetterPolicy } from '../state/ordering';

/** Exponential backoff between failed attempts: `initialDelayMs * multiplier^(n-1)`, capped, with jitter. */
export interface BackoffOptions {
  /** Delay after the first failure. Default 1000. */
  initialDelayMs: number;
  /** Growth factor per further failure (≥ 1). Default 2. */
  multiplier: number;
  /** Upper bound of any delay. Default 300000 (5 minutes). */
  maxDelayMs: number;
  /** Random spread as a fraction of the delay, 0..1 (0.2 = ±20%). Default 0.2. */
  jitter: number;
}

/** Cleanup of completed entries that keeps deduplication working. */
export interface RetentionOptions {
  /** Remove completed entries' payloads (keeping a digest for deduplication) after this long. Default 7 days. */
  payloadRetentionMs: number;
  /** Delete completed entries after this long: the deduplication window. Default 30 days. */
  deduplicationWindowMs: number;
  /** How often the cleanup runs (worker instances only). Default 1 hour; 0 disables it. */
  intervalMs: number;
  /** Rows per statement, so that no lock is held for long. Default 500. */
  batchSize: number;
}

/**
 * For tests: a clock to move through backoff and leases without waiting. The library's time is the
 * database's (one clock for every instance); an injected clock shifts it by `now() - Date.now()`.
 */
export interface InboxClock {
  now(): Date;
}

/** How a payload class's validation treats properties the class does not declare (class-validator). */
export interface PayloadValidationOptions {
  /** Strip undeclared properties before the handler sees the command. Default true. */
  whitelist?: boolean;
  /** Refuse a payload with undeclared properties: dead-lettered as an invalid payload. Default false. */
  forbidNonWhitelisted?: boolean;
}

export interface InboxModuleOptions {
  /** Attempts before an entry is dead-lettered (handlers may override). Default 5. */
  maxAttempts?: number;
  backoff?: Partial<BackoffOptions>;
  /** How often an idle worker looks for due entries. Default 1000. */
  pollIntervalMs?: number;
  /** Most entries one claim query takes. Default 20. */
  batchSize?: number;
  /** Handlers in flight at once in this instance (each holds one connection). Default 4. */
  concurrency?: number;
  /** How long a claim lasts before another instance may count it as a crashed attempt. Default 60000. */
  leaseMs?: number;
  /** Longest a handler may run before its attempt fails and its transaction rolls back (handlers may override). Default 30000; below leaseMs. */
  handlerTimeoutMs?: number;
  /** How long `receive` waits for the database before failing with InboxUnavailableError. Default 5000. */
  receiveTimeoutMs?: number;
  /** false = receive-only instance: no processor runs here. Default true. */
  worker?: boolean;
  /** How long shutdown waits for in-flight handlers. Default 10000. */
  shutdownTimeoutMs?: number;
  /** Table holding the entries; a plain PostgreSQL identifier. Default `inbox_entries`. */
  tableName?: string;
  /**
   * Accept command types that have no handler in this application. Default: true when
   * `worker` is false (a receive-only instance), false otherwise.
   */
  acceptUnknownCommandTypes?: boolean;
  /** Largest accepted payload (and metadata), in bytes of JSON. Default 1 MiB. */
  maxPayloadBytes?: number;
  /**
   * Wake workers in other processes at once when commands arrive (a coalesced NOTIFY after the
   * receive commits; workers LISTEN). false: they find new commands at their next poll. Default true.
   */
  notify?: boolean;
  /**
   * Record failed attempts in the history table (in the statement that records the failure: no
   * extra round trip). The attempt that completes an entry is kept on the entry either way. Default true.
   */
  attemptHistory?: boolean;
  /**
   * Run the hot-path statements (receive, claim, lock, complete, failure) as named prepared
   * statements, parsed and planned once per connection. Turn off behind a pooler that cannot keep
   * prepared statements across transactions (PgBouncer before 1.21 in transaction mode). Default true.
   */
  preparedStatements?: boolean;
  /** Retention of completed entries; dead letters are never deleted automatically. */
  retention?: Partial<RetentionOptions>;
  /**
   * Entries of a command type that no worker claims stay Pending (a worker only claims the types it
   * has handlers for). Once such entries have been due this long, workers without their handler log
   * a warning naming the type, at most once per interval. Default 300000 (5 minutes); 0 turns it off.
   */
  unclaimedWarningMs?: number;
  /** Longest an `@OnInbox…` listener may take before it is abandoned with an error line. Default 10000. */
  listenerTimeoutMs?: number;
  /** Undeclared payload properties: stripped by default (handlers may override). */
  payloadValidation?: PayloadValidationOptions;
  /**
   * When the entry that holds an ordering key is dead-lettered: `'block'` keeps the later entries of
   * its key waiting until an operator replays or discards it; `'skip'` lets the key move on.
   * Handlers may override. Default `'block'`.
   */
  onDeadLetter?: DeadLetterPolicy;
  /** Where spans and metrics go, and how fresh the gauges are (see README, Observability). */
  telemetry?: TelemetryOptions;
  /** Name of this worker in `lockedBy`. Default: hostname, pid and a random suffix. */
  workerId?: string;
  /** Tests only: shifts the database's time by this clock's distance from the real one. Default: none. */
  clock?: InboxClock;
}

/**
 * Telemetry through the OpenTelemetry API (an optional peer dependency): by default the global
 * tracer and meter providers, which the application's SDK registers before the Nest app is created.
 * The provider types are written out here so that these declarations do not need the API installed.
 */
export interface TelemetryOptions {
  /** A TracerProvider to use instead of the global one (tests, or an application with several). */
  tracerProvider?: { getTracer(name: string, version?: string): unknown };
  /** A MeterProvider to use instead of the global one. */
  meterProvider?: { getMeter(name: string, version?: string): unknown };
  /**
   * How old the shared figures behind the gauges may be before an instance recounts them (one
   * statement for the whole fleet per interval). Default 15000.
   */
  snapshotMaxAgeMs?: number;
}

/** Synchronous extras of `forRoot` / `forRootAsync`: they are needed before any factory runs. */
export interface InboxModuleExtras {
  /** Register the module globally. Default true. */
  isGlobal?: boolean;
  /** TypeORM data source (its name, or the instance) the inbox uses. Default: the default data source. */
  dataSource?: DataSource | string;
}

/** Options after defaults and validation. */
export interface ResolvedInboxOptions {
  maxAttempts: number;
  backoff: BackoffOptions;
  pollIntervalMs: number;
  batchSize: number;
  concurrency: number;
  leaseMs: number;
  handlerTimeoutMs: number;
  receiveTimeoutMs: number;
  worker: boolean;
  shutdownTimeoutMs: number;
  tableName: string;
  acceptUnknownCommandTypes: boolean;
  maxPayloadBytes: number;
  workerId: string;
  clock: InboxClock;
  attemptHistory: boolean;
  preparedStatements: boolean;
  notify: boolean;
  retention: RetentionOptions;
  unclaimedWarningMs: number;
  listenerTimeoutMs: number;
  payloadValidation: Required<PayloadValidationOptions>;
  onDeadLetter: DeadLetterPolicy;
  telemetry: TelemetryOptions & { snapshotMaxAgeMs: number };
}
