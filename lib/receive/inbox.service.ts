import { Inject, Injectable } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { InboxExplorer } from '../discovery/inbox.explorer';
import { materializeCommand } from '../discovery/payload-materializer';
import { describeError } from '../errors/describe-error';
import { BulkCountChangedError, InboxArgumentError, InboxEntryNotFoundError, InboxError, InvalidEntryStateError } from '../errors/inbox.error';
import { DEFAULT_LIST_LIMIT, INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS, MAX_LIST_LIMIT, MAX_MESSAGE_ID_LENGTH, MAX_RECEIVE_MANY, MAX_RECEIVE_MANY_JSON_LENGTH } from '../inbox.constants';
import type {
  BlockedKey,
  BlockedKeysQuery,
  BulkDiscardOptions,
  BulkDiscardResult,
  BulkReplayOptions,
  BulkReplayResult,
  DeadLetterGroup,
  DeadLetterGroupsQuery,
  DueCommandType,
  InboxStats,
  IncomingCommand,
  ListEntriesQuery,
  OperatorAction,
  ReceiveManyOptions,
  ReceiveManyResult,
  ReceiveOptions,
  ReceiveResult,
  ReplayFilter,
  ReplayOptions,
} from '../interfaces/inbox-command.interface';
import type { InboxHistoryRecord } from '../interfaces/inbox-history.interface';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { OutcomeWriter } from '../outcomes/outcome-writer';
import { acceptedStatuses, AttemptOutcome, HistoryEvent, INBOX_STATUSES, InboxStatus, OPERATOR_ACTIONS } from '../state/inbox-state-machine';
import { runQuery, type QueryOutcome } from '../store/connection';
import { clockTime } from '../store/database-clock';
import { asInboxError, assertOpen } from '../store/database-errors';
import type { EntryFilter } from '../store/entry-filter';
import type { InboxEntry } from '../store/inbox-entry.entity';
import { toEntry, toHistoryRecord, type HistoryRow, type InboxRow } from '../store/schema';
import { InboxStatements } from '../store/statements';
import {
  assertUuid,
  boundedString,
  jsonObject,
  validateAudit,
  validateTypeQuery,
  validateCommand,
  validateFilter,
  validateReceiveOptions,
  type ValidatedCommand,
} from './command-validation';
import { ATTR } from '../telemetry/attributes';
import { InboxTracing } from '../telemetry/inbox-tracing';
import { InboxSnapshots } from '../telemetry/inbox-snapshot';
import { Receiver } from './receiver';

/**
 * What controllers inject: store commands once (`receive`), look them up, and send dead letters
 * back. Every argument is validated first (see command-validation); operator actions are written
 * by the OutcomeWriter, as the worker's outcomes are.
 */
@Injectable()
export class InboxService {

  constructor(
    private readonly sql: InboxStatements,
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly explorer: InboxExplorer,
    private readonly receiver: Receiver,
    private readonly writer: OutcomeWriter,
    private readonly tracing: InboxTracing,
    private readonly snapshots: InboxSnapshots,
  ) {}

  /**
   * Stores the command as a Pending entry, once per messageId. A repeat of the same command
   * returns the stored entry with `duplicate: true`; the same messageId with another command type
   * or payload throws IdempotencyConflictError.
   */
  async receive(command: IncomingCommand, options: ReceiveOptions = {}): Promise<ReceiveResult> {
    const incoming = validateCommand(command, this.commandRules());
    const manager = validateReceiveOptions(options, this.dataSource);
    assertOpen(this.dataSource);
    return this.receiver.receive(incoming, manager);
  }

  /**
   * Stores a batch of commands (a broker consumer's, say): those without an ordering key in one
   * statement, those with one by their keys' statements, on one connection. Each command gets its result, in the order given: `new`,
   * `duplicate`, `conflict` (its messageId was used for another command) or `invalid` (what
   * `receive` would have thrown); one bad command does not refuse the others unless
   * `allOrNothing` asks for it, when the batch is stored in one transaction, or nothing of it and
   * the call throws. Up to 1000 commands.
   */
  async receiveMany(commands: IncomingCommand[], options: ReceiveManyOptions = {}): Promise<ReceiveManyResult[]> {
    if (!Array.isArray(commands)) throw new InboxArgumentError('commands', 'expected an array of commands');
    if (commands.length > MAX_RECEIVE_MANY) throw new InboxArgumentError('commands', `expected at most ${MAX_RECEIVE_MANY} commands, got ${commands.length}`);
    const manager = validateReceiveOptions(options, this.dataSource);
    if (options.allOrNothing !== undefined && typeof options.allOrNothing !== 'boolean') throw new InboxArgumentError('options.allOrNothing', 'expected true or false');
    const rules = this.commandRules();
    // Array.from visits the holes of a sparse array too (as undefined: refused like any non-command).
    const validated = Array.from(commands, (command, index): ValidatedCommand | InboxError => {
      try {
        return validateCommand(command, rules);
      } catch (error) {
        if (!(error instanceof InboxArgumentError)) throw error;
        if (options.allOrNothing) {
          const named = new InboxArgumentError(`commands[${index}]${error.argument.replace(/^command/, '')}`, error.message.replace(/^Invalid argument "[^"]+": /, ''));
          throw Object.assign(named, { cause: error });
        }
        return error;
      }
    });
    // One statement carries the whole batch: keep it well within what a statement may carry.
    const length = validated.reduce((sum, command) => sum + (command instanceof InboxError ? 0 : command.payloadJson.length + command.metadataJson.length), 0);
    if (length > MAX_RECEIVE_MANY_JSON_LENGTH) throw new InboxArgumentError('commands', `expected at most ${MAX_RECEIVE_MANY_JSON_LENGTH} characters of payload and metadata in one batch, got ${length}: send smaller batches`);
    if (commands.length === 0) return [];
    assertOpen(this.dataSource);
    return this.receiver.receiveMany(validated, manager, options.allOrNothing === true);
  }

  async get(id: string): Promise<InboxEntry | null> {
    assertUuid('id', id);
    const { rows } = await this.query(this.sql.selectById, [id]);
    return rows[0] ? toEntry(rows[0]) : null;
  }

  async findByMessageId(messageId: string): Promise<InboxEntry | null> {
    boundedString('messageId', messageId, MAX_MESSAGE_ID_LENGTH);
    const { rows } = await this.query(this.sql.selectByMessageId, [messageId]);
    return rows[0] ? toEntry(rows[0]) : null;
  }

  /** Entries, newest first, filtered by status, command type, dead-letter reason, error text, received time. */
  async list(query: ListEntriesQuery = {}): Promise<InboxEntry[]> {
    const filter = validateFilter('query', query, ['limit', 'after']);
    const limit = query.limit ?? DEFAULT_LIST_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      throw new InboxArgumentError('query.limit', `expected an integer from 1 to ${MAX_LIST_LIMIT}`);
    }
    if (query.after !== undefined) assertUuid('query.after', query.after);
    const after = query.after ?? null;
    const { sql, params } = this.sql.list(filter, limit, after);
    const { rows } = await this.query(sql, params);
    // A page after an entry that is gone (retention removed it) would look like the end of the list.
    if (after !== null && rows.length === 0 && !(await this.get(after))) {
      throw new InboxArgumentError('query.after', `no entry ${after} (removed since the page before was read): start again from the first page`);
    }
    return rows.map(toEntry);
  }

  /**
   * At a glance: entries by status (Completed estimated), the open ones by command type, the
   * oldest due entry's age, the dead letters by reason. Reads only entries that are not completed.
   */
  async stats(): Promise<InboxStats> {
    const [open, due, reasons, snapshot] = await Promise.all([
      this.query<{ command_type: string; status: InboxStatus; count: number }>(this.sql.openByCommandType, []),
      this.dueByCommandType(),
      this.query<{ reason: string; count: number }>(this.sql.deadLettersByReason, []),
      this.guard(() => this.snapshots.read()),
    ]);
    const zero = () => Object.fromEntries(INBOX_STATUSES.map((status) => [status, 0])) as Record<InboxStatus, number>;
    const entries = zero();
    entries[InboxStatus.Completed] = snapshot.entries[InboxStatus.Completed];
    const byType = new Map<string, Record<InboxStatus, number>>();
    for (const row of open.rows) {
      entries[row.status] += row.count;
      if (!byType.has(row.command_type)) byType.set(row.command_type, zero());
      byType.get(row.command_type)![row.status] = row.count;
    }
    const oldest = due.reduce<Date | null>((min, type) => (min === null || type.oldestDueAt < min ? type.oldestDueAt : min), null);
    return {
      entries,
      byCommandType: [...byType].map(([commandType, counts]) => ({ commandType, counts })),
      oldestDueAgeMs: oldest === null ? 0 : Math.max(0, this.options.clock.now().getTime() - oldest.getTime()),
      deadLettersByReason: Object.fromEntries(reasons.rows.map((row) => [row.reason, row.count])),
    };
  }

  /**
   * Dead letters not discarded, grouped by command type and error fingerprint (the error with its
   * ids and numbers masked), the largest group first: replay or discard a group with its
   * `commandType` and `errorFingerprint` as the filter.
   */
  async deadLetterGroups(query: DeadLetterGroupsQuery = {}): Promise<DeadLetterGroup[]> {
    const { commandType, limit } = validateTypeQuery(query);
    const { sql, params } = this.sql.deadLetterGroups(commandType === null ? {} : { commandType }, limit);
    const { rows } = await this.query<{
      command_type: string;
      fingerprint: string;
      count: number;
      reasons: string[];
      first_at: Date;
      last_at: Date;
      example_id: string;
      example_error: string | null;
    }>(sql, params);
    return rows.map((row) => ({
      commandType: row.command_type,
      fingerprint: row.fingerprint,
      count: row.count,
      reasons: row.reasons,
      firstAt: row.first_at,
      lastAt: row.last_at,
      example: { id: row.example_id, error: row.example_error },
    }));
  }

  /** Number of entries matching a filter. */
  async count(filter: EntryFilter = {}): Promise<number> {
    const { sql, params } = this.sql.count(validateFilter('filter', filter));
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

  /**
   * Every attempt and operator action recorded for an entry, oldest first. An entry that waits
   * behind another of its ordering key ends with a `waiting` record saying which one, read now.
   */
  async history(id: string): Promise<InboxHistoryRecord[]> {
    assertUuid('id', id);
    const [{ rows }, entry] = await Promise.all([this.query<HistoryRow>(this.sql.selectHistory, [id]), this.get(id)]);
    if (!entry) throw new InboxEntryNotFoundError(id);
    const history = rows.map(toHistoryRecord);
    const completed = completedAttemptOf(entry);
    if (completed) history.push(completed);
    if (entry.waiting && entry.orderingKey !== null) {
      const [holder] = (await this.query<InboxRow>(this.sql.keyHolder, [entry.orderingKey])).rows;
      history.push(waitingRecordOf(entry, holder ? toEntry(holder) : undefined, this.options.clock.now()));
    }
    return history;
  }

  /**
   * The ordering keys that a dead letter holds (policy `block`), the longest-blocked first, each
   * with that entry and how many entries wait behind it. Replaying or discarding the entry frees
   * the key.
   */
  async blockedKeys(query: BlockedKeysQuery = {}): Promise<BlockedKey[]> {
    const { commandType, limit } = validateTypeQuery(query);
    const { rows } = await this.query<InboxRow & { waiting_behind: number }>(this.sql.blockedKeys, [commandType, limit]);
    return rows.map((row) => ({ orderingKey: row.ordering_key!, blockedBy: toEntry(row), waiting: row.waiting_behind }));
  }

  /**
   * Sends a DeadLetter or Failed entry back to Pending with retryCount 0, recording who asked and
   * why. The messageId is kept, so deduplication still holds. A corrected `payload` replaces the
   * stored one (the old one is kept in the history) once it passes the handler's validation.
   */
  async replay(id: string, options: ReplayOptions = {}): Promise<InboxEntry> {
    assertUuid('id', id);
    const audit = validateAudit('options', options, false, ['actor', 'reason', 'payload']);
    let payloadJson: string | null = null;
    if (options.payload !== undefined) {
      payloadJson = jsonObject('options.payload', options.payload, true, this.options.maxPayloadBytes);
      await this.validateCorrectedPayload(id, options.payload);
    }
    const row = await this.guard(() => this.writer.replay(this.dataSource, id, payloadJson, audit));
    if (!row) throw await this.stateError(id, 'replay');
    this.receiver.announce();
    return toEntry(row);
  }

  /**
   * Replays every entry that matches `filter` (DeadLetter by default; discarded ones never), in
   * batches of short statements that skip rows others hold, so the table is never locked as a
   * whole. With `dryRun` nothing changes and `matched` tells how many would be replayed.
   */
  async replayMany(filter: ReplayFilter, options: BulkReplayOptions): Promise<BulkReplayResult> {
    const validated = validateFilter('filter', filter);
    const status = validated.status ?? InboxStatus.DeadLetter;
    const replayable = OPERATOR_ACTIONS.replay.accepts as readonly InboxStatus[];
    if (!replayable.includes(status)) throw new InboxArgumentError('filter.status', `only ${replayable.join(' or ')} entries can be replayed`);
    const scope: EntryFilter = { ...validated, status, includeDiscarded: false };
    const result = await this.bulk('replay_many', scope, options, this.sql.replayBatch(scope), (ids) => this.writer.replayBatch(this.dataSource, ...ids));
    if (result.changed > 0) this.receiver.announce();
    return { matched: result.matched, replayed: result.changed, dryRun: result.dryRun };
  }

  /**
   * Discards every dead letter that matches `filter` and is not discarded yet, as replayMany
   * replays: in batches, with a dry run and a confirmed count.
   */
  async discardMany(filter: ReplayFilter, options: BulkDiscardOptions): Promise<BulkDiscardResult> {
    const validated = validateFilter('filter', filter);
    if (validated.status !== undefined && validated.status !== InboxStatus.DeadLetter) {
      throw new InboxArgumentError('filter.status', `only ${InboxStatus.DeadLetter} entries can be discarded`);
    }
    const scope: EntryFilter = { ...validated, status: InboxStatus.DeadLetter, includeDiscarded: false };
    const result = await this.bulk('discard_many', scope, options, this.sql.discardBatch(scope), (ids) => this.writer.discardBatch(this.dataSource, ...ids));
    // A discarded dead letter that blocked its key handed it to the next entry.
    if (result.changed > 0) this.receiver.announce();
    return { matched: result.matched, discarded: result.changed, dryRun: result.dryRun };
  }

  /**
   * A bulk action: counts what `scope` matches (all a dry run does), refuses when a confirmed count
   * differs, then runs `batch` (a keyset that continues after the last id of the batch before)
   * until a batch comes back short.
   */
  private async bulk(
    name: string,
    scope: EntryFilter,
    options: BulkReplayOptions | BulkDiscardOptions,
    { sql, params }: { sql: string; params: unknown[] },
    runBatch: (args: [string, unknown[], { actor: string | null; reason: string | null }]) => Promise<string[]>,
  ): Promise<{ matched: number; changed: number; dryRun: boolean }> {
    const audit = validateAudit('options', options, true, ['actor', 'reason', 'dryRun', 'batchSize', 'expectedCount', ...(name === 'replay_many' ? ['onProgress'] : [])]);
    const batchSize = options.batchSize ?? 500;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) {
      throw new InboxArgumentError('options.batchSize', 'expected an integer from 1 to 10000');
    }
    const expected = options.expectedCount;
    if (expected !== undefined && (!Number.isInteger(expected) || expected < 0)) throw new InboxArgumentError('options.expectedCount', 'expected an integer of 0 or more');
    if (options.dryRun !== undefined && typeof options.dryRun !== 'boolean') throw new InboxArgumentError('options.dryRun', 'expected true or false');
    // Checked before the first batch: a bad callback must not stop the action half done.
    const onProgress = (options as BulkReplayOptions).onProgress;
    if (onProgress !== undefined && typeof onProgress !== 'function') throw new InboxArgumentError('options.onProgress', 'expected a function');
    return this.tracing.internal(`nestjs_inbox.${name}`, { [ATTR.actor]: audit.actor ?? '', 'nestjs_inbox.dry_run': options.dryRun === true }, async (record) => {
      const matched = await this.count(scope);
      record({ 'nestjs_inbox.matched': matched });
      if (options.dryRun) return { matched, changed: 0, dryRun: true };
      if (expected !== undefined && expected !== matched) throw new BulkCountChangedError(expected, matched);
      // Never more than were counted (and, confirmed, shown): entries that match only since the
      // count are left for the next action.
      let changed = 0;
      let afterId = '00000000-0000-0000-0000-000000000000';
      while (changed < matched) {
        const size = Math.min(batchSize, matched - changed);
        const ids = await this.guard(() => runBatch([sql, [...params, afterId, size], audit]));
        changed += ids.length;
        onProgress?.(changed, matched);
        if (ids.length < size) break;
        afterId = ids[ids.length - 1];
      }
      record({ [ATTR.count]: changed });
      return { matched, changed, dryRun: false };
    });
  }

  /** Closes a DeadLetter entry without running it; it stays (discardedAt set) for deduplication and audit. */
  async discard(id: string, options: OperatorAction): Promise<InboxEntry> {
    assertUuid('id', id);
    const audit = validateAudit('options', options, true);
    const row = await this.guard(() => this.writer.discard(this.dataSource, id, audit));
    if (!row) throw await this.stateError(id, 'discard');
    // Its key, if it blocked one, went to the next entry: wake the workers for it.
    if (row.ordering_key !== null) this.receiver.announce();
    return toEntry(row);
  }

  /** Dead-letters a Pending or Failed entry by hand (reason `manual`), so that it will not run. */
  async deadLetter(id: string, options: OperatorAction): Promise<InboxEntry> {
    assertUuid('id', id);
    const audit = validateAudit('options', options, true);
    const row = await this.guard(() => this.writer.deadLetter(this.dataSource, id, audit));
    if (!row) throw await this.stateError(id, 'deadLetter');
    // Under policy skip, a holder dead-lettered by hand gave its key to the next entry.
    if (row.ordering_key !== null) this.receiver.announce();
    return toEntry(row);
  }

  /** What a command is checked against: size, known types, the ordering key a handler derives. */
  private commandRules() {
    return {
      maxPayloadBytes: this.options.maxPayloadBytes,
      accepts: (commandType: string) => this.options.acceptUnknownCommandTypes || this.explorer.get(commandType) !== undefined,
      orderingKeyOf: (commandType: string) => this.explorer.get(commandType)?.orderingKey,
    };
  }

  /** Why an operator action changed nothing: the entry is missing, or its status does not allow it. */
  private async stateError(id: string, action: keyof typeof OPERATOR_ACTIONS): Promise<Error> {
    const current = await this.get(id);
    if (!current) return new InboxEntryNotFoundError(id);
    const status = current.discardedAt ? `${current.status} (discarded)` : current.status;
    return new InvalidEntryStateError(id, status, OPERATOR_ACTIONS[action].verb, acceptedStatuses(action));
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
    // An entry keeps its place in its key's order: a correction may not move it to another key.
    if (handler.orderingKey && entry.orderingKey !== null) {
      let derived: unknown;
      try {
        derived = handler.orderingKey(payload);
      } catch (error) {
        derived = `(none: ${describeError(error)})`;
      }
      if (derived !== entry.orderingKey) {
        throw new InboxArgumentError(
          'options.payload',
          `the handler derives ordering key ${JSON.stringify(derived)} from it, but the entry belongs to "${entry.orderingKey}"; a corrected payload must keep the key`,
        );
      }
    }
  }

  /** Runs a statement on a pool connection of its own, with the library's errors (see guard). */
  private query<T = InboxRow>(sql: string, params: unknown[]): Promise<QueryOutcome<T>> {
    return this.guard(() => runQuery<T>(this.dataSource, sql, params));
  }

  /** After the application closed (or while it closes its pool): InboxShutDownError, never a driver's TypeError. */
  private async guard<T>(work: () => Promise<T>): Promise<T> {
    assertOpen(this.dataSource);
    try {
      return await work();
    } catch (error) {
      throw asInboxError(error, this.dataSource);
    }
  }
}

/** Why an entry has not run yet: the entry of its key whose turn it is (none: between two turns). */
function waitingRecordOf(entry: InboxEntry, holder: InboxEntry | undefined, now: Date): InboxHistoryRecord {
  const why = !holder
    ? `waits for its turn behind an earlier entry of ordering key "${entry.orderingKey}"`
    : `waits behind entry ${holder.id} (messageId ${holder.messageId}, ${holder.commandType}), which holds ordering key "${entry.orderingKey}": ${
        holder.status === InboxStatus.DeadLetter
          ? `dead-lettered (${holder.deadLetterReason}); the key is blocked until it is replayed or discarded`
          : holder.status
      }`;
  return {
    id: `${entry.id}:waiting`,
    entryId: entry.id,
    event: HistoryEvent.Waiting,
    attempt: null,
    outcome: null,
    startedAt: null,
    finishedAt: null,
    durationMs: null,
    errorClass: null,
    errorMessage: null,
    errorStack: null,
    workerId: null,
    actor: null,
    reason: why,
    previousPayload: null,
    recordedAt: now,
  };
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
