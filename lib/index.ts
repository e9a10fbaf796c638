// The public API of nestjs-inbox, and nothing else.

// The module and what applications inject.
export { InboxModule } from './inbox.module';
export { InboxService } from './receive/inbox.service';
/** `runOnce()` drives the worker in tests. */
export { InboxProcessor, type InboxWorkerState } from './worker/inbox.processor';
/** `runOnce()` runs the cleanup on demand. */
export { InboxRetention, type RetentionResult } from './worker/retention';
export { DEFAULT_BACKOFF, DEFAULT_PAYLOAD_VALIDATION, DEFAULT_RETENTION } from './inbox-options';
export type {
  BackoffOptions,
  InboxClock,
  InboxModuleExtras,
  InboxModuleOptions,
  PayloadValidationOptions,
  RetentionOptions,
  TelemetryOptions,
} from './interfaces/inbox-options.interface';

// The operator's console: a JSON API for dead letters, mounted in the application.
export { InboxAdminModule, type InboxAdminAsyncOptions } from './admin/inbox-admin.module';
export type { AdminRequest, InboxAdminOptions } from './admin/inbox-admin.options';

// Observability: the health check behind `nestjs-inbox/terminus`, the figures behind the gauges.
export { InboxHealth, type InboxHealthReport, type InboxHealthThresholds } from './health/inbox-health';
export { InboxSnapshots, type InboxSnapshot } from './telemetry/inbox-snapshot';

// Handlers and listeners.
export { InboxHandler } from './decorators/inbox-handler.decorator';
export { InboxCommand } from './decorators/inbox-command.decorator';
export { OnInboxCompleted, OnInboxDeadLetter, OnInboxFailed } from './decorators/on-inbox-event.decorator';
export type {
  InboxCommandHandler,
  InboxContext,
  InboxContextEntry,
  InboxHandlerEntry,
  InboxHandlerOptions,
} from './interfaces/inbox-handler.interface';
export type { InboxEvent, InboxEventType } from './interfaces/inbox-event.interface';

// Entries and their life.
export { InboxStatus, DeadLetterReason, AttemptOutcome, HistoryEvent } from './state/inbox-state-machine';
export type { DeadLetterPolicy } from './state/ordering';
export { InboxEntry } from './store/inbox-entry.entity';
export { InboxMigration, createInboxMigration } from './store/inbox.migration';
export type { InboxHistoryRecord } from './interfaces/inbox-history.interface';
export type {
  BlockedKey,
  BlockedKeysQuery,
  BulkDiscardOptions,
  BulkDiscardResult,
  BulkReplayOptions,
  BulkReplayResult,
  DeadLetterGroup,
  DeadLetterGroupsQuery,
  DueCommandType,
  InboxStats,
  EntryFilter,
  IncomingCommand,
  ListEntriesQuery,
  OperatorAction,
  ReceiveManyOptions,
  ReceiveManyResult,
  ReceiveOptions,
  ReceiveResult,
  ReplayFilter,
  ReplayOptions,
} from './interfaces/inbox-command.interface';

// Errors, and their HTTP answers.
export {
  AbortedTransactionError,
  BulkCountChangedError,
  HandlerTimeoutError,
  IdempotencyConflictError,
  InboxArgumentError,
  InboxConfigurationError,
  InboxEntryNotFoundError,
  InboxError,
  InboxPoolExhaustedError,
  InboxShutDownError,
  InboxUnavailableError,
  InvalidEntryStateError,
  OrderingKeyMismatchError,
  PayloadValidationError,
  PermanentError,
  UnknownCommandTypeError,
} from './errors/inbox.error';
export { InboxExceptionFilter } from './http/inbox-exception.filter';
export { INBOX_RETRY_AFTER_SECONDS, toHttpError, type InboxHttpError } from './http/inbox-http-error';
