import { Inject, Injectable } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { clockTime } from './database-clock';
import { isConnectionError } from './database-errors';
import {
  DEFAULT_LIST_LIMIT,
  INBOX_DATA_SOURCE,
  INBOX_RESOLVED_OPTIONS,
  MAX_COMMAND_TYPE_LENGTH,
  MAX_CORRELATION_ID_LENGTH,
  MAX_LIST_LIMIT,
  MAX_MESSAGE_ID_LENGTH,
} from './inbox.constants';
import type { InboxEntry } from './entities/inbox-entry.entity';
import {
  IdempotencyConflictError,
  InboxArgumentError,
  InboxPoolExhaustedError,
  InboxShutDownError,
  InboxUnavailableError,
  InboxEntryNotFoundError,
  InvalidEntryStateError,
  UnknownCommandTypeError,
} from './errors/inbox.error';
import { InboxExplorer } from './inbox.explorer';
import { InboxProcessor } from './inbox.processor';
import {
  InboxSql,
  pgPoolOf,
  pgQuery,
  type PgPoolClient,
  rowFromJson,
  runQuery,
  type Statement,
  toEntry,
  toHistoryRecord,
  type EntryFilter,
  type HistoryRow,
  type InboxRow,
  type QueryOutcome,
} from './inbox.sql';
import { AttemptOutcome, DEAD_LETTER_REASONS, DeadLetterReason, HistoryEvent, type InboxHistoryRecord } from './inbox-history.types';
import { InboxEvents } from './inbox.events';
import { InboxNotifier } from './inbox.notifier';
import { materializeCommand } from './inbox-payload';
import { INBOX_STATUSES, InboxStatus } from './inbox-status.enum';
import type {
  BulkReplayOptions,
  BulkReplayResult,
  DueCommandType,
  IncomingCommand,
  ListEntriesQuery,
  OperatorAction,
  ReceiveOptions,
  ReceiveResult,
  ReplayFilter,
  ReplayOptions,
} from './interfaces/inbox-command.interface';
import type { ResolvedInboxOptions } from './interfaces/inbox-options.interface';

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** PostgreSQL's earliest timestamptz (4714-11-24 BC); the latest JavaScript date is within its range. */
const EARLIEST_TIMESTAMP = Date.UTC(-4713, 10, 24);
/**
 * In JSON.stringify's output, a NUL or a lone surrogate is always a `\u` escape, and a paired
 * surrogate never is; an escape counts only after an even run of backslashes (`\\u0000` is a
 * backslash followed by the text "u0000").
 */
const ESCAPED_NUL = /(?<!\\)(?:\\\\)*\\u0000/;
const ESCAPED_LONE_SURROGATE = /(?<!\\)(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/i;

/** What controllers inject: store commands once, look them up, send dead letters back. */
@Injectable()
export class InboxService {
  private readonly sql: InboxSql;

  constructor(
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly explorer: InboxExplorer,
    private readonly processor: InboxProcessor,
    private readonly events: InboxEvents,
    private readonly notifier: InboxNotifier,
  ) {
    this.sql = new InboxSql(options.tableName, options.attemptHistory, options.preparedStatements);
  }

  /**
   * Stores the command as a Pending entry, once per messageId. A repeat of the same command
   * returns the stored entry with `duplicate: true`; the same messageId with another command type
   * or payload throws IdempotencyConflictError.
   */
  async receive(command: IncomingCommand, options: ReceiveOptions = {}): Promise<ReceiveResult> {
    const incoming = this.validateIncoming(command);
    const manager = this.validateReceiveOptions(options);
    this.assertOpen();
    const queryRunner = manager?.queryRunner;
    if (queryRunner) {
      // The caller's transaction owns the connection (and its timeouts); the row is invisible until
      // the caller commits, so the next poll finds it rather than a wake-up.
      const query: RunStatement = async (sql, params) => (await runQuery(queryRunner, sql, params)).rows as never[];
      return this.store(query, incoming).catch((error: unknown) => {
        throw this.asUnavailable(error);
      });
    }
    let result: ReceiveResult;
    try {
      result = await this.withTimeout((query) => this.store(query, incoming, true));
    } catch (error) {
      // A timed-out statement may still have committed: announce it (a spare wake-up costs one
      // claim that finds nothing).
      if (error instanceof InboxUnavailableError) {
        this.processor.wake();
        this.notifier.notify();
      }
      throw error;
    }
    if (!result.duplicate) this.processor.wake();
    return result;
  }

  /** New due commands (replays): this instance's processor now, other instances through a coalesced NOTIFY. */
  private wakeWorkers(): void {
    this.processor.wake();
    this.notifier.notify();
  }

  /**
   * Inserts once per messageId; on a conflict returns the stored entry or reports a mismatch. With
   * `announce`, a new entry is announced to other instances: inside the statement itself when the
   * notifier hands this receive the notification, otherwise by a coalesced `pg_notify` after it.
   */
  private async store(query: RunStatement, incoming: ValidatedCommand, announce = false): Promise<ReceiveResult> {
    const params = [
      incoming.messageId,
      incoming.commandType,
      incoming.payloadJson,
      incoming.correlationId,
      incoming.causationId,
      incoming.metadataJson,
      clockTime(this.options.clock),
    ];
    for (;;) {
      // Taken with the connection in hand, right before the statement goes: it commits one round trip later.
      const ticket = announce ? this.notifier.takeInline() : undefined;
      let received: ReceivedRow | undefined;
      try {
        [received] = ticket ? await query<ReceivedRow>(this.sql.receiveAndNotify, [...params, ticket.channel]) : await query<ReceivedRow>(this.sql.receive, params);
      } finally {
        if (ticket) this.notifier.settle(ticket, received?.same_command === null);
      }
      if (received?.same_command === null) {
        if (announce && !ticket) this.notifier.notify();
        return { entry: this.newEntry(received.id, incoming, received.received_at!), duplicate: false };
      }
      // No row: a concurrent receive committed this messageId after the statement's snapshot.
      const stored = received ? storedFrom(received, incoming.payloadJson) : (await query<StoredRow>(this.sql.selectByMessageIdWithMatch, params.slice(0, 3)))[0];
      // Still none: that entry was deleted meanwhile, so storing again is correct.
      if (!stored) continue;
      if (!stored.same_command) throw new IdempotencyConflictError(incoming.messageId, stored.id);
      return { entry: toEntry(stored), duplicate: true };
    }
  }

  /** The entry just inserted, built from what was stored (the statement returns only its id). */
  private newEntry(id: string, incoming: ValidatedCommand, receivedAt: Date): InboxEntry {
    return toEntry({
      id,
      message_id: incoming.messageId,
      command_type: incoming.commandType,
      payload: JSON.parse(incoming.payloadJson) as Record<string, unknown>,
      status: InboxStatus.Pending,
      retry_count: 0,
      max_attempts: null,
      next_retry_at: null,
      error: null,
      last_outcome: null,
      received_at: receivedAt,
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
    });
  }

  /**
   * Runs `work` on a pool connection of its own (node-postgres directly: this is the hot path),
   * failing with InboxUnavailableError when the database is unreachable or silent for
   * `receiveTimeoutMs`; a timed-out connection is destroyed, which makes the server roll back
   * whatever the statement had not committed.
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
        else reject(this.asUnavailable(error));
      };
      pool
        .connect()
        .then(
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
            reject(this.asUnavailable(error));
          },
        );
    });
  }

  /**
   * Runs an operator's statement on a pool connection of its own. After the application closed
   * (or while it closes its pool) that is an InboxShutDownError, never a driver's TypeError.
   */
  private async query<T = InboxRow>(sql: string, params: unknown[]): Promise<QueryOutcome<T>> {
    this.assertOpen();
    try {
      return await runQuery<T>(this.dataSource, sql, params);
    } catch (error) {
      throw this.asUnavailable(error);
    }
  }

  private assertOpen(): void {
    if (!this.dataSource.isInitialized) throw new InboxShutDownError();
  }

  /** Connection failures become InboxUnavailableError (InboxShutDownError once the pool is closing); anything else stays as it is. */
  private asUnavailable(error: unknown): unknown {
    if (error instanceof InboxUnavailableError) return error;
    if (!this.dataSource.isInitialized || /pool after calling end|Client was closed/i.test((error as Error)?.message ?? '')) return new InboxShutDownError();
    if (!isConnectionError(error)) return error;
    return new InboxUnavailableError((error as Error).message, { cause: error });
  }

  async get(id: string): Promise<InboxEntry | null> {
    this.assertUuid('id', id);
    const { rows } = await this.query(this.sql.selectById, [id]);
    return rows[0] ? toEntry(rows[0]) : null;
  }

  async findByMessageId(messageId: string): Promise<InboxEntry | null> {
    this.assertBoundedString('messageId', messageId, MAX_MESSAGE_ID_LENGTH);
    const { rows } = await this.query(this.sql.selectByMessageId, [messageId]);
    return rows[0] ? toEntry(rows[0]) : null;
  }

  /** Entries, newest first, filtered by status, command type, dead-letter reason, error text, received time. */
  async list(query: ListEntriesQuery = {}): Promise<InboxEntry[]> {
    const filter = this.validateFilter('query', query);
    const limit = query.limit ?? DEFAULT_LIST_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      throw new InboxArgumentError('query.limit', `expected an integer from 1 to ${MAX_LIST_LIMIT}`);
    }
    const { sql, params } = this.sql.list(filter, limit);
    const { rows } = await this.query(sql, params);
    return rows.map(toEntry);
  }

  /** Number of entries matching a filter. */
  async count(filter: EntryFilter = {}): Promise<number> {
    const { sql, params } = this.sql.count(this.validateFilter('filter', filter));
    const { rows } = await this.query<{ count: number }>(sql, params);
    return rows[0].count;
  }

  /** Number of entries in each status (every status present, zero when empty). */
  async countByStatus(): Promise<Record<InboxStatus, number>> {
    const counts = Object.fromEntries(INBOX_STATUSES.map((status) => [status, 0])) as Record<InboxStatus, number>;
    const { rows } = await this.query<{ status: InboxStatus; count: number }>(this.sql.countByStatus, []);
    for (const row of rows) counts[row.status] = row.count;
    return counts;
  }

  /**
   * What is due now, by command type: how many entries and since when the oldest waits. A type no
   * running worker handles stays here (workers only claim the types they have handlers for).
   */
  async dueByCommandType(): Promise<DueCommandType[]> {
    const { rows } = await this.query<{ command_type: string; due: number; oldest_due_at: Date }>(this.sql.dueByCommandType, [
      clockTime(this.options.clock),
    ]);
    return rows.map((row) => ({ commandType: row.command_type, due: row.due, oldestDueAt: row.oldest_due_at }));
  }

  /** Every attempt and operator action recorded for an entry, oldest first. */
  async history(id: string): Promise<InboxHistoryRecord[]> {
    this.assertUuid('id', id);
    const [{ rows }, entry] = await Promise.all([this.query<HistoryRow>(this.sql.selectHistory, [id]), this.get(id)]);
    if (!entry) throw new InboxEntryNotFoundError(id);
    const history = rows.map(toHistoryRecord);
    const completed = completedAttemptOf(entry);
    return completed ? [...history, completed] : history;
  }

  /**
   * Sends a DeadLetter or Failed entry back to Pending with retryCount 0, recording who asked and
   * why. The messageId is kept, so deduplication still holds. A corrected `payload` replaces the
   * stored one (the old one is kept in the history) once it passes the handler's validation.
   */
  async replay(id: string, options: ReplayOptions = {}): Promise<InboxEntry> {
    this.assertUuid('id', id);
    const audit = this.validateAudit('options', options, false);
    let payloadJson: string | null = null;
    if (options.payload !== undefined) {
      payloadJson = this.toJsonObject('options.payload', options.payload, true);
      await this.validateCorrectedPayload(id, options.payload);
    }
    const { rows } = await this.query(this.sql.replay, [id, payloadJson, audit.actor, audit.reason, clockTime(this.options.clock)]);
    if (rows[0]) {
      this.wakeWorkers();
      return toEntry(rows[0]);
    }
    throw await this.stateError(id, 'replay', [InboxStatus.DeadLetter, InboxStatus.Failed]);
  }

  /**
   * Replays every entry that matches `filter` (DeadLetter by default; discarded ones never), in
   * batches of short statements that skip rows others hold, so the table is never locked as a
   * whole. With `dryRun` nothing changes and `matched` tells how many would be replayed.
   */
  async replayMany(filter: ReplayFilter, options: BulkReplayOptions): Promise<BulkReplayResult> {
    const validated = this.validateFilter('filter', filter ?? {});
    const status = validated.status ?? InboxStatus.DeadLetter;
    if (status !== InboxStatus.DeadLetter && status !== InboxStatus.Failed) {
      throw new InboxArgumentError('filter.status', 'only dead_letter or failed entries can be replayed');
    }
    const scope: EntryFilter = { ...validated, status, includeDiscarded: false };
    const audit = this.validateAudit('options', options, true);
    const batchSize = options.batchSize ?? 500;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) {
      throw new InboxArgumentError('options.batchSize', 'expected an integer from 1 to 10000');
    }
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
      throw new InboxArgumentError('options.onProgress', 'expected a function');
    }
    const matched = await this.count(scope);
    if (options.dryRun) return { matched, replayed: 0, dryRun: true };
    const { sql, params } = this.sql.replayBatch(scope);
    let replayed = 0;
    let afterId = '00000000-0000-0000-0000-000000000000';
    for (;;) {
      const { rows } = await this.query<{ id: string }>(sql, [...params, afterId, batchSize, audit.actor, audit.reason, clockTime(this.options.clock)]);
      replayed += rows.length;
      options.onProgress?.(replayed, matched);
      if (rows.length < batchSize) break;
      afterId = rows[rows.length - 1].id;
    }
    if (replayed > 0) this.wakeWorkers();
    return { matched, replayed, dryRun: false };
  }

  /** Closes a DeadLetter entry without running it; it stays (discardedAt set) for deduplication and audit. */
  async discard(id: string, options: OperatorAction): Promise<InboxEntry> {
    this.assertUuid('id', id);
    const audit = this.validateAudit('options', options, true);
    const { rows } = await this.query(this.sql.discard, [id, clockTime(this.options.clock), audit.actor, audit.reason]);
    if (rows[0]) return toEntry(rows[0]);
    throw await this.stateError(id, 'discard', ['dead_letter (not yet discarded)']);
  }

  /** Dead-letters a Pending or Failed entry by hand (reason `manual`), so that it will not run. */
  async deadLetter(id: string, options: OperatorAction): Promise<InboxEntry> {
    this.assertUuid('id', id);
    const audit = this.validateAudit('options', options, true);
    const { rows } = await this.query(this.sql.deadLetter, [id, clockTime(this.options.clock), audit.actor, audit.reason]);
    if (!rows[0]) throw await this.stateError(id, 'dead-letter', [InboxStatus.Pending, InboxStatus.Failed]);
    const entry = toEntry(rows[0]);
    this.events.emit({ type: 'dead_letter', entry, reason: DeadLetterReason.Manual, error: entry.error });
    return entry;
  }

  private async stateError(id: string, operation: string, allowed: string[]): Promise<Error> {
    const current = await this.get(id);
    if (!current) return new InboxEntryNotFoundError(id);
    const status = current.discardedAt ? `${current.status} (discarded)` : current.status;
    return new InvalidEntryStateError(id, status, operation, allowed);
  }

  /** A corrected payload must pass the handler's own validation before it replaces the stored one. */
  private async validateCorrectedPayload(id: string, payload: Record<string, unknown>): Promise<void> {
    const entry = await this.get(id);
    if (!entry) throw new InboxEntryNotFoundError(id);
    const handler = this.explorer.get(entry.commandType);
    if (!handler) {
      throw new InboxArgumentError(
        'options.payload',
        `no handler for "${entry.commandType}" in this application to validate the corrected payload; replay it from a worker instance`,
      );
    }
    await materializeCommand(entry.commandType, payload, handler.payloadClass, handler.payloadValidation);
  }

  private validateAudit(name: string, options: unknown, actorRequired: boolean): { actor: string | null; reason: string | null } {
    if (typeof options !== 'object' || options === null) throw new InboxArgumentError(name, 'expected an object');
    const { actor, reason } = options as { actor?: unknown; reason?: unknown };
    if (actor === undefined && !actorRequired) return { actor: null, reason: this.optionalText(`${name}.reason`, reason) };
    return {
      actor: this.assertBoundedString(`${name}.actor`, actor, 255),
      reason: this.optionalText(`${name}.reason`, reason),
    };
  }

  private optionalText(name: string, value: unknown): string | null {
    if (value === undefined || value === null) return null;
    return this.assertBoundedString(name, value, 2000);
  }

  private validateFilter(name: string, filter: EntryFilter): EntryFilter {
    if (typeof filter !== 'object' || filter === null) throw new InboxArgumentError(name, 'expected an object');
    const validated: EntryFilter = {};
    if (filter.status !== undefined) {
      if (!INBOX_STATUSES.includes(filter.status)) throw new InboxArgumentError(`${name}.status`, `expected one of ${INBOX_STATUSES.join(', ')}`);
      validated.status = filter.status;
    }
    if (filter.commandType !== undefined) validated.commandType = this.assertBoundedString(`${name}.commandType`, filter.commandType, MAX_COMMAND_TYPE_LENGTH);
    if (filter.deadLetterReason !== undefined) {
      if (!DEAD_LETTER_REASONS.includes(filter.deadLetterReason)) {
        throw new InboxArgumentError(`${name}.deadLetterReason`, `expected one of ${DEAD_LETTER_REASONS.join(', ')}`);
      }
      validated.deadLetterReason = filter.deadLetterReason;
    }
    if (filter.errorContains !== undefined) validated.errorContains = this.assertBoundedString(`${name}.errorContains`, filter.errorContains, 1000);
    for (const key of ['receivedAfter', 'receivedBefore'] as const) {
      const value = filter[key];
      if (value === undefined) continue;
      if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw new InboxArgumentError(`${name}.${key}`, 'expected a valid Date');
      if (value.getTime() < EARLIEST_TIMESTAMP) throw new InboxArgumentError(`${name}.${key}`, 'is before 4714 BC, the earliest time PostgreSQL stores');
      validated[key] = value;
    }
    if (filter.includeDiscarded !== undefined) {
      if (typeof filter.includeDiscarded !== 'boolean') throw new InboxArgumentError(`${name}.includeDiscarded`, 'expected true or false');
      validated.includeDiscarded = filter.includeDiscarded;
    }
    return validated;
  }

  private validateIncoming(command: IncomingCommand): ValidatedCommand {
    if (typeof command !== 'object' || command === null || Array.isArray(command)) {
      throw new InboxArgumentError('command', 'expected an object with messageId, commandType and payload');
    }
    const messageId = this.assertBoundedString('command.messageId', command.messageId, MAX_MESSAGE_ID_LENGTH);
    const commandType = this.assertBoundedString('command.commandType', command.commandType, MAX_COMMAND_TYPE_LENGTH);
    if (!this.options.acceptUnknownCommandTypes && !this.explorer.get(commandType)) {
      throw new UnknownCommandTypeError(commandType);
    }
    const payloadJson = this.toJsonObject('command.payload', command.payload, true);
    const metadataJson = this.toJsonObject('command.metadata', command.metadata ?? {}, false);
    return {
      messageId,
      commandType,
      payloadJson,
      metadataJson,
      correlationId: this.optionalId('command.correlationId', command.correlationId),
      causationId: this.optionalId('command.causationId', command.causationId),
    };
  }

  private validateReceiveOptions(options: ReceiveOptions): EntityManager | undefined {
    if (typeof options !== 'object' || options === null) throw new InboxArgumentError('options', 'expected an object');
    const { manager } = options;
    if (manager === undefined) return undefined;
    if (!(manager instanceof EntityManager)) {
      throw new InboxArgumentError('options.manager', 'expected a TypeORM EntityManager');
    }
    if (manager.connection !== this.dataSource) {
      throw new InboxArgumentError('options.manager', "belongs to another data source than the inbox's");
    }
    return manager;
  }

  /**
   * A non-empty string PostgreSQL stores as it is: well-formed Unicode (a lone surrogate would be
   * stored as U+FFFD, so two different keys would collapse into one), no NUL, at most `max`
   * characters as the column counts them (code points, not UTF-16 units).
   */
  private assertBoundedString(name: string, value: unknown, max: number): string {
    if (typeof value !== 'string') throw new InboxArgumentError(name, `expected a string, got ${describeType(value)}`);
    if (value.length === 0) throw new InboxArgumentError(name, 'must not be empty');
    if (!isWellFormed(value)) throw new InboxArgumentError(name, 'must be well-formed Unicode (it contains a lone surrogate)');
    const length = characterCount(value);
    if (length > max) throw new InboxArgumentError(name, `must be at most ${max} characters (got ${length})`);
    if (value.includes('\u0000')) throw new InboxArgumentError(name, 'must not contain NUL characters');
    return value;
  }

  private optionalId(name: string, value: unknown): string | null {
    if (value === undefined || value === null) return null;
    return this.assertBoundedString(name, value, MAX_CORRELATION_ID_LENGTH);
  }

  private assertUuid(name: string, value: unknown): void {
    if (typeof value !== 'string' || !UUID_PATTERN.test(value)) {
      throw new InboxArgumentError(name, `expected a UUID, got ${describeType(value)}`);
    }
  }

  /** Serialises a plain JSON object, rejecting what jsonb or the size limit would refuse. */
  private toJsonObject(name: string, value: unknown, required: boolean): string {
    if (value === undefined && !required) return '{}';
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new InboxArgumentError(name, `expected a JSON object, got ${describeType(value)}`);
    }
    let json: string;
    try {
      json = JSON.stringify(value);
    } catch (error) {
      throw new InboxArgumentError(name, `is not JSON-serialisable (${(error as Error).message})`);
    }
    if (!json.startsWith('{')) throw new InboxArgumentError(name, 'must serialise to a JSON object');
    if (Buffer.byteLength(json, 'utf8') > this.options.maxPayloadBytes) {
      throw new InboxArgumentError(name, `is larger than maxPayloadBytes (${this.options.maxPayloadBytes} bytes of JSON)`);
    }
    if (ESCAPED_NUL.test(json)) throw new InboxArgumentError(name, 'must not contain NUL characters (jsonb rejects them)');
    if (ESCAPED_LONE_SURROGATE.test(json)) throw new InboxArgumentError(name, 'must be well-formed Unicode: a string or key in it holds a lone surrogate');
    return json;
  }
}

/** Runs one statement and returns its rows. */
type RunStatement = <R>(sql: string | Statement, params: unknown[]) => Promise<R[]>;

type StoredRow = InboxRow & { same_command: boolean };

/** What the receive statement returns: `same_command` and `stored` are null for a new entry. */
interface ReceivedRow {
  id: string;
  received_at: Date | null;
  same_command: boolean | null;
  stored: Record<string, unknown> | null;
}

interface ValidatedCommand {
  messageId: string;
  commandType: string;
  payloadJson: string;
  metadataJson: string;
  correlationId: string | null;
  causationId: string | null;
}

/**
 * The stored entry of a duplicate, from the receive statement's jsonb column. Its payload was not
 * sent back: when the command is the same it equals the incoming one (jsonb equality), unless
 * retention removed it.
 */
function storedFrom(received: ReceivedRow, incomingPayloadJson: string): StoredRow {
  const stored = received.stored!;
  stored.payload = stored.payload_removed ? null : JSON.parse(incomingPayloadJson);
  stored.same_command = received.same_command;
  return rowFromJson(stored) as StoredRow;
}

/**
 * The attempt that completed an entry, which is kept on the entry row (Completed is final, so it
 * can never change) rather than in the history table.
 */
function completedAttemptOf(entry: InboxEntry): InboxHistoryRecord | undefined {
  if (entry.status !== InboxStatus.Completed || !entry.processedAt || !entry.processingStartedAt) return undefined;
  return {
    id: `${entry.id}:completed`,
    entryId: entry.id,
    event: HistoryEvent.Attempt,
    attempt: entry.retryCount + 1,
    outcome: AttemptOutcome.Completed,
    startedAt: entry.processingStartedAt,
    finishedAt: entry.processedAt,
    durationMs: Math.max(0, entry.processedAt.getTime() - entry.processingStartedAt.getTime()),
    errorClass: null,
    errorMessage: null,
    errorStack: null,
    workerId: entry.processedBy,
    actor: null,
    reason: null,
    previousPayload: null,
    recordedAt: entry.processedAt,
  };
}

function ignoreError(): void {}

function isWellFormed(value: string): boolean {
  return (value as string & { isWellFormed(): boolean }).isWellFormed();
}

/** Code points of a well-formed string: its UTF-16 length less one per surrogate pair. */
function characterCount(value: string): number {
  let count = value.length;
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code >= 0xd800 && code <= 0xdbff) count--;
  }
  return count;
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return value.length > 40 ? `"${value.slice(0, 40)}…"` : JSON.stringify(value);
  return typeof value;
}
