import { Inject, Injectable } from '@nestjs/common';
import type { DataSource, EntityManager } from 'typeorm';
import { isDeepStrictEqual } from 'node:util';
import { IdempotencyConflictError, InboxArgumentError, InboxError, InboxPoolExhaustedError, InboxUnavailableError } from '../errors/inbox.error';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ReceiveManyResult, ReceiveResult } from '../interfaces/inbox-command.interface';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { InboxStatus } from '../state/inbox-state-machine';
import { pgPoolOf, runQuery } from '../store/connection';
import { withDeadline, type RunStatement } from '../store/deadline';
import { clockTime } from '../store/database-clock';
import { asInboxError } from '../store/database-errors';
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

  /**
   * Stores a batch on one connection (in the caller's transaction, or in one of its own when all or
   * nothing is asked for), bounded by `receiveTimeoutMs`: the commands without an ordering key in
   * one statement, those with one each by its key's statement (their places need the key's row),
   * in the order given. A messageId
   * given twice is stored once, the repeat answered as a duplicate or a conflict of the first (a
   * repeat that differs from a first one the stored entry refused is asked of the database itself:
   * it may be the stored command).
   * `commands`: validated commands, or the error that refused each invalid one.
   */
  async receiveMany(commands: Array<ValidatedCommand | InboxError>, manager: EntityManager | undefined, allOrNothing: boolean): Promise<ReceiveManyResult[]> {
    const results: ReceiveManyResult[] = [];
    const firstOf = new Map<string, number>();
    const toStore: number[] = [];
    commands.forEach((command, index) => {
      if (command instanceof InboxError) results[index] = { index, status: 'invalid', error: command };
      else if (firstOf.has(command.messageId)) return;
      else {
        firstOf.set(command.messageId, index);
        toStore.push(index);
      }
    });
    if (allOrNothing) {
      // A messageId given twice for two different commands: refused before anything is stored.
      commands.forEach((command, index) => {
        if (command instanceof InboxError || firstOf.get(command.messageId) === index) return;
        const first = commands[firstOf.get(command.messageId)!] as ValidatedCommand;
        if (!sameCommand(command, first)) {
          throw new InboxArgumentError(`commands[${index}].messageId`, `is the messageId of commands[${firstOf.get(command.messageId)}] too, which is another command`);
        }
      });
    }
    const types = new Set(toStore.map((index) => (commands[index] as ValidatedCommand).commandType));
    const store = (trace: StoredTraceContext | null) => this.storeMany(commands as ValidatedCommand[], toStore, results, manager, allOrNothing, trace, firstOf);
    try {
      if (toStore.length > 0) await this.tracing.sendBatch(types.size === 1 ? [...types][0] : null, toStore.length, store);
    } catch (error) {
      // Only the commands that conflicted are conflicts; the rest were refused with them (all or nothing) or by the error.
      for (const index of toStore) this.metrics.received((commands[index] as ValidatedCommand).commandType, results[index]?.status === 'conflict' ? 'conflict' : 'error');
      throw error;
    }
    // Repeats within the batch answer as the first of their messageId did.
    commands.forEach((command, index) => {
      if (command instanceof InboxError || results[index] !== undefined) return;
      results[index] = repeatOf(command, index, commands[firstOf.get(command.messageId)!] as ValidatedCommand, results[firstOf.get(command.messageId)!]);
    });
    for (const [index, result] of results.entries()) {
      if (result.status !== 'invalid') this.metrics.received((commands[index] as ValidatedCommand).commandType, result.status);
    }
    return results;
  }

  private async storeMany(
    commands: ValidatedCommand[],
    indexes: number[],
    results: ReceiveManyResult[],
    manager: EntityManager | undefined,
    allOrNothing: boolean,
    trace: StoredTraceContext | null,
    firstOf: Map<string, number>,
  ): Promise<void> {
    // Whether the statements run inside a transaction (the caller's, or all or nothing's): a key left
    // busy is then settled within it, else in a transaction of its own that holds the key's lock.
    const inTransaction = manager?.queryRunner !== undefined || allOrNothing;
    const work = async (query: RunStatement) => {
      await this.storeKeyless(query, commands, indexes.filter((index) => commands[index].orderingKey === null), results, trace, inTransaction);
      const keyed = indexes.filter((i) => commands[i].orderingKey !== null);
      // In a transaction each key's row stays locked until it ends: lock them all first, in key
      // order (as hand-overs do), so that two batches naming keys in another order cannot deadlock
      // (a key new to the table gets its row here, free, as a hand-over would give it).
      if (inTransaction && keyed.length > 0) await query(this.sql.lockKeys, [[...new Set(keyed.map((i) => commands[i].orderingKey!))]]);
      for (const index of keyed) results[index] = await this.storeOne(query, commands[index], index, trace, inTransaction);
      // A repeat of a messageId whose first command conflicted may be the stored command itself: the database says.
      for (const [index, command] of commands.entries()) {
        if (command instanceof InboxError || results[index] !== undefined) continue;
        const first = firstOf.get(command.messageId)!;
        if (results[first]?.status === 'conflict' && !sameCommand(command, commands[first])) results[index] = await this.storeOne(query, command, index, trace, inTransaction);
      }
      const conflict = allOrNothing ? indexes.map((index) => results[index]).find((result) => result.status === 'conflict') : undefined;
      if (conflict && 'error' in conflict) throw conflict.error;
    };
    const queryRunner = manager?.queryRunner;
    if (queryRunner) {
      const query: RunStatement = async (sql, params) => (await runQuery(queryRunner, sql, params)).rows as never[];
      // Inside the caller's transaction, all or nothing takes back only what this call stored (a
      // savepoint); on the caller's connection outside one, it opens its own.
      const [open, undo, close] = queryRunner.isTransactionActive
        ? ['SAVEPOINT inbox_receive_many', 'ROLLBACK TO SAVEPOINT inbox_receive_many', 'RELEASE SAVEPOINT inbox_receive_many']
        : ['BEGIN', 'ROLLBACK', 'COMMIT'];
      if (allOrNothing) await query(open, []);
      try {
        await work(query);
      } catch (error) {
        if (allOrNothing) await query(undo, []).catch(() => undefined);
        throw asInboxError(error, this.dataSource);
      }
      if (allOrNothing) await query(close, []);
      return;
    }
    try {
      await this.withTimeout(async (query) => {
        // Each statement stores its commands whole, as a receive does; only all or nothing needs
        // them to commit together.
        if (!allOrNothing) return work(query);
        await query('BEGIN', []);
        try {
          await work(query);
          await query('COMMIT', []);
        } catch (error) {
          await query('ROLLBACK', []).catch(() => undefined);
          throw error;
        }
      });
    } catch (error) {
      // Without all or nothing, statements that ran before the failure stored their commands (and a
      // timed-out one may have): announce them (a spare wake-up costs one claim that finds nothing).
      if (!allOrNothing || error instanceof InboxUnavailableError) this.announce();
      throw error;
    }
    if (indexes.some((index) => results[index]?.status === 'new')) this.announce();
  }

  /** The commands without a key in one statement; the ones stored already are looked up in a second. */
  private async storeKeyless(
    query: RunStatement,
    commands: ValidatedCommand[],
    indexes: number[],
    results: ReceiveManyResult[],
    trace: StoredTraceContext | null,
    inTransaction: boolean,
  ): Promise<void> {
    if (indexes.length === 0) return;
    const column = <K extends keyof ValidatedCommand>(key: K) => indexes.map((index) => commands[index][key]);
    const rows = await query<{ n: number; id: string | null; received_at: Date | null }>(this.sql.receiveMany, [
      column('messageId'),
      column('commandType'),
      jsonArray(column('payloadJson')),
      column('correlationId'),
      column('causationId'),
      jsonArray(column('metadataJson')),
      clockTime(this.options.clock),
      indexes.map(() => trace?.traceParent ?? null),
      indexes.map(() => trace?.traceState ?? null),
    ]);
    const stored: number[] = [];
    for (const row of rows) {
      const index = indexes[row.n - 1];
      if (row.id === null) stored.push(index);
      else results[index] = { index, status: 'new', entry: newEntry({ id: row.id, received_at: row.received_at, same_command: null, stored: null }, commands[index], trace) };
    }
    if (stored.length === 0) return;
    const found = await query<StoredRow & { n: number }>(this.sql.selectManyByMessageIdWithMatch, [
      stored.map((index) => commands[index].messageId),
      stored.map((index) => commands[index].commandType),
      jsonArray(stored.map((index) => commands[index].payloadJson)),
      stored.map(() => null),
    ]);
    for (const row of found) {
      const index = stored[row.n - 1];
      results[index] = row.same_command
        ? { index, status: 'duplicate', entry: toEntry(row) }
        : { index, status: 'conflict', error: new IdempotencyConflictError(commands[index].messageId, row.id) };
    }
    // Neither inserted nor found: stored by a concurrent receive after the statement's snapshot (or
    // deleted since); the single receive's path sorts it out.
    for (const index of stored.filter((i) => results[i] === undefined)) results[index] = await this.storeOne(query, commands[index], index, trace, inTransaction);
  }

  /** One command of a batch by the single receive's statement (in the batch's transaction, if any): its result. */
  private async storeOne(query: RunStatement, command: ValidatedCommand, index: number, trace: StoredTraceContext | null, inTransaction: boolean): Promise<ReceiveManyResult> {
    try {
      const { entry, duplicate } = await this.store(query, command, trace, false, inTransaction);
      return { index, status: duplicate ? 'duplicate' : 'new', entry };
    } catch (error) {
      if (!(error instanceof IdempotencyConflictError)) throw error;
      return { index, status: 'conflict', error };
    }
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
    for (let misses = 0; ; misses++) {
      // A keyed receive that stored nothing and found nothing twice in a row was refused a second
      // holder by a key whose row says it is free: set the row right from the entries, then retry.
      if (keyed && misses >= 2) await this.settleKey(query, incoming.orderingKey!, inCallersTransaction);
      // Taken with the connection in hand, right before the statement goes: it commits one round trip later.
      const ticket = announce ? this.notifier.takeInline() : undefined;
      let rows: ReceivedRow[] = [];
      try {
        rows = ticket ? await query<ReceivedRow>(notifying, [...params, ticket.channel]) : await query<ReceivedRow>(plain, params);
      } finally {
        if (ticket) this.notifier.settle(ticket, rows.some((row) => row.same_command === null));
      }
      const received = rows[0];
      if (received?.same_command === null) {
        if (announce && !ticket) this.notifier.notify();
        return { entry: newEntry(received, incoming, trace), duplicate: false };
      }
      // No row: a concurrent receive committed this messageId after the statement's snapshot (or,
      // with a key, took the key's first place: see receiveKeyed).
      const lookup = [incoming.messageId, incoming.commandType, incoming.payloadJson, incoming.orderingKey];
      const stored = received ? storedFrom(received, incoming.payloadJson) : (await query<StoredRow>(this.sql.selectByMessageIdWithMatch, lookup))[0];
      // Still none: that entry was deleted meanwhile, so storing again is correct.
      if (!stored) continue;
      if (!stored.same_command) throw new IdempotencyConflictError(incoming.messageId, stored.id);
      return { entry: toEntry(stored), duplicate: true };
    }
  }

  /** Sets a key's row right from its entries (frees it, or hands it to its earliest waiting entry). */
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
   * Runs `work` on a pool connection of its own, failing with InboxUnavailableError when the
   * database is unreachable or silent for `receiveTimeoutMs` (InboxPoolExhaustedError when the
   * pool had no connection to give); see withDeadline.
   */
  private withTimeout<T>(work: (query: RunStatement) => Promise<T>): Promise<T> {
    const timeoutMs = this.options.receiveTimeoutMs;
    const timedOut = (exhausted: boolean) =>
      exhausted ? new InboxPoolExhaustedError(pgPoolOf(this.dataSource).options.max, timeoutMs) : new InboxUnavailableError(`no answer within receiveTimeoutMs (${timeoutMs} ms)`);
    return withDeadline(this.dataSource, timeoutMs, timedOut, work);
  }
}

type StoredRow = InboxRow & { same_command: boolean };

/**
 * What the receive statement returns: `same_command` and `stored` are null for a new entry. With an
 * ordering key, a new entry also comes back with its place and whether it waits.
 */
interface ReceivedRow {
  id: string;
  received_at: Date | null;
  same_command: boolean | null;
  stored: Record<string, unknown> | null;
  ordering_seq?: string | null;
  waiting?: boolean | null;
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

/**
 * A messageId repeated within a batch: a duplicate of the first when it is the same command (type,
 * key, payload), else a conflict with what the first stored (or with what the first conflicted with).
 */
function repeatOf(command: ValidatedCommand, index: number, first: ValidatedCommand, firstResult: ReceiveManyResult): ReceiveManyResult {
  const same = sameCommand(command, first);
  if ('entry' in firstResult) {
    return same ? { index, status: 'duplicate', entry: firstResult.entry } : { index, status: 'conflict', error: new IdempotencyConflictError(command.messageId, firstResult.entry.id) };
  }
  return { index, status: 'conflict', error: firstResult.error };
}

/** The same command: type, ordering key and payload (its keys in any order), as the receive statement compares them. */
function sameCommand(a: ValidatedCommand, b: ValidatedCommand): boolean {
  return a.commandType === b.commandType && a.orderingKey === b.orderingKey && isDeepStrictEqual(JSON.parse(a.payloadJson), JSON.parse(b.payloadJson));
}

/** JSON texts as one JSON array: the statement takes them apart (an array literal would escape each). */
function jsonArray(texts: string[]): string {
  return `[${texts.join(',')}]`;
}

