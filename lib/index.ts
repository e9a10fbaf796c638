export { InboxModule } from './inbox.module';
export { InboxService } from './inbox.service';
export { InboxProcessor } from './inbox.processor';
export { InboxRetention, type RetentionResult } from './inbox.retention';
export { OnInboxCompleted, OnInboxDeadLetter, OnInboxFailed } from './decorators/on-inbox-event.decorator';
export { AttemptOutcome, DeadLetterReason, HistoryEvent, type InboxHistoryRecord } from './inbox-history.types';
export type { InboxEvent, InboxEventType } from './interfaces/inbox-event.interface';
export { InboxEntry } from './entities/inbox-entry.entity';
export { InboxStatus } from './inbox-status.enum';
export { InboxMigration, createInboxMigration } from './migrations/inbox.migration';
export { InboxHandler } from './decorators/inbox-handler.decorator';
export { InboxCommand } from './decorators/inbox-command.decorator';
export { backoffDelayMs } from './backoff';
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
