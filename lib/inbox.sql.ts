import { createHash } from 'node:crypto';
import { QueryFailedError, type DataSource, type QueryRunner } from 'typeorm';
import { InboxEntry } from './entities/inbox-entry.entity';
import { inboxIdentifiers } from './inbox-identifiers';
import { InboxStatus } from './inbox-status.enum';
import type { AttemptOutcome, DeadLetterReason, HistoryEvent, InboxHistoryRecord } from './inbox-history.types';

/** Start of the error the lease sweep records (for people: crash suspects are a stored fact, `last_outcome`). */
export const LEASE_EXPIRED_PREFIX = 'Lease expired';

const COLUMN_NAMES = [
  'id', 'message_id', 'command_type', 'payload', 'status', 'retry_count', 'max_attempts', 'next_retry_at', 'error', 'last_outcome', 'received_at',
  'processed_at', 'processing_started_at', 'processed_by', 'correlation_id', 'causation_id', 'metadata', 'locked_by', 'locked_until', 'lock_token',
  'dead_letter_reason', 'dead_lettered_at', 'discarded_at',
];
const COLUMNS = COLUMN_NAMES.map((name) => `"${name}"`).join(', ');
const columnsOf = (alias: string) => COLUMN_NAMES.map((name) => `${alias}."${name}"`).join(', ');
/**
 * A statement of the hot path. With a name, node-postgres prepares it once per connection and
 * later runs only bind/execute: no parsing or planning per call (the name carries a digest of
 * the text, so two tables or versions never share one).
 */
export interface Statement {
  readonly name?: string;
  readonly text: string;
}

function statement(purpose: string, text: string, prepared: boolean): Statement {
  if (!prepared) return { text };
  return { name: `nestjs_inbox_${purpose}_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`, text };
}

/** A row as node-postgres returns it. */
export interface InboxRow {
  id: string;
  message_id: string;
  command_type: string;
  payload: Record<string, unknown> | null;
  status: InboxStatus;
  retry_count: number;
  max_attempts: number | null;
  next_retry_at: Date | null;
  error: string | null;
  last_outcome: AttemptOutcome | null;
  received_at: Date;
  processed_at: Date | null;
  processing_started_at: Date | null;
  processed_by: string | null;
  correlation_id: string | null;
  causation_id: string | null;
  metadata: Record<string, unknown>;
  locked_by: string | null;
  locked_until: Date | null;
  lock_token: string | null;
  dead_letter_reason: DeadLetterReason | null;
  dead_lettered_at: Date | null;
  discarded_at: Date | null;
}

export function toEntry(row: InboxRow): InboxEntry {
  const entry = new InboxEntry();
  entry.id = row.id;
  entry.messageId = row.message_id;
  entry.commandType = row.command_type;
  entry.payload = row.payload;
  entry.status = row.status;
  entry.retryCount = row.retry_count;
  entry.maxAttempts = row.max_attempts;
  entry.nextRetryAt = row.next_retry_at;
  entry.error = row.error;
  entry.lastOutcome = row.last_outcome;
  entry.receivedAt = row.received_at;
  entry.processedAt = row.processed_at;
  entry.processingStartedAt = row.processing_started_at;
  entry.processedBy = row.processed_by;
  entry.correlationId = row.correlation_id;
  entry.causationId = row.causation_id;
  entry.metadata = row.metadata;
  entry.lockedBy = row.locked_by;
  entry.lockedUntil = row.locked_until;
  entry.lockToken = row.lock_token;
  entry.deadLetterReason = row.dead_letter_reason;
  entry.deadLetteredAt = row.dead_lettered_at;
  entry.discardedAt = row.discarded_at;
  return entry;
}

const TIMESTAMP_COLUMNS = ['next_retry_at', 'received_at', 'processed_at', 'processing_started_at', 'locked_until', 'dead_lettered_at', 'discarded_at'] as const;

/** A row that came back as jsonb without its null columns (timestamps as ISO strings), converted in place. */
export function rowFromJson(json: Record<string, unknown>): InboxRow {
  for (const column of COLUMN_NAMES) json[column] ??= null;
  for (const column of TIMESTAMP_COLUMNS) if (json[column] !== null) json[column] = new Date(json[column] as string);
  return json as unknown as InboxRow;
}

export interface HistoryRow {
  id: string;
  entry_id: string;
  event: HistoryEvent;
  attempt: number | null;
  outcome: AttemptOutcome | null;
  started_at: Date | null;
  finished_at: Date | null;
  duration_ms: number | null;
  error_class: string | null;
  error_message: string | null;
  error_stack: string | null;
  worker_id: string | null;
  actor: string | null;
  reason: string | null;
  previous_payload: Record<string, unknown> | null;
  recorded_at: Date;
}

export function toHistoryRecord(row: HistoryRow): InboxHistoryRecord {
  return {
    id: String(row.id),
    entryId: row.entry_id,
    event: row.event,
    attempt: row.attempt,
    outcome: row.outcome,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    durationMs: row.duration_ms,
    errorClass: row.error_class,
    errorMessage: row.error_message,
    errorStack: row.error_stack,
    workerId: row.worker_id,
    actor: row.actor,
    reason: row.reason,
    previousPayload: row.previous_payload,
    recordedAt: row.recorded_at,
  };
}

/** The filter operators use to find entries (list, count, bulk replay). */
export interface EntryFilter {
  status?: InboxStatus;
  commandType?: string;
  deadLetterReason?: DeadLetterReason;
  /** Case-insensitive substring of the last error. */
  errorContains?: string;
  receivedAfter?: Date;
  receivedBefore?: Date;
  /** false: only dead letters that were not discarded. */
  includeDiscarded?: boolean;
}

/**
 * Time in SQL is the database's: one clock for every instance, whatever their hosts' clocks say.
 * `$n` is an injected test clock's time, NULL in production (see clockTime). `now()` is the
 * statement's time (stable, so an index can serve a comparison with it); `clock_timestamp()` the
 * moment a value is written.
 */
const statementTime = (clock: string) => `COALESCE(${clock}::timestamptz, now())`;
const wallTime = (clock: string) => `COALESCE(${clock}::timestamptz, clock_timestamp())`;
const ms = (value: string) => `(${value} * interval '1 millisecond')`;

/**
 * Every statement the library runs against its tables, parameterised; the table name is the
 * only interpolated part and is checked against a strict identifier pattern at boot. Writing an
 * outcome and its history record is one statement (a data-modifying CTE): no extra round trip.
 */
export class InboxSql {
  readonly receive: Statement;
  readonly receiveAndNotify: Statement;
  readonly selectByMessageIdWithMatch: string;
  readonly selectById: string;
  readonly selectByMessageId: string;
  readonly countByStatus: string;
  readonly dueByCommandType: string;
  readonly unclaimedByCommandType: string;
  readonly selectHistory: string;
  readonly replay: string;
  readonly discard: string;
  readonly deadLetter: string;
  readonly claim: Statement;
  readonly claimSuspects: Statement;
  readonly start: Statement;
  readonly lockClaimed: Statement;
  readonly complete: Statement;
  readonly completeReturning: Statement;
  readonly recordOutcomes: Statement;
  readonly release: string;
  readonly selectExpiredLeases: string;
  readonly anyExpiredLease: Statement;
  readonly anySuspectDue: Statement;
  readonly stripPayloads: string;
  readonly deleteCompleted: string;

  private readonly table: string;
  private readonly history: string;
  private readonly statusType: string;

  /**
   * `recordAttempts`: write a history record with every failed attempt. `prepared`: name the hot-path
   * statements so node-postgres prepares them (off for poolers that cannot keep them).
   */
  constructor(tableName: string, recordAttempts = true, prepared = true) {
    const { table: t, history: h, statusType } = inboxIdentifiers(tableName);
    this.table = t;
    this.history = h;
    this.statusType = statusType;
    const status = (s: InboxStatus) => `'${s}'::${this.statusType}`;
    const due = `COALESCE("next_retry_at", "received_at")`;
    const suspect = `"last_outcome" = 'lease_expired'`;
    // Never NULL (a row with neither payload nor digest is a conflict, not a new entry). The digest
    // is that of the payload as received: after retention removed the payload, or after an
    // operator replaced it with a corrected one, a redelivery of the original still matches.
    const sameCommand = `COALESCE("command_type" = $2 AND ("payload" = $3::jsonb OR "payload_digest" = md5($3::jsonb::text)), false)`;
    const clearClaim = `"locked_by" = NULL, "locked_until" = NULL, "lock_token" = NULL`;
    const resetForReplay = `"status" = ${status(InboxStatus.Pending)}, "retry_count" = 0, "next_retry_at" = NULL, "processed_at" = NULL,
        "processing_started_at" = NULL, "processed_by" = NULL,
        ${clearClaim}, "dead_letter_reason" = NULL, "dead_lettered_at" = NULL, "discarded_at" = NULL`;

    // Receive in one statement: insert, or when the messageId is taken, return the stored entry (as
    // jsonb: three narrow columns parse faster than twenty) and whether it holds the same command.
    // A new entry comes back as its id and receive time, `same_command` NULL: the caller knows the rest.
    // jsonb equality ignores key order and whitespace: the same command re-sent by another client
    // matches. No row at all means a concurrent receive committed the key after this statement's
    // snapshot: look again.
    // $1 messageId, $2 type, $3 payload, $4 correlation, $5 causation, $6 metadata, $7 test clock.
    // The stored entry of a duplicate comes back without its payload: when the command is the same,
    // the stored payload equals the incoming one (jsonb equality), so only whether it was removed
    // comes back. Null columns are left out (fewer keys to parse), metadata is added as it is
    // (stripping nulls would reach inside it).
    const scalarColumns = COLUMN_NAMES.filter((name) => name !== 'payload' && name !== 'metadata').map((name) => `'${name}', "${name}"`);
    const storedColumns = `jsonb_strip_nulls(jsonb_build_object(${scalarColumns.join(', ')}, 'payload_removed', "payload" IS NULL)) || jsonb_build_object('metadata', "metadata")`;
    const receive = (notify: boolean) => `WITH inserted AS (
        INSERT INTO ${t} ("message_id", "command_type", "payload", "correlation_id", "causation_id", "metadata", "received_at")
        VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb, ${statementTime('$7')})
        ON CONFLICT ("message_id") DO NOTHING
        RETURNING "id", "received_at"${notify ? ', pg_notify($8, NULL)' : ''}
      )
      SELECT "id", "received_at", NULL::boolean AS "same_command", NULL::jsonb AS "stored" FROM inserted
      UNION ALL
      SELECT "id", NULL, ${sameCommand}, ${storedColumns}
      FROM ${t} WHERE "message_id" = $1 AND NOT EXISTS (SELECT FROM inserted)`;
    this.receive = statement('receive', receive(false), prepared);
    // The same, also notifying $8 when a new entry was stored (delivered when it commits).
    this.receiveAndNotify = statement('receive_notify', receive(true), prepared);
    this.selectByMessageIdWithMatch = `SELECT ${COLUMNS}, ${sameCommand} AS "same_command" FROM ${t} WHERE "message_id" = $1`;
    this.selectById = `SELECT ${COLUMNS} FROM ${t} WHERE "id" = $1`;
    this.selectByMessageId = `SELECT ${COLUMNS} FROM ${t} WHERE "message_id" = $1`;
    this.countByStatus = `SELECT "status", count(*)::int AS "count" FROM ${t} GROUP BY "status"`;
    // What waits to run, by command type: $1 test clock.
    this.dueByCommandType = `SELECT "command_type", count(*)::int AS "due", min(${due}) AS "oldest_due_at" FROM ${t}
      WHERE "status" IN (${status(InboxStatus.Pending)}, ${status(InboxStatus.Failed)}) AND ${due} <= ${statementTime('$1')}
      GROUP BY "command_type" ORDER BY min(${due})`;
    // Due for longer than $2 and of a type this worker does not handle ($3): $1 test clock.
    this.unclaimedByCommandType = `SELECT "command_type", count(*)::int AS "due", min(${due}) AS "oldest_due_at" FROM ${t}
      WHERE "status" IN (${status(InboxStatus.Pending)}, ${status(InboxStatus.Failed)})
        AND ${due} <= ${statementTime('$1')} - $2::interval AND NOT ("command_type" = ANY($3::text[]))
      GROUP BY "command_type" ORDER BY min(${due}) LIMIT 20`;
    this.selectHistory = `SELECT * FROM ${h} WHERE "entry_id" = $1 ORDER BY "id"`;

    // $1 id, $2 corrected payload or NULL, $3 actor, $4 reason, $5 test clock. A correction keeps
    // the digest of the payload as received (see sameCommand).
    this.replay = `WITH previous AS (
        SELECT "id", "payload" FROM ${t} WHERE "id" = $1 AND "status" IN (${status(InboxStatus.DeadLetter)}, ${status(InboxStatus.Failed)}) FOR UPDATE
      ), replayed AS (
        UPDATE ${t} AS e SET ${resetForReplay}, "payload" = COALESCE($2::jsonb, e."payload"),
          "payload_digest" = CASE WHEN $2::jsonb IS NULL THEN e."payload_digest" ELSE COALESCE(e."payload_digest", md5(e."payload"::text)) END
        FROM previous WHERE e."id" = previous."id"
        RETURNING ${columnsOf('e')}, previous."payload" AS "previous_payload"
      ), recorded AS (
        INSERT INTO ${h} ("entry_id", "event", "actor", "reason", "previous_payload", "recorded_at")
        SELECT "id", 'replayed', $3, $4, CASE WHEN $2::jsonb IS NULL THEN NULL ELSE "previous_payload" END, ${wallTime('$5')} FROM replayed
      )
      SELECT ${COLUMNS} FROM replayed`;
    // $1 id, $2 test clock, $3 actor, $4 reason.
    this.discard = `WITH discarded AS (
        UPDATE ${t} SET "discarded_at" = ${wallTime('$2')}
        WHERE "id" = $1 AND "status" = ${status(InboxStatus.DeadLetter)} AND "discarded_at" IS NULL
        RETURNING ${COLUMNS}
      ), recorded AS (
        INSERT INTO ${h} ("entry_id", "event", "actor", "reason", "recorded_at") SELECT "id", 'discarded', $3, $4, "discarded_at" FROM discarded
      )
      SELECT ${COLUMNS} FROM discarded`;
    // $1 id, $2 test clock, $3 actor, $4 reason.
    this.deadLetter = `WITH dead AS (
        UPDATE ${t} SET "status" = ${status(InboxStatus.DeadLetter)}, "dead_letter_reason" = 'manual', "dead_lettered_at" = ${wallTime('$2')},
          "error" = 'Dead-lettered by ' || $3::varchar || COALESCE(': ' || $4::text, ''), "next_retry_at" = NULL
        WHERE "id" = $1 AND "status" IN (${status(InboxStatus.Pending)}, ${status(InboxStatus.Failed)})
        RETURNING ${COLUMNS}
      ), recorded AS (
        INSERT INTO ${h} ("entry_id", "event", "actor", "reason", "recorded_at") SELECT "id", 'dead_lettered', $3::varchar, $4::text, "dead_lettered_at" FROM dead
      )
      SELECT ${COLUMNS} FROM dead`;

    // Due = Pending, or Failed whose retry time has come; oldest due first; only the command types
    // this worker has handlers for ($6), so that during a rolling deploy a worker without a new
    // type's handler leaves it to the workers that have one. SKIP LOCKED lets several workers claim
    // side by side. Entries whose last attempt ended with its worker gone ("crash suspects") are
    // claimed apart, one at a time. The claim starts no attempt: `processing_started_at` is set
    // when the batch really starts (see start), so a claim that never ran is handed back uncharged.
    // $1 test clock, $2 limit, $3 worker, $4 lease, $5 token, $6 command types.
    const claim = (suspects: boolean) => `WITH due AS (
        SELECT "id" FROM ${t}
        WHERE "status" IN (${status(InboxStatus.Pending)}, ${status(InboxStatus.Failed)})
          AND ${due} <= ${statementTime('$1')}
          AND ${suspects ? suspect : `"last_outcome" IS DISTINCT FROM 'lease_expired'`}
          AND "command_type" = ANY($6::text[])
        ORDER BY ${due}
        LIMIT $2
        FOR UPDATE SKIP LOCKED
      )
      UPDATE ${t} AS e SET "status" = ${status(InboxStatus.Processing)}, "locked_by" = $3,
        "locked_until" = ${statementTime('$1')} + $4::interval, "lock_token" = $5, "processing_started_at" = NULL
      FROM due WHERE e."id" = due."id"
      RETURNING ${columnsOf('e')}`;
    // Two statements, not a parameter: a generic plan must still see which partial index applies.
    this.claim = statement('claim', claim(false), prepared);
    this.claimSuspects = statement('claim_suspects', claim(true), prepared);
    // The attempt starts: committed on its own before the batch's transaction begins, so that it
    // survives a crash of that transaction. From here a lease expiry counts as a failed attempt.
    // The attempts allowed are stored with it, so any worker (one without the handler too) decides
    // the same way. $1 ids, $2 token, $3 attempts allowed per entry, $4 test clock.
    this.start = statement(
      'start',
      `UPDATE ${t} AS e SET "processing_started_at" = ${wallTime('$4')}, "max_attempts" = d."max_attempts"
      FROM unnest($1::uuid[], $3::int[]) AS d("id", "max_attempts")
      WHERE e."id" = d."id" AND e."lock_token" = $2 AND e."status" = ${status(InboxStatus.Processing)}
      RETURNING e."id"`,
      prepared,
    );
    // First statement of a batch's transaction: locks the claimed rows until commit, and proves the
    // claims are still ours (the fencing token did not change). It also bounds how long the
    // transaction may sit idle: if this worker freezes (SIGSTOP, a blocked event loop), the server
    // ends the session after $3 ms, so the locks cannot outlive the lease. $1 ids, $2 token.
    this.lockClaimed = statement('lock', `SELECT "id", set_config('idle_in_transaction_session_timeout', $3, true) FROM ${t}
      WHERE "id" = ANY($1::uuid[]) AND "lock_token" = $2 AND "status" = ${status(InboxStatus.Processing)} FOR UPDATE`, prepared);

    // Completes a batch in one statement. Completed is final, so the completing attempt is kept on
    // the entry itself (start, finish, worker) rather than as a history row: the success path writes
    // no extra row, and history() reads that attempt from here. Times are the batch's start on the
    // database's clock plus each handler's start and duration measured here. $1 ids, $2 token,
    // $3 each handler's start (ms after the batch's), $4 durations (ms), $5 worker.
    const complete = `UPDATE ${t} AS e SET "status" = ${status(InboxStatus.Completed)},
        "processing_started_at" = e."processing_started_at" + ${ms('d."start_ms"')},
        "processed_at" = e."processing_started_at" + ${ms('(d."start_ms" + d."duration_ms")')},
        "processed_by" = $5, "error" = NULL, "next_retry_at" = NULL, "last_outcome" = 'completed', ${clearClaim}
      FROM unnest($1::uuid[], $3::float8[], $4::float8[]) AS d("id", "start_ms", "duration_ms")
      WHERE e."id" = d."id" AND e."lock_token" = $2`;
    this.complete = statement('complete', complete, prepared);
    // The same, returning what it wrote, for completed-listeners.
    this.completeReturning = statement('complete_returning', `${complete} RETURNING ${columnsOf('e')}`, prepared);
    // Failures and dead letters, fenced by each claim's token, with their history records: one
    // statement for all the failed attempts of a batch (or a sweep). Arrays, one element per entry:
    // $1 ids, $2 tokens, $3 statuses, $4 errors, $5 retry delays (ms; NULL for a dead letter),
    // $6 dead-letter reasons, $7 history outcomes, $8 handler starts (ms after the batch's; NULL:
    // the attempt's start), $9 durations (NULL: until now), $10 error classes, $11 stacks,
    // $12 workers, $13 messages, $14 how each attempt ended; $15 test clock.
    const finishedAt = `CASE WHEN d."duration_ms" IS NULL THEN ${wallTime('$15')}
        ELSE e."processing_started_at" + ${ms('(COALESCE(d."start_ms", 0) + d."duration_ms")')} END`;
    const outcomesUpdate = `UPDATE ${t} AS e SET "status" = d."status"::${this.statusType}, "retry_count" = e."retry_count" + 1,
        "error" = d."error", "next_retry_at" = ${wallTime('$15')} + ${ms('d."delay_ms"')}, "dead_letter_reason" = d."reason",
        "dead_lettered_at" = CASE WHEN d."reason" IS NULL THEN NULL ELSE ${wallTime('$15')} END,
        "last_outcome" = d."ended", ${clearClaim}
      FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[],
        $8::float8[], $9::float8[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
        AS d("id", "token", "status", "error", "delay_ms", "reason", "outcome",
          "start_ms", "duration_ms", "error_class", "error_stack", "worker_id", "error_message", "ended")
      WHERE e."id" = d."id" AND e."lock_token" = d."token"`;
    // Returns the rows it wrote: the listeners' events and the log lines are made from them.
    this.recordOutcomes = statement('outcomes', recordAttempts
      ? `WITH outcome AS (${outcomesUpdate} RETURNING ${columnsOf('e')}, d."outcome" AS "attempt_outcome",
            e."processing_started_at" + ${ms('COALESCE(d."start_ms", 0)')} AS "started_at", ${finishedAt} AS "finished_at",
            d."error_class", d."error_message", d."error_stack", d."worker_id"),
        recorded AS (
          INSERT INTO ${h} ("entry_id", "event", "attempt", "outcome", "started_at", "finished_at", "duration_ms",
            "error_class", "error_message", "error_stack", "worker_id", "recorded_at")
          SELECT "id", 'attempt', "retry_count", "attempt_outcome", "started_at", "finished_at",
            GREATEST(0, round(extract(epoch FROM "finished_at" - "started_at") * 1000))::int,
            "error_class", "error_message", "error_stack", "worker_id", "finished_at" FROM outcome
        )
        SELECT ${COLUMNS} FROM outcome`
      : `${outcomesUpdate} RETURNING ${columnsOf('e')}`, prepared);
    // Claims whose attempt never started (the worker never heard of its claim, or died or froze
    // before starting it) go back to where they were, uncharged. $1 ids, $2 tokens.
    this.release = `UPDATE ${t} AS e SET ${clearClaim},
        "status" = CASE WHEN e."retry_count" = 0 THEN ${status(InboxStatus.Pending)} ELSE ${status(InboxStatus.Failed)} END
      FROM unnest($1::uuid[], $2::uuid[]) AS d("id", "token")
      WHERE e."id" = d."id" AND e."lock_token" = d."token" AND e."status" = ${status(InboxStatus.Processing)}
      RETURNING e."id"`;
    // Served by a partial index that only holds crash suspects: usually empty, always cheap.
    // $1 test clock, $2 command types.
    this.anySuspectDue = statement('suspect', `SELECT 1 FROM ${t}
      WHERE "status" IN (${status(InboxStatus.Pending)}, ${status(InboxStatus.Failed)}) AND ${suspect}
        AND ${due} <= ${statementTime('$1')} AND "command_type" = ANY($2::text[]) LIMIT 1`, prepared);
    // Claims whose lease ran out. A live worker holds the row lock while its handler runs, so
    // SKIP LOCKED only finds claims whose worker is gone (crashed, killed, disconnected) or that
    // were never started. $1 test clock, $2 limit.
    this.anyExpiredLease = statement('expired', `SELECT 1 FROM ${t}
      WHERE "status" = ${status(InboxStatus.Processing)} AND "locked_until" <= ${statementTime('$1')} LIMIT 1`, prepared);
    this.selectExpiredLeases = `SELECT ${COLUMNS} FROM ${t}
      WHERE "status" = ${status(InboxStatus.Processing)} AND "locked_until" <= ${statementTime('$1')}
      ORDER BY "locked_until" LIMIT $2 FOR UPDATE SKIP LOCKED`;

    // Retention, in small batches that skip rows others hold. $1 test clock, $2 age, $3 batch size.
    this.stripPayloads = `UPDATE ${t} SET "payload_digest" = COALESCE("payload_digest", md5("payload"::text)), "payload" = NULL, "metadata" = '{}'
      WHERE "id" IN (SELECT "id" FROM ${t}
        WHERE "status" = ${status(InboxStatus.Completed)} AND "payload" IS NOT NULL AND "processed_at" < ${statementTime('$1')} - $2::interval
        ORDER BY "processed_at" LIMIT $3 FOR UPDATE SKIP LOCKED)`;
    this.deleteCompleted = `DELETE FROM ${t}
      WHERE "id" IN (SELECT "id" FROM ${t}
        WHERE "status" = ${status(InboxStatus.Completed)} AND "processed_at" < ${statementTime('$1')} - $2::interval
        ORDER BY "processed_at" LIMIT $3 FOR UPDATE SKIP LOCKED)`;
  }

  /** WHERE clause and params for an operator's filter; `first` is the number of the first param. */
  where(filter: EntryFilter, first = 1): { clause: string; params: unknown[] } {
    const conditions: string[] = [];
    const params: unknown[] = [];
    const param = (value: unknown) => {
      params.push(value);
      return `$${first + params.length - 1}`;
    };
    if (filter.status !== undefined) conditions.push(`"status" = ${param(filter.status)}::${this.statusType}`);
    if (filter.commandType !== undefined) conditions.push(`"command_type" = ${param(filter.commandType)}`);
    if (filter.deadLetterReason !== undefined) conditions.push(`"dead_letter_reason" = ${param(filter.deadLetterReason)}`);
    if (filter.errorContains !== undefined) {
      const escaped = filter.errorContains.replace(/[\\%_]/g, (c) => `\\${c}`);
      conditions.push(`"error" ILIKE ${param(`%${escaped}%`)}`);
    }
    if (filter.receivedAfter !== undefined) conditions.push(`"received_at" >= ${param(filter.receivedAfter)}`);
    if (filter.receivedBefore !== undefined) conditions.push(`"received_at" < ${param(filter.receivedBefore)}`);
    if (filter.includeDiscarded === false) conditions.push(`"discarded_at" IS NULL`);
    return { clause: conditions.length ? `WHERE ${conditions.join(' AND ')}` : '', params };
  }

  list(filter: EntryFilter, limit: number): { sql: string; params: unknown[] } {
    const { clause, params } = this.where(filter);
    return { sql: `SELECT ${COLUMNS} FROM ${this.table} ${clause} ORDER BY "received_at" DESC, "id" LIMIT $${params.length + 1}`, params: [...params, limit] };
  }

  count(filter: EntryFilter): { sql: string; params: unknown[] } {
    const { clause, params } = this.where(filter);
    return { sql: `SELECT count(*)::int AS "count" FROM ${this.table} ${clause}`, params };
  }

  /**
   * One batch of a bulk replay: the next `batchSize` matching entries after `afterId` (keyset, so
   * each batch is a short statement of its own and the table is never locked as a whole).
   * Params: ...filter, afterId, batchSize, actor, reason, test clock.
   */
  replayBatch(filter: EntryFilter): { sql: string; params: unknown[] } {
    const { clause, params } = this.where(filter);
    const n = params.length;
    const keyset = `${clause ? `${clause} AND` : 'WHERE'} "id" > $${n + 1}`;
    const status = (s: InboxStatus) => `'${s}'::${this.statusType}`;
    return {
      sql: `WITH batch AS (
          SELECT "id" FROM ${this.table} ${keyset} ORDER BY "id" LIMIT $${n + 2} FOR UPDATE SKIP LOCKED
        ), replayed AS (
          UPDATE ${this.table} AS e SET "status" = ${status(InboxStatus.Pending)}, "retry_count" = 0, "next_retry_at" = NULL,
            "processed_at" = NULL, "processing_started_at" = NULL, "processed_by" = NULL, "locked_by" = NULL, "locked_until" = NULL, "lock_token" = NULL,
            "dead_letter_reason" = NULL, "dead_lettered_at" = NULL, "discarded_at" = NULL
          FROM batch WHERE e."id" = batch."id" RETURNING e."id"
        ), recorded AS (
          INSERT INTO ${this.history} ("entry_id", "event", "actor", "reason", "recorded_at")
          SELECT "id", 'replayed', $${n + 3}, $${n + 4}, ${wallTime(`$${n + 5}`)} FROM replayed
        )
        SELECT "id" FROM replayed ORDER BY "id"`,
      params,
    };
  }
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
  const queryRunner = isQueryRunner(on) ? on : on.createQueryRunner();
  try {
    const result = (await queryRunner.query(text, params, true)) as { records?: T[]; affected?: number };
    return { rows: result.records ?? [], affected: result.affected ?? 0 };
  } finally {
    if (queryRunner !== on) await queryRunner.release();
  }
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
}

export function pgPoolOf(dataSource: DataSource): PgPool {
  return (dataSource.driver as unknown as { master: PgPool }).master;
}
