import { Catch, HttpStatus, Logger, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import type { Response } from 'express';
import {
  IdempotencyConflictError,
  InboxArgumentError,
  InboxEntryNotFoundError,
  InboxError,
  InboxUnavailableError,
  InvalidEntryStateError,
  PayloadValidationError,
  UnknownCommandTypeError,
} from 'nestjs-inbox';

interface HttpError {
  status: number;
  headers?: Record<string, string>;
  body: { error: string; message: string } & Record<string, unknown>;
}

/** Turns the inbox library's errors into HTTP answers with a stable JSON shape. */
@Catch(InboxError)
export class InboxExceptionFilter implements ExceptionFilter<InboxError> {
  private readonly logger = new Logger(InboxExceptionFilter.name);

  catch(error: InboxError, host: ArgumentsHost): void {
    const { status, body, headers } = toHttpError(error);
    if (status >= 500) this.logger.error(error.message, error.stack);
    const response = host.switchToHttp().getResponse<Response>();
    if (headers) response.set(headers);
    response.status(status).json(body);
  }
}

export function toHttpError(error: InboxError): HttpError {
  const base = { error: error.name, message: error.message };
  // Subclasses first: UnknownCommandTypeError is an InboxArgumentError, PayloadValidationError a PermanentError.
  if (error instanceof UnknownCommandTypeError) {
    // The library's text advises the developer on configuration; a client only needs the fact.
    const message = `Unknown command type "${error.commandType}".`;
    return { status: HttpStatus.BAD_REQUEST, body: { ...base, message, argument: error.argument, commandType: error.commandType } };
  }
  if (error instanceof InboxArgumentError) {
    return { status: HttpStatus.BAD_REQUEST, body: { ...base, argument: error.argument } };
  }
  if (error instanceof PayloadValidationError) {
    return { status: HttpStatus.BAD_REQUEST, body: { ...base, failures: error.failures } };
  }
  if (error instanceof IdempotencyConflictError) {
    return { status: HttpStatus.CONFLICT, body: { ...base, messageId: error.messageId, existingEntryId: error.existingEntryId } };
  }
  if (error instanceof InboxEntryNotFoundError) {
    return { status: HttpStatus.NOT_FOUND, body: { ...base, id: error.entryId } };
  }
  if (error instanceof InvalidEntryStateError) {
    return { status: HttpStatus.CONFLICT, body: { ...base, id: error.entryId, status: error.status } };
  }
  if (error instanceof InboxUnavailableError) {
    // Nothing was stored (or a retry finds it as a duplicate): the client retries with the same key.
    return { status: HttpStatus.SERVICE_UNAVAILABLE, headers: { 'Retry-After': '1' }, body: base };
  }
  // Configuration errors and the like are server faults; their text is not for clients.
  return { status: HttpStatus.INTERNAL_SERVER_ERROR, body: { error: 'InternalServerError', message: 'Internal server error' } };
}
