export { InboxModule } from './inbox.module';
export { InboxService } from './receive/inbox.service';
export { InboxProcessor } from './worker/inbox.processor';
export { InboxRetention, type RetentionResult } from './worker/retention';
export { OnInboxCompleted, OnInboxDeadLetter, OnInboxFailed } from './decorators/on-inbox-event.decorator';
export { AttemptOutcome, DeadLetterReason, HistoryEvent } from './state/inbox-state-machine';
export type { InboxHistoryRecord } from './interfaces/inbox-history.interface';
export type { InboxEvent, InboxEventType } from './interfaces/inbox-event.interface';
export { InboxEntry } from './store/inbox-entry.entity';
export { InboxStatus } from './state/inbox-state-machine';
export { InboxMigration, createInboxMigration } from './store/inbox.migration';
export { InboxHandler } from './decorators/inbox-handler.decorator';
export { InboxCommand } from './decorators/inbox-command.decorator';
export { backoffDelayMs } from './state/backoff';
export { DEFAULT_BACKOFF, DEFAULT_RETENTION, resolveInboxOptions } from './inbox-options';
export {
  AbortedTransactionError,
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
  PayloadValidationError,
  PermanentError,
  UnknownCommandTypeError,
} from './errors/inbox.error';
export type {
  BackoffOptions,
  InboxClock,
  InboxModuleExtras,
  InboxModuleOptions,
  PayloadValidationOptions,
  ResolvedInboxOptions,
  RetentionOptions,
} from './interfaces/inbox-options.interface';
export type {
  InboxCommandHandler,
  InboxContext,
  InboxHandlerEntry,
  InboxHandlerOptions,
} from './interfaces/inbox-handler.interface';
export type {
  BulkReplayOptions,
  BulkReplayResult,
  DueCommandType,
  EntryFilter,
  IncomingCommand,
  ListEntriesQuery,
  OperatorAction,
  ReceiveOptions,
  ReceiveResult,
  ReplayFilter,
  ReplayOptions,
} from './interfaces/inbox-command.interface';
export { InboxExceptionFilter } from './http/inbox-exception.filter';
export { INBOX_RETRY_AFTER_SECONDS, toHttpError, type InboxHttpError } from './http/inbox-http-error';
