import type { DataSource } from 'typeorm';
import { InboxShutDownError, InboxUnavailableError } from '../errors/inbox.error';

/** node-postgres and socket errors that mean "the server is not reachable right now". */
const CONNECTION_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN']);
/** SQLSTATEs of a server that is shutting down, starting up or out of connections. */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);

export function isConnectionError(error: unknown): boolean {
  for (let current = error as { code?: unknown; driverError?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; current && depth < 5; depth++) {
    const code = typeof current.code === 'string' ? current.code : '';
    if (CONNECTION_ERROR_CODES.has(code) || UNAVAILABLE_SQLSTATES.has(code) || code.startsWith('08')) return true;
    const message = typeof current.message === 'string' ? current.message : '';
    if (/Connection terminated|connection timeout|Client has encountered a connection error|timeout exceeded when trying to connect/i.test(message)) return true;
    current = (current.driverError ?? current.cause) as typeof current;
  }
  return false;
}

/** SQLSTATEs of a transaction the server ended to break a deadlock, or could not serialise: nobody's fault, and it may simply run again. */
const CONFLICT_SQLSTATES = new Set(['40P01', '40001']);

/** Whether `error` is a deadlock or serialisation failure (the transaction was rolled back; running it again is safe). */
export function isTransactionConflict(error: unknown): boolean {
  for (let current = error as { code?: unknown; driverError?: unknown; cause?: unknown } | undefined, depth = 0; current && depth < 5; depth++) {
    if (typeof current.code === 'string' && CONFLICT_SQLSTATES.has(current.code)) return true;
    current = (current.driverError ?? current.cause) as typeof current;
  }
  return false;
}

/**
 * What a failed statement means for a caller: InboxShutDownError once the application closed its
 * data source (or is closing its pool), InboxUnavailableError when the server could not be
 * reached; anything else (a constraint, a bug) as it is.
 */
export function asInboxError(error: unknown, dataSource: DataSource): unknown {
  if (error instanceof InboxUnavailableError) return error;
  if (!dataSource.isInitialized || /pool after calling end|Client was closed/i.test((error as Error)?.message ?? '')) return new InboxShutDownError();
  if (!isConnectionError(error)) return error;
  return new InboxUnavailableError((error as Error).message, { cause: error });
}

/** Throws InboxShutDownError when the application has closed the inbox's data source. */
export function assertOpen(dataSource: DataSource): void {
  if (!dataSource.isInitialized) throw new InboxShutDownError();
}
