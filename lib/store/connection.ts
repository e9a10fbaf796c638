import { createHash } from 'node:crypto';
import { QueryFailedError, type DataSource, type QueryRunner } from 'typeorm';
import type { InboxRow } from './schema';

/**
 * A statement of the hot path. With a name, node-postgres prepares it once per connection and
 * later runs only bind/execute: no parsing or planning per call (the name carries a digest of
 * the text, so two tables or versions never share one).
 */
export interface Statement {
  readonly name?: string;
  readonly text: string;
}

export function statement(purpose: string, text: string, prepared: boolean): Statement {
  if (!prepared) return { text };
  return { name: `nestjs_inbox_${purpose}_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`, text };
}

export interface QueryOutcome<T> {
  rows: T[];
  affected: number;
}

/**
 * Runs one statement on a query runner, or on a fresh one from the data source (released after).
 * Returns rows and the affected-row count whatever the statement kind. A named statement on a
 * query runner goes straight to its node-postgres connection, prepared (the hot path); everything
 * else goes through TypeORM.
 */
export async function runQuery<T = InboxRow>(
  on: DataSource | QueryRunner,
  sql: string | Statement,
  params: unknown[],
): Promise<QueryOutcome<T>> {
  if (typeof sql !== 'string' && sql.name && isQueryRunner(on)) return runPrepared(on, sql, params);
  const text = typeof sql === 'string' ? sql : sql.text;
  const queryRunner = isQueryRunner(on) ? on : newQueryRunner(on);
  try {
    const result = (await queryRunner.query(text, params, true)) as { records?: T[]; affected?: number };
    return { rows: result.records ?? [], affected: result.affected ?? 0 };
  } finally {
    if (queryRunner !== on) await queryRunner.release();
  }
}

/**
 * Runs a statement that takes the first rows of an index in its order (`ORDER BY … LIMIT n`) in a
 * transaction of its own, with sorting disabled, so that the planner walks the index. Its other
 * choice, reading every matching row and sorting them, looks as cheap whenever the table's
 * statistics say few rows match (taken before a burst, say) and then costs as much as the backlog
 * on every call. Commits before it returns.
 */
export async function runInIndexOrder<T = InboxRow>(queryRunner: QueryRunner, sql: Statement, params: unknown[]): Promise<QueryOutcome<T>> {
  const client = (await queryRunner.connect()) as SimpleQueryable;
  // One round trip: a simple query may hold several statements.
  await client.query('BEGIN; SET LOCAL enable_sort = off');
  try {
    const outcome = await runQuery<T>(queryRunner, sql, params);
    await client.query('COMMIT');
    return outcome;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** node-postgres' client for statements without parameters (the simple query protocol). */
interface SimpleQueryable {
  query(text: string): Promise<unknown>;
}

async function runPrepared<T>(queryRunner: QueryRunner, statement: Statement, values: unknown[]): Promise<QueryOutcome<T>> {
  // A released runner (a timed-out handler's, say) must fail like TypeORM's own queries do.
  if (queryRunner.isReleased) throw new Error('nestjs-inbox: the connection was released; statement not run');
  const client = (await queryRunner.connect()) as PgQueryable;
  try {
    const result = await pgQuery(client, statement, values);
    return { rows: result.rows as T[], affected: result.rowCount ?? 0 };
  } catch (error) {
    // The error TypeORM's own queries throw, whichever way the statement went.
    throw new QueryFailedError(statement.text, values, error as Error);
  }
}

/** Runs a statement straight on a node-postgres client or pool: prepared when it has a name. */
export function pgQuery(client: PgQueryable, sql: string | Statement, values: unknown[]): ReturnType<PgQueryable['query']> {
  return client.query(typeof sql === 'string' ? { text: sql, values } : { name: sql.name, text: sql.text, values });
}

/** The one method of a node-postgres client or pool that the hot path uses. */
export interface PgQueryable {
  query(config: { name?: string; text: string; values: unknown[] }): Promise<{ rows: unknown[]; rowCount: number | null }>;
}

function isQueryRunner(value: DataSource | QueryRunner): value is QueryRunner {
  return typeof (value as QueryRunner).startTransaction === 'function';
}

/**
 * Drops a query runner's connection instead of returning it to the pool: the server then rolls back
 * its open transaction, and any later query through the runner fails instead of running outside it.
 */
export async function destroyConnection(queryRunner: QueryRunner, reason: Error): Promise<void> {
  const runner = queryRunner as QueryRunner & { releasePostgresConnection?: (error: Error) => Promise<void> };
  if (runner.isReleased) return;
  if (runner.releasePostgresConnection) await runner.releasePostgresConnection(reason);
  else await runner.release();
}

/** The node-postgres pool behind a TypeORM data source (the receive path uses it directly). */
export interface PgPoolClient extends PgQueryable {
  release(destroy?: boolean | Error): void;
  on(event: 'error', listener: (error: Error) => void): void;
  removeListener(event: 'error', listener: (error: Error) => void): void;
}

/** The node-postgres pool behind a TypeORM data source, with what it tells of its connections. */
export interface PgPool extends PgQueryable {
  connect(): Promise<PgPoolClient>;
  readonly totalCount: number;
  readonly idleCount: number;
  readonly options: { max: number };
  on(event: 'acquire' | 'release', listener: (...args: never[]) => void): unknown;
}

export function pgPoolOf(dataSource: DataSource): PgPool {
  const pool = (dataSource.driver as unknown as { master?: PgPool }).master;
  if (pool) guardCheckedOutClients(pool);
  return pool as PgPool;
}

/**
 * Guards the checked-out clients of the data source's pool (see guardCheckedOutClients), once the
 * data source has one (it is created when the data source initialises). Returns the data source.
 */
export function guardConnectionsOf(dataSource: DataSource): DataSource {
  pgPoolOf(dataSource);
  return dataSource;
}

/**
 * A query runner of the data source, its pool's checked-out clients guarded first: every
 * connection the library takes comes through here, so the guard is on whichever path comes first
 * (a data source initialised after the module has its pool only now).
 */
export function newQueryRunner(dataSource: DataSource): QueryRunner {
  return guardConnectionsOf(dataSource).createQueryRunner();
}

/** Pools whose checked-out clients are guarded (see guardCheckedOutClients). */
const guardedPools = new WeakSet<object>();

/**
 * Gives every client of the pool an 'error' listener for as long as it is checked out.
 *
 * node-postgres emits 'error' on a client whose server ends its session (57P01 when PostgreSQL
 * restarts or pg_terminate_backend runs), and an 'error' nobody listens to ends the process. The
 * pool listens while a client is idle; whoever checks it out has to listen after that, and TypeORM's
 * query runners (and `pool.connect()`'s promise) only do so a few microtasks after the pool hands
 * the client over. A new connection is handed over from inside its own ReadyForQuery, in the middle
 * of parsing what the socket brought: when the server terminated the backend right after it came
 * up, its 57P01 is the next message of that same read, and it arrives before anyone listens.
 *
 * The pool says 'acquire' before it takes its idle listener off and 'release' after it has put it
 * back, both synchronously: in between, this listener is there. It only keeps the error from being
 * unhandled; the holder learns of it from its next statement, which fails (the client is no longer
 * queryable), and the connection is destroyed when it goes back to the pool.
 */
export function guardCheckedOutClients(pool: PgPool): void {
  // Only node-postgres' pool says 'acquire' and 'release' (a stand-in of a unit test may not).
  if (guardedPools.has(pool) || typeof pool.on !== 'function') return;
  guardedPools.add(pool);
  pool.on('acquire', (client: PgPoolClient) => {
    client.removeListener('error', ignoreCheckedOutClientError); // one at a time, whatever happened before
    client.on('error', ignoreCheckedOutClientError);
  });
  pool.on('release', (_error: unknown, client: PgPoolClient) => client.removeListener('error', ignoreCheckedOutClientError));
}

/** An error on a checked-out client: its holder's next statement fails with it (not queryable). */
function ignoreCheckedOutClientError(): void {}
