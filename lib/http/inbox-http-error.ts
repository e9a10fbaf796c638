import { HttpStatus } from '@nestjs/common';
import {
  BulkCountChangedError,
  IdempotencyConflictError,
  InboxArgumentError,
  InboxEntryNotFoundError,
  InboxUnavailableError,
  InvalidEntryStateError,
  PayloadValidationError,
  UnknownCommandTypeError,
} from '../errors/inbox.error';

/** Seconds a client should wait before retrying when the inbox database is unavailable. */
export const INBOX_RETRY_AFTER_SECONDS = 1;

/** The HTTP answer for one of the library's errors. */
export interface InboxHttpError {
  status: number;
  headers: Record<string, string>;
  /** `error` is the error class's name (or `InternalServerError`), `message` a sentence for the client. */
  body: { error: string; message: string } & Record<string, unknown>;
}

/**
 * What an API client should see for an error thrown by the library: 400 for bad arguments and
 * invalid payloads, 404 for an unknown entry, 409 for a reused key or an entry in the wrong
 * state, 503 with Retry-After when the database is unavailable, and a bare 500 for anything else
 * (configuration errors and the like are the server's business: their text stays in the log).
 */
export function toHttpError(error: unknown): InboxHttpError {
  const answer = (status: number, body: Record<string, unknown> = {}, headers: Record<string, string> = {}): InboxHttpError => ({
    status,
    headers,
    body: { error: (error as Error).name, message: (error as Error).message, ...body },
  });
  // Subclasses first: UnknownCommandTypeError is an InboxArgumentError, PayloadValidationError a PermanentError.
  if (error instanceof UnknownCommandTypeError) {
    // The library's text advises the developer on configuration; a client only needs the fact.
    const message = `Unknown command type "${error.commandType}".`;
    return answer(HttpStatus.BAD_REQUEST, { message, argument: error.argument, commandType: error.commandType });
  }
  if (error instanceof InboxArgumentError) return answer(HttpStatus.BAD_REQUEST, { argument: error.argument });
  if (error instanceof PayloadValidationError) return answer(HttpStatus.BAD_REQUEST, { failures: error.failures });
  if (error instanceof IdempotencyConflictError) {
    return answer(HttpStatus.CONFLICT, { messageId: error.messageId, existingEntryId: error.existingEntryId });
  }
  if (error instanceof InboxEntryNotFoundError) return answer(HttpStatus.NOT_FOUND, { id: error.entryId });
  if (error instanceof BulkCountChangedError) return answer(HttpStatus.CONFLICT, { expected: error.expected, matched: error.matched });
  if (error instanceof InvalidEntryStateError) return answer(HttpStatus.CONFLICT, { id: error.entryId, status: error.status });
  if (error instanceof InboxUnavailableError) {
    // The reason may name hosts and ports; the client only needs to retry with the same key.
    const message = 'The command could not be stored right now; send the same request again (same idempotency key) later.';
    return answer(HttpStatus.SERVICE_UNAVAILABLE, { message }, { 'Retry-After': String(INBOX_RETRY_AFTER_SECONDS) });
  }
  return {
    status: HttpStatus.INTERNAL_SERVER_ERROR,
    headers: {},
    body: { error: 'InternalServerError', message: 'Internal server error' },
  };
}
