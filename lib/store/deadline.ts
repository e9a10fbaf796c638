import type { DataSource } from 'typeorm';
import { pgPoolOf, pgQuery, type PgPoolClient, type Statement } from './connection';
import { asInboxError, isConnectionError } from './database-errors';

/** Runs one statement and returns its rows. */
export type RunStatement = <R>(sql: string | Statement, params: unknown[]) => Promise<R[]>;

/**
 * Runs `work` on a pool connection of its own (node-postgres directly: the receive's hot path
 * uses it), failing with `timedOut(poolExhausted)`'s error when it has not finished within
 * `timeoutMs`. A timed-out connection is destroyed, now or whenever the pool hands it over: the
 * server rolls back what had not committed, and a connection that went silent (a network that
 * drops packets) is not kept to hang the next statement too.
 */
export function withDeadline<T>(dataSource: DataSource, timeoutMs: number, timedOut: (poolExhausted: boolean) => Error, work: (query: RunStatement) => Promise<T>): Promise<T> {
  // Callbacks rather than a race of promises: this runs once per receive.
  return new Promise<T>((resolve, reject) => {
    let client: PgPoolClient | undefined;
    let settled = false;
    const pool = pgPoolOf(dataSource);
    const timer = setTimeout(() => {
      settled = true;
      // Still waiting for the pool, every connection of which is held: not the database's fault.
      reject(timedOut(!client && pool.totalCount >= pool.options.max && pool.idleCount === 0));
      client?.release(true);
    }, timeoutMs);
    const finish = (error: unknown, result?: T) => {
      if (settled) return; // timed out: the connection is gone already
      settled = true;
      clearTimeout(timer);
      client!.removeListener('error', ignoreError);
      client!.release(error !== undefined && isConnectionError(error) ? true : undefined);
      if (error === undefined) resolve(result as T);
      else reject(asInboxError(error, dataSource));
    };
    pool.connect().then(
      (connected) => {
        if (settled) return connected.release(true);
        client = connected;
        // A checked-out node-postgres client has no 'error' listener of its own: without this
        // one, a connection that breaks while we hold it would crash the process.
        connected.on('error', ignoreError);
        const query: RunStatement = async <R>(sql: string | Statement, values: unknown[]) => (await pgQuery(connected, sql, values)).rows as R[];
        work(query).then(
          (result) => finish(undefined, result),
          (error: unknown) => finish(error ?? new Error('undefined thrown')),
        );
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(asInboxError(error, dataSource));
      },
    );
  });
}

function ignoreError(): void {}
