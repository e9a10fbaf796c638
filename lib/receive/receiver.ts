import { Inject, Injectable } from '@nestjs/common';
import type { DataSource, EntityManager } from 'typeorm';
import { IdempotencyConflictError, InboxPoolExhaustedError, InboxUnavailableError } from '../errors/inbox.error';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ReceiveResult } from '../interfaces/inbox-command.interface';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { InboxStatus } from '../state/inbox-state-machine';
import { pgPoolOf, pgQuery, runQuery, type PgPoolClient, type Statement } from '../store/connection';
import { clockTime } from '../store/database-clock';
import { asInboxError, isConnectionError } from '../store/database-errors';
import { rowFromJson, toEntry, type InboxRow } from '../store/schema';
import { InboxStatements } from '../store/statements';
import { InboxMetrics } from '../telemetry/inbox-metrics';
import { InboxTracing } from '../telemetry/inbox-tracing';
import type { StoredTraceContext } from '../telemetry/trace-context';
import { InboxNotifier } from '../wake/notifier';
import { WakeSignal } from '../wake/wake-signal';
import type { ValidatedCommand } from './command-validation';

/**
 * Stores a validated command: one statement, new or duplicate (see `InboxStatements.receive`), on
 * a pool connection of its own bounded by `receiveTimeoutMs`, or inside the caller's transaction.
 * A new entry wakes this process's worker (WakeSignal) and, through a coalesced notification,
 * the workers of other processes.
 */
@Injectable()
export class Receiver {

  constructor(
    private readonly sql: InboxStatements,
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly notifier: InboxNotifier,
    private readonly wakeSignal: WakeSignal,
    private readonly tracing: InboxTracing,
    private readonly metrics: InboxMetrics,
  ) {}

  /** Stores the command in its `send` span (see InboxTracing), and counts the result. */
  async receive(incoming: ValidatedCommand, manager: EntityManager | undefined): Promise<ReceiveResult> {
    try {
      const result = await this.tracing.send(incoming, (trace) => this.storeCommand(incoming, manager, trace));
      this.metrics.received(incoming.commandType, result.duplicate ? 'duplicate' : 'new');
      return result;
    } catch (error) {
      this.metrics.received(incoming.commandType, error instanceof IdempotencyConflictError ? 'conflict' : 'error');
      throw error;
    }
  }

  private async storeCommand(incoming: ValidatedCommand, manager: EntityManager | undefined, trace: StoredTraceContext | null): Promise<ReceiveResult> {
    const queryRunner = manager?.queryRunner;
    if (queryRunner) {
      // The caller's transaction owns the connection (and its timeouts); the row is invisible until
      // the caller commits, so the next poll finds it rather than a wake-up.
      const query: RunStatement = async (sql, params) => (await runQuery(queryRunner, sql, params)).rows as never[];
      return this.store(query, incoming, trace, false, true).catch((error: unknown) => {
        throw asInboxError(error, this.dataSource);
      });
    }
    let result: ReceiveResult;
    try {
      result = await this.withTimeout((query) => this.store(query, incoming, trace, true));
    } catch (error) {
      // A timed-out statement may still have committed: announce it (a spare wake-up costs one
      // claim that finds nothing).
      if (error instanceof InboxUnavailableError) this.announce();
      throw error;
    }
    if (!result.duplicate) this.wakeSignal.raise();
    return result;
  }

  /** New due commands (replays): this process's worker now, other processes' through a coalesced NOTIFY. */
  announce(): void {
    this.wakeSignal.raise();
    this.notifier.notify();
  }

  /**
   * Inserts once per messageId; on a conflict returns the stored entry or reports a mismatch. With
   * `announce`, a new entry is announced to other instances: inside the statement itself when the
   * notifier hands this receive the notification, otherwise by a coalesced `pg_notify` after it.
   */
  private async store(query: RunStatement, incoming: ValidatedCommand, trace: StoredTraceContext | null, announce = false, inCallersTransaction = false): Promise<ReceiveResult> {
    const keyed = incoming.orderingKey !== null;
    const params = [
      incoming.messageId,
      incoming.commandType,
      incoming.payloadJson,
      incoming.correlationId,
      incoming.causationId,
      incoming.metadataJson,
      clockTime(this.options.clock),
      trace?.traceParent ?? null,
      trace?.traceState ?? null,
      ...(keyed ? [incoming.orderingKey] : []),
    ];
    const [plain, notifying] = keyed ? [this.sql.receiveKeyed, this.sql.receiveKeyedAndNotify] : [this.sql.receive, this.sql.receiveAndNotify];
    for (;;) {
      // Taken with the connection in hand, right before the statement goes: it commits one round trip later.
      const ticket = announce ? this.notifier.takeInline() : undefined;
      let rows: ReceivedRow[] = [];
      try {
        rows = ticket ? await query<ReceivedRow>(notifying, [...params, ticket.channel]) : await query<ReceivedRow>(plain, params);
      } finally {
        if (ticket) this.notifier.settle(ticket, rows.some((row) => row.same_command === null && !row.key_left_busy));
      }
      // A concurrent receive of the same messageId won after this one had taken the key: settle it.
      if (rows.some((row) => row.key_left_busy)) await this.settleKey(query, incoming.orderingKey!, inCallersTransaction);
      const received = rows.find((row) => !row.key_left_busy);
      if (received?.same_command === null) {
        if (announce && !ticket) this.notifier.notify();
        return { entry: newEntry(received, incoming, trace), duplicate: false };
      }
      // No row: a concurrent receive committed this messageId after the statement's snapshot.
      const lookup = [incoming.messageId, incoming.commandType, incoming.payloadJson, incoming.orderingKey];
      const stored = received ? storedFrom(received, incoming.payloadJson) : (await query<StoredRow>(this.sql.selectByMessageIdWithMatch, lookup))[0];
      // Still none: that entry was deleted meanwhile, so storing again is correct.
      if (!stored) continue;
      if (!stored.same_command) throw new IdempotencyConflictError(incoming.messageId, stored.id);
      return { entry: toEntry(stored), duplicate: true };
    }
  }

  /** Hands a key over that this receive marked busy without storing an entry to hold it. */
  private async settleKey(query: RunStatement, key: string, inCallersTransaction: boolean): Promise<void> {
    const clock = clockTime(this.options.clock);
    if (inCallersTransaction) {
      await query(this.sql.lockKeys, [[key]]);
      await query(this.sql.settleKeys, [[key], clock]);
      return;
    }
    await query('BEGIN', []);
    try {
      await query(this.sql.lockKeys, [[key]]);
      await query(this.sql.settleKeys, [[key], clock]);
      await query('COMMIT', []);
    } catch (error) {
      await query('ROLLBACK', []).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Runs `work` on a pool connection of its own (node-postgres directly: this is the hot path),
   * failing with InboxUnavailableError when the database is unreachable or silent for
   * `receiveTimeoutMs` (InboxPoolExhaustedError when the pool had no connection to give); a
   * timed-out connection is destroyed, which makes the server roll back what had not committed.
   */
  private withTimeout<T>(work: (query: RunStatement) => Promise<T>): Promise<T> {
    const timeoutMs = this.options.receiveTimeoutMs;
    // Callbacks rather than a race of promises: this runs once per receive.
    return new Promise<T>((resolve, reject) => {
      let client: PgPoolClient | undefined;
      let settled = false;
      const pool = pgPoolOf(this.dataSource);
      const timer = setTimeout(() => {
        settled = true;
        // Still waiting for the pool, every connection of which is held: not the database's fault.
        const exhausted = !client && pool.totalCount >= pool.options.max && pool.idleCount === 0;
        reject(exhausted ? new InboxPoolExhaustedError(pool.options.max, timeoutMs) : new InboxUnavailableError(`no answer within receiveTimeoutMs (${timeoutMs} ms)`));
        // Destroy the connection, now or (below) whenever the pool hands it over.
        client?.release(true);
      }, timeoutMs);
      const finish = (error: unknown, result?: T) => {
        if (settled) return; // timed out: the connection is gone already
        settled = true;
        clearTimeout(timer);
        client!.removeListener('error', ignoreError);
        client!.release(error !== undefined && isConnectionError(error) ? true : undefined);
        if (error === undefined) resolve(result as T);
        else reject(asInboxError(error, this.dataSource));
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
          reject(asInboxError(error, this.dataSource));
        },
      );
    });
  }
}

/** Runs one statement and returns its rows. */
type RunStatement = <R>(sql: string | Statement, params: unknown[]) => Promise<R[]>;

type StoredRow = InboxRow & { same_command: boolean };

/**
 * What the receive statement returns: `same_command` and `stored` are null for a new entry. With an
 * ordering key, a new entry also comes back with its place and whether it waits, and a row of its
 * own (`key_left_busy`) says the key was taken for an entry that was not stored.
 */
interface ReceivedRow {
  id: string;
  received_at: Date | null;
  same_command: boolean | null;
  stored: Record<string, unknown> | null;
  ordering_seq?: string | null;
  waiting?: boolean | null;
  key_left_busy?: boolean | null;
}

/** The entry just inserted, built from what was stored (the statement returns only its id, time and place). */
function newEntry(received: ReceivedRow, incoming: ValidatedCommand, trace: StoredTraceContext | null): ReturnType<typeof toEntry> {
  return toEntry({
    id: received.id,
    message_id: incoming.messageId,
    command_type: incoming.commandType,
    payload: JSON.parse(incoming.payloadJson) as Record<string, unknown>,
    status: InboxStatus.Pending,
    retry_count: 0,
    max_attempts: null,
    next_retry_at: null,
    error: null,
    last_outcome: null,
    received_at: received.received_at!,
    processed_at: null,
    processing_started_at: null,
    processed_by: null,
    correlation_id: incoming.correlationId,
    causation_id: incoming.causationId,
    metadata: JSON.parse(incoming.metadataJson) as Record<string, unknown>,
    locked_by: null,
    locked_until: null,
    lock_token: null,
    dead_letter_reason: null,
    dead_lettered_at: null,
    discarded_at: null,
    ordering_key: incoming.orderingKey,
    ordering_seq: received.ordering_seq ?? null,
    waiting: received.waiting ?? false,
    blocks_key: false,
    trace_parent: trace?.traceParent ?? null,
    trace_state: trace?.traceState ?? null,
  });
}

/**
 * The stored entry of a duplicate, from the receive statement's jsonb column. Its payload was sent
 * back only when it is not the incoming one (jsonb equality): an operator corrected it, or
 * retention removed it.
 */
function storedFrom(received: ReceivedRow, incomingPayloadJson: string): StoredRow {
  const stored = received.stored!;
  stored.payload = stored.payload_removed ? null : (stored.payload_stored ?? JSON.parse(incomingPayloadJson));
  stored.same_command = received.same_command;
  return rowFromJson(stored) as StoredRow;
}

function ignoreError(): void {}
