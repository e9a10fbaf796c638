import { inboxIdentifiers } from './identifiers';
import { statement, type Statement } from './connection';
import { ERROR_FINGERPRINT, whereClause, type EntryFilter } from './entry-filter';
import { columnList, SELECTED_COLUMNS } from './schema';
import { AttemptOutcome, HistoryEvent, INBOX_STATUSES, InboxStatus, TRANSITIONS, type TransitionName } from '../state/inbox-state-machine';
import { HOLDING_STATUSES } from '../state/ordering';

/**
 * Time in SQL is the database's: one clock for every instance, whatever their hosts' clocks say.
 * `$n` is an injected test clock's time, NULL in production (see clockTime). `now()` is the
 * statement's time (stable, so an index can serve a comparison with it); `clock_timestamp()` the
 * moment a value is written.
 */
const statementTime = (clock: string) => `COALESCE(${clock}::timestamptz, now())`;
const wallTime = (clock: string) => `COALESCE(${clock}::timestamptz, clock_timestamp())`;
const ms = (value: string) => `(${value} * interval '1 millisecond')`;
/** How many rows the gauges count on a table the planner has no statistics for yet (see snapshot). */
const UNANALYZED_COUNT_LIMIT = 100_000;

const COLUMNS = columnList();
const DUE_AT = `COALESCE("next_retry_at", "received_at")`;
const CLEAR_CLAIM = `"locked_by" = NULL, "locked_until" = NULL, "lock_token" = NULL`;
const SUSPECT = `"last_outcome" = '${AttemptOutcome.LeaseExpired}'`;


/**
 * Every statement the library runs against its tables, parameterised; the table name is the only
 * interpolated part and is checked against a strict identifier pattern at boot. Each transition's
 * statement takes its `WHERE "status" IN (…)` and its `SET "status" = …` from the state machine's
 * TRANSITIONS. Writing an outcome and its history record is one statement (a data-modifying CTE).
 * Statements of the hot path are named, so node-postgres prepares them once per connection.
 */
export class InboxStatements {
  // Receiving and reading.
  readonly receive: Statement;
  readonly receiveMany: Statement;
  readonly selectManyByMessageIdWithMatch: string;
  readonly receiveAndNotify: Statement;
  readonly receiveKeyed: Statement;
  readonly receiveKeyedAndNotify: Statement;
  readonly selectByMessageIdWithMatch: string;
  readonly selectById: string;
  readonly payloadsOf: string;
  readonly selectByMessageId: string;
  readonly countByStatus: string;
  readonly openByCommandType: string;
  readonly deadLettersByReason: string;
  readonly dueByCommandType: string;
  readonly unclaimedByCommandType: string;
  readonly selectHistory: string;
  // The worker's transitions.
  readonly claim: Statement;
  readonly claimSuspects: Statement;
  readonly start: Statement;
  readonly unstart: string;
  readonly endSession: string;
  readonly sessionState: string;
  readonly lockClaimed: Statement;
  readonly lockSuspect: Statement;
  readonly complete: Statement;
  readonly completeReturning: Statement;
  readonly fail: Statement;
  readonly release: string;
  readonly selectExpiredLeases: string;
  readonly anyExpiredLease: Statement;
  readonly anySuspectDue: Statement;
  // Ordering keys.
  readonly lockKeys: Statement;
  readonly settleKeys: Statement;
  readonly blockedKeys: string;
  readonly keyHolder: string;
  // Operators' transitions.
  readonly replay: string;
  readonly discard: string;
  readonly deadLetter: string;
  // Retention.
  readonly removePayloads: string;
  readonly removeCompleted: string;
  readonly removeIdleKeys: string;
  // Telemetry.
  readonly snapshot: Statement;
  readonly deadLettersSince: string;

  private readonly table: string;
  private readonly history: string;
  private readonly statusType: string;

  /**
   * `claimLimit`: how many entries a claim takes (the worker's batch size). `recordAttempts`: write
   * a history record with every failed attempt. `prepared`: name the hot-path statements so
   * node-postgres prepares them (off for poolers that cannot keep them).
   */
  constructor(tableName: string, claimLimit: number, recordAttempts = true, prepared = true) {
    // Written into the claim's text: a whole number, or the statement is not one.
    if (!Number.isInteger(claimLimit) || claimLimit < 1) throw new RangeError(`claimLimit must be a positive integer, got ${claimLimit}`);
    const { table: t, history: h, keys, snapshot, statusType } = inboxIdentifiers(tableName);
    this.table = t;
    this.history = h;
    this.statusType = statusType;
    const status = (s: InboxStatus) => `'${s}'::${statusType}`;
    const from = (transition: TransitionName, alias = '') => `${alias}"status" IN (${TRANSITIONS[transition].from.map(status).join(', ')})`;
    // The same check for statements that find their rows by id: written so that no index can serve
    // it (IS TRUE), or a planner that believes few rows are Processing (its statistics lag behind a
    // burst) scans the lease index and re-reads the ids for each row it finds instead.
    const fenced = (transition: TransitionName, alias = '') => `(${from(transition, alias)}) IS TRUE`;
    const to = (transition: TransitionName, index = 0) => status(TRANSITIONS[transition].to[index]);
    const due = `${DUE_AT} <= ${statementTime('$1')}`;

    // Receive in one statement: insert, or when the messageId is taken, return the stored entry (as
    // jsonb: three narrow columns parse faster than twenty) and whether it holds the same command.
    // A new entry comes back as its id and receive time, `same_command` NULL: the caller knows the
    // rest. jsonb equality ignores key order and whitespace. The digest is that of the payload as
    // first received: after retention removed the payload, or a replay corrected it, a redelivery
    // of the original still matches. No row at all means a concurrent receive committed the key
    // after this statement's snapshot: look again. A duplicate's payload comes back only when it is
    // not the incoming one. Null columns are left out, metadata is added as it is (stripping nulls
    // would reach inside it).
    // $1 messageId, $2 type, $3 payload, $4 correlation, $5 causation, $6 metadata, $7 test clock,
    // $8 traceparent, $9 tracestate; with an ordering key (receiveKeyed), $10 the key.
    const sameCommand = (key: string) =>
      `COALESCE("command_type" = $2 AND "ordering_key" IS NOT DISTINCT FROM ${key} AND ("payload" = $3::jsonb OR "payload_digest" = md5($3::jsonb::text)), false)`;
    // A bigint as text, as node-postgres returns it from a column (and past 2^53 a JSON number would round).
    const scalarColumns = SELECTED_COLUMNS.filter((name) => name !== 'payload' && name !== 'metadata').map((name) => `'${name}', "${name}"${name === 'ordering_seq' ? '::text' : ''}`);
    // The payload comes back only when it differs from the incoming one (a corrected replay's).
    const storedColumns = `jsonb_strip_nulls(jsonb_build_object(${scalarColumns.join(', ')}, 'payload_removed', "payload" IS NULL))
      || jsonb_build_object('metadata', "metadata", 'payload_stored', CASE WHEN "payload" = $3::jsonb THEN NULL ELSE "payload" END)`;
    const receive = (notify: boolean) => `WITH inserted AS (
        INSERT INTO ${t} ("message_id", "command_type", "payload", "correlation_id", "causation_id", "metadata", "received_at",
          "trace_parent", "trace_state")
        VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb, ${statementTime('$7')}, $8, $9)
        ON CONFLICT ("message_id") DO NOTHING
        RETURNING "id", "received_at"${notify ? ', pg_notify($10, NULL)' : ''}
      )
      SELECT "id", "received_at", NULL::boolean AS "same_command", NULL::jsonb AS "stored" FROM inserted
      UNION ALL
      SELECT "id", NULL, ${sameCommand('NULL')}, ${storedColumns}
      FROM ${t} WHERE "message_id" = $1 AND NOT EXISTS (SELECT FROM inserted)`;
    this.receive = statement('receive', receive(false), prepared);
    // The same, also notifying $10 when a new entry was stored (delivered when it commits).
    this.receiveAndNotify = statement('receive_notify', receive(true), prepared);
    // Receive with an ordering key ($10): the key's row numbers the entry and says whether another
    // entry holds the key (then this one waits). The row is locked first: that serialises the
    // receives of a key with each other and with hand-overs (settleKeys). It is written only once
    // the entry is stored, in the same statement: a receive that loses its messageId to a
    // concurrent one leaves the key as it found it. A key with no row yet is numbered from 1; when
    // two receives race for it, the second one's entry would be a second holder, the unique index
    // refuses it (DO NOTHING: no row comes back, nothing is stored) and the caller looks again.
    const receiveKeyed = (notify: boolean) => `WITH k AS (
        SELECT "last_seq", "busy" FROM ${keys} WHERE "ordering_key" = $10 FOR UPDATE
      ), inserted AS (
        INSERT INTO ${t} ("message_id", "command_type", "payload", "correlation_id", "causation_id", "metadata", "received_at",
          "trace_parent", "trace_state", "ordering_key", "ordering_seq", "waiting")
        VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb, ${statementTime('$7')}, $8, $9, $10,
          COALESCE((SELECT "last_seq" FROM k), 0) + 1, COALESCE((SELECT "busy" FROM k), false))
        ON CONFLICT DO NOTHING
        RETURNING "id", "received_at", "ordering_seq", "waiting"${notify ? ', pg_notify($11, NULL)' : ''}
      ), numbered AS (
        UPDATE ${keys} SET "last_seq" = i."ordering_seq", "busy" = true, "touched_at" = i."received_at"
        FROM inserted i WHERE "ordering_key" = $10
      ), created AS (
        INSERT INTO ${keys} ("ordering_key", "last_seq", "busy", "touched_at")
        SELECT $10, i."ordering_seq", true, i."received_at" FROM inserted i WHERE NOT EXISTS (SELECT FROM k)
        ON CONFLICT ("ordering_key") DO UPDATE SET "last_seq" = GREATEST(${keys}."last_seq", EXCLUDED."last_seq"), "busy" = true, "touched_at" = EXCLUDED."touched_at"
      )
      SELECT "id", "received_at", NULL::boolean AS "same_command", NULL::jsonb AS "stored",
        "ordering_seq"::text AS "ordering_seq", "waiting" FROM inserted
      UNION ALL
      SELECT "id", NULL, ${sameCommand('$10')}, ${storedColumns}, NULL, NULL
      FROM ${t} WHERE "message_id" = $1 AND NOT EXISTS (SELECT FROM inserted)`;
    this.receiveKeyed = statement('receive_keyed', receiveKeyed(false), prepared);
    // The same, also notifying $11.
    this.receiveKeyedAndNotify = statement('receive_keyed_notify', receiveKeyed(true), prepared);
    // receiveMany: commands without an ordering key in one statement, each inserted once per
    // messageId (the caller sends each messageId once). Returns, in the order given, each one's
    // place (n, from 1) and, when inserted, its id and receive time; the others are stored already
    // (see selectManyByMessageIdWithMatch). Payloads and metadata come as one JSON array each (no
    // array literal to escape). $1 messageIds, $2 types, $3 payloads, $4 correlations,
    // $5 causations, $6 metadata, $7 test clock, $8 traceparents, $9 tracestates.
    this.receiveMany = statement('receive_many', `WITH input AS (
        SELECT i.*, p."payload", m."metadata"
        FROM unnest($1::varchar[], $2::varchar[], $4::varchar[], $5::varchar[], $8::varchar[], $9::varchar[])
          WITH ORDINALITY AS i("message_id", "command_type", "correlation_id", "causation_id", "trace_parent", "trace_state", "n")
        JOIN jsonb_array_elements($3::jsonb) WITH ORDINALITY AS p("payload", "n") ON p."n" = i."n"
        JOIN jsonb_array_elements($6::jsonb) WITH ORDINALITY AS m("metadata", "n") ON m."n" = i."n"
      ), inserted AS (
        INSERT INTO ${t} ("message_id", "command_type", "payload", "correlation_id", "causation_id", "metadata", "received_at", "trace_parent", "trace_state")
        SELECT "message_id", "command_type", "payload", "correlation_id", "causation_id", "metadata", ${statementTime('$7')}, "trace_parent", "trace_state"
        -- In messageId order: two batches that share messageIds take their rows in the same order (no deadlock).
        FROM input ORDER BY "message_id"
        ON CONFLICT ("message_id") DO NOTHING
        RETURNING "id", "message_id", "received_at"
      )
      SELECT input."n"::int AS "n", inserted."id", inserted."received_at" FROM input LEFT JOIN inserted ON inserted."message_id" = input."message_id" ORDER BY input."n"`, prepared);
    // The stored entries of several messageIds, each with whether it holds the same command (as
    // selectByMessageIdWithMatch): $1 messageIds, $2 types, $3 payloads (one JSON array), $4 ordering keys (NULLs).
    this.selectManyByMessageIdWithMatch = `SELECT i."n"::int AS "n", ${columnList('e')},
        COALESCE(e."command_type" = i."command_type" AND e."ordering_key" IS NOT DISTINCT FROM i."ordering_key"
          AND (e."payload" = p."payload" OR e."payload_digest" = md5(p."payload"::text)), false) AS "same_command"
      FROM unnest($1::varchar[], $2::varchar[], $4::varchar[]) WITH ORDINALITY AS i("message_id", "command_type", "ordering_key", "n")
      JOIN jsonb_array_elements($3::jsonb) WITH ORDINALITY AS p("payload", "n") ON p."n" = i."n"
      JOIN ${t} AS e ON e."message_id" = i."message_id"`;
    // $1 messageId, $2 type, $3 payload, $4 ordering key or NULL.
    this.selectByMessageIdWithMatch = `SELECT ${COLUMNS}, ${sameCommand('$4::varchar')} AS "same_command" FROM ${t} WHERE "message_id" = $1`;
    this.selectById = `SELECT ${COLUMNS} FROM ${t} WHERE "id" = $1`;
    // The stored payloads of entries a batch runs again (see BatchExecutor.refreshCommands). $1 ids.
    this.payloadsOf = `SELECT "id", "payload" FROM ${t} WHERE "id" = ANY($1::uuid[])`;
    this.selectByMessageId = `SELECT ${COLUMNS} FROM ${t} WHERE "message_id" = $1`;
    this.countByStatus = `SELECT "status", count(*)::int AS "count" FROM ${t} GROUP BY "status"`;
    // The entries not completed, by type and status (the status index leaves the completed ones out).
    this.openByCommandType = `SELECT "command_type", "status", count(*)::int AS "count" FROM ${t}
      WHERE "status" IN (${INBOX_STATUSES.filter((s) => s !== InboxStatus.Completed).map(status).join(', ')}) GROUP BY "command_type", "status" ORDER BY "command_type"`;
    this.deadLettersByReason = `SELECT "dead_letter_reason" AS "reason", count(*)::int AS "count" FROM ${t}
      WHERE "status" = ${status(InboxStatus.DeadLetter)} AND "discarded_at" IS NULL GROUP BY "dead_letter_reason" ORDER BY "dead_letter_reason"`;
    // What waits to run, by command type: $1 test clock.
    this.dueByCommandType = `SELECT "command_type", count(*)::int AS "due", min(${DUE_AT}) AS "oldest_due_at" FROM ${t}
      WHERE ${from('claim')} AND NOT "waiting" AND ${due} GROUP BY "command_type" ORDER BY min(${DUE_AT})`;
    // Due for longer than $2 and of a type this worker does not handle ($3): $1 test clock.
    this.unclaimedByCommandType = `SELECT "command_type", count(*)::int AS "due", min(${DUE_AT}) AS "oldest_due_at" FROM ${t}
      WHERE ${from('claim')} AND NOT "waiting" AND ${DUE_AT} <= ${statementTime('$1')} - $2::interval AND NOT ("command_type" = ANY($3::text[]))
      GROUP BY "command_type" ORDER BY min(${DUE_AT}) LIMIT 20`;
    this.selectHistory = `SELECT * FROM ${h} WHERE "entry_id" = $1 ORDER BY "id"`;

    // claim: due entries, oldest due first, only of the command types this worker has handlers for
    // ($5), so that during a rolling deploy a worker without a new type's handler leaves it to the
    // workers that have one. SKIP LOCKED lets several workers claim side by side. Crash suspects
    // are claimed apart, one at a time. The claim starts no attempt (`processing_started_at` is
    // cleared; see start). It runs with sorting disabled (see runInIndexOrder): it must walk the
    // due index in order. The limit (the worker's batch size; 1 for crash suspects) is part of the
    // text, not a parameter: a generic plan then knows how few rows it takes, where a parameter
    // makes it guess a tenth of the due entries, enough on a large table for a costlier plan and
    // JIT compilation (26 ms, and 174 ms with sorting allowed, instead of 1.5 ms with 100,000 due).
    // $1 test clock, $2 worker, $3 lease, $4 token, $5 command types.
    //
    // A key's run: with a due entry that holds an ordering key come entries waiting behind it, in
    // their key's order, as long as each is Pending, of a handled type and no crash suspect (the run
    // stops at the first that is not). They are claimed still waiting (so the key keeps one
    // holder) and run after their head in the same batch (see BatchExecutor): a key is not held to
    // one transaction and one claim per entry, and the hand-over to a key's next entry (a row
    // update of its own) comes once per run, not once per entry. The room is shared in due order:
    // each due entry, oldest first, is taken if the ones before it with their runs left room for
    // it, and its run takes what room is left; a claim never takes more than its limit, and the
    // due entries it leaves are the next claim's. How many wait behind a head is read from its
    // key's row (the last place given, less the head's), and its run takes no more than that, so
    // the ones after it are counted right: an entry replayed behind a holder with an earlier place
    // is not counted, and waits for the next claim. Taking the runs with FOR UPDATE (no skipping)
    // means each entry is judged by its
    // latest version: one an operator dead-lettered meanwhile ends the run, one discarded has left
    // the key's queue. No sort: the claim may run with sorting disabled; the running sum follows
    // the due entries in the order they were found.
    const claim = (suspects: boolean, limit: number) => `WITH due AS (
        SELECT "id", "ordering_key", "ordering_seq" FROM ${t}
        WHERE ${from('claim')} AND NOT "waiting" AND ${due}
          AND ${suspects ? SUSPECT : `"last_outcome" IS DISTINCT FROM '${AttemptOutcome.LeaseExpired}'`}
          AND "command_type" = ANY($5::text[])
        ORDER BY ${DUE_AT}
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      )${suspects ? '' : `, behind AS (
        SELECT d."id", d."ordering_key", CASE WHEN d."ordering_key" IS NULL THEN 0 ELSE LEAST(${limit}, GREATEST(0, (
          SELECT k."last_seq" FROM ${keys} AS k WHERE k."ordering_key" = d."ordering_key"
        ) - d."ordering_seq")) END AS "waiting_behind"
        FROM due d
      ), heads AS (
        SELECT "id", "ordering_key", "waiting_behind",
          ${limit} - 1 - COALESCE(sum(1 + "waiting_behind") OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS "room"
        FROM behind
      ), queued AS (
        SELECT w."id", w."ordering_key", w."ordering_seq",
          w."status" = ${status(InboxStatus.Pending)} AND w."command_type" = ANY($5::text[])
            AND w."last_outcome" IS DISTINCT FROM '${AttemptOutcome.LeaseExpired}' AS "runnable"
        FROM heads h CROSS JOIN LATERAL (
          SELECT "id", "ordering_key", "ordering_seq", "status", "command_type", "last_outcome" FROM ${t}
          WHERE "ordering_key" = h."ordering_key" AND "waiting"
          ORDER BY "ordering_seq"
          LIMIT LEAST(h."room", h."waiting_behind")
          FOR UPDATE
        ) AS w
        WHERE h."ordering_key" IS NOT NULL AND h."room" > 0
      ), stops AS (
        -- Where each run stops: its key's first entry that is not runnable (usually none).
        SELECT "ordering_key", min("ordering_seq") AS "ordering_seq" FROM queued WHERE NOT "runnable" GROUP BY "ordering_key"
      ), followers AS (
        -- The run: each runnable one before its key's stop.
        SELECT q."id" FROM queued q
        WHERE q."runnable" AND NOT EXISTS (SELECT FROM stops s WHERE s."ordering_key" = q."ordering_key" AND s."ordering_seq" < q."ordering_seq")
      )`}
      UPDATE ${t} AS e SET "status" = ${to('claim')}, "locked_by" = $2,
        "locked_until" = ${statementTime('$1')} + $3::interval, "lock_token" = $4, "processing_started_at" = NULL
      FROM (${suspects ? 'SELECT "id" FROM due' : 'SELECT "id" FROM heads WHERE "room" >= 0 UNION ALL SELECT "id" FROM followers'}) AS claimed WHERE e."id" = claimed."id"
      RETURNING ${columnList('e')}`;
    // Two statements, not a parameter: a generic plan must still see which partial index applies.
    this.claim = statement('claim', claim(false, claimLimit), prepared);
    this.claimSuspects = statement('claim_suspects', claim(true, 1), prepared);

    // start: a crash suspect's attempt starts, committed on its batch's connection right before the
    // transaction that runs its handler (a suspect runs alone): from here its worker's death is
    // charged to it (see decideLeaseExpiry). The attempts allowed are
    // stored with it, so any worker (one without the handler too) decides the same way.
    // $1 ids, $2 token, $3 attempts allowed per entry, $4 test clock.
    this.start = statement(
      'start',
      `UPDATE ${t} AS e SET "processing_started_at" = ${wallTime('$4')}, "max_attempts" = d."max_attempts"
      FROM unnest($1::uuid[], $3::int[]) AS d("id", "max_attempts")
      WHERE e."id" = d."id" AND e."lock_token" = $2 AND ${fenced('start', 'e.')}
      RETURNING e."id"`,
      prepared,
    );
    // endSession: ends the server session of a connection the worker destroyed (a handler that
    // overran its time, a connection gone silent): what it was running stops and its locks go. Only a session of the same
    // user, still in this database. $1 the backend's pid.
    this.endSession = `SELECT pg_terminate_backend("pid") FROM pg_stat_activity WHERE "pid" = $1 AND "datname" = current_database() AND "usename" = current_user`;
    // sessionState: what the server session of a quiet worker connection is doing ('active': at work
    // on a statement, waiting for a lock included), seen from another connection. $1 its pid.
    this.sessionState = `SELECT "state" FROM pg_stat_activity WHERE "pid" = $1 AND "datname" = current_database() AND "usename" = current_user`;
    // unstart: a worker that gives up its started attempts as it shuts down takes their start back
    // (see TRANSITIONS.unstart), from another connection: the batch holds a KEY SHARE lock, which a
    // non-key UPDATE does not wait for. $1 ids, $2 tokens.
    this.unstart = `UPDATE ${t} AS e SET "processing_started_at" = NULL
      FROM unnest($1::uuid[], $2::uuid[]) AS d("id", "lock_token")
      WHERE e."id" = d."id" AND e."lock_token" = d."lock_token" AND ${fenced('unstart', 'e.')}`;
    // First statement of a batch's transaction: locks the claimed rows until commit, and proves the
    // claims are still ours (the fencing token did not change). It also bounds how long the
    // transaction may sit idle: if this worker freezes (SIGSTOP, a blocked event loop), the server
    // ends the session after $3 ms, so the locks cannot outlive the lease. $1 ids, $2 token.
    const lock = (mode: string) => `SELECT "id", set_config('idle_in_transaction_session_timeout', $3, true) FROM ${t}
      WHERE "id" = ANY($1::uuid[]) AND "lock_token" = $2 AND ${from('complete')} FOR ${mode}`;
    this.lockClaimed = statement('lock', lock('UPDATE'), prepared);
    // A crash suspect's lock leaves room for its start to be taken back from another connection by a
    // shutdown that gives up on it (unstart: a non-key UPDATE does not conflict with KEY SHARE),
    // while still keeping claimers and the lease sweep (FOR UPDATE SKIP LOCKED) away.
    this.lockSuspect = statement('lock_suspect', lock('KEY SHARE'), prepared);

    // complete: a batch in one statement. Completed is final, so the completing attempt is kept on
    // the entry itself (start, finish, worker) rather than as a history row. Each handler's start and
    // finish are the database's clock less how long ago the worker saw them (monotonic ms).
    // $1 ids, $2 token, $3 ms since each handler started, $4 ms since it finished, $5 worker, $6 test clock.
    const complete = `UPDATE ${t} AS e SET "status" = ${to('complete')},
        "processing_started_at" = ${wallTime('$6')} - ${ms('d."started_ago"')},
        "processed_at" = ${wallTime('$6')} - ${ms('d."finished_ago"')},
        "processed_by" = $5, "error" = NULL, "next_retry_at" = NULL, "last_outcome" = '${AttemptOutcome.Completed}', "waiting" = false, ${CLEAR_CLAIM}
      FROM unnest($1::uuid[], $3::float8[], $4::float8[]) AS d("id", "started_ago", "finished_ago")
      WHERE e."id" = d."id" AND e."lock_token" = $2 AND ${fenced('complete', 'e.')}`;
    this.complete = statement('complete', complete, prepared);
    // The same, returning what it wrote, for completed-listeners.
    this.completeReturning = statement('complete_returning', `${complete} RETURNING ${columnList('e')}`, prepared);

    // fail and expireLease: failed attempts, each with the status the failure decision chose, fenced
    // by its claim's token, with their history records: one statement for all the failed attempts
    // of a batch (or a sweep). It returns the rows it wrote. Arrays, one element per entry:
    // $1 ids, $2 tokens, $3 statuses, $4 errors, $5 retry delays (ms; NULL for a dead letter),
    // $6 dead-letter reasons, $7 history outcomes, $8 ms since the attempt started (NULL: its
    // stamped start, a lease expiry's), $9 ms since it ended (NULL: now), $10 error classes,
    // $11 stacks, $12 workers, $13 messages, $14 how each attempt ended; $15 test clock; $16 whether
    // each dead letter holds its ordering key (see state/ordering.ts). A dead letter that does not
    // hold its key leaves the key's queue, waiting or not (else, promoted later, it would hold
    // nothing while the entries behind it wait).
    const startedAt = `COALESCE(${wallTime('$15')} - ${ms('d."started_ago"')}, e."processing_started_at", ${wallTime('$15')})`;
    const finishedAt = `COALESCE(${wallTime('$15')} - ${ms('d."finished_ago"')}, ${wallTime('$15')})`;
    const failUpdate = `UPDATE ${t} AS e SET "status" = d."status"::${statusType}, "retry_count" = e."retry_count" + 1,
        "error" = d."error", "next_retry_at" = ${wallTime('$15')} + ${ms('d."delay_ms"')}, "dead_letter_reason" = d."reason",
        "dead_lettered_at" = CASE WHEN d."reason" IS NULL THEN NULL ELSE ${wallTime('$15')} END,
        "last_outcome" = d."ended", "blocks_key" = d."blocks_key",
        "waiting" = e."waiting" AND (d."status" <> '${InboxStatus.DeadLetter}' OR d."blocks_key"), ${CLEAR_CLAIM}
      FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[],
        $8::float8[], $9::float8[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $16::boolean[])
        AS d("id", "token", "status", "error", "delay_ms", "reason", "outcome",
          "started_ago", "finished_ago", "error_class", "error_stack", "worker_id", "error_message", "ended", "blocks_key")
      WHERE e."id" = d."id" AND e."lock_token" = d."token" AND ${fenced('fail', 'e.')}`;
    this.fail = statement('fail', recordAttempts
      ? `WITH outcome AS (${failUpdate} RETURNING ${columnList('e')}, d."outcome" AS "attempt_outcome",
            ${startedAt} AS "started_at", ${finishedAt} AS "finished_at",
            d."error_class", d."error_message", d."error_stack", d."worker_id"),
        recorded AS (
          INSERT INTO ${h} ("entry_id", "event", "attempt", "outcome", "started_at", "finished_at", "duration_ms",
            "error_class", "error_message", "error_stack", "worker_id", "recorded_at")
          SELECT "id", '${HistoryEvent.Attempt}', "retry_count", "attempt_outcome", "started_at", "finished_at",
            GREATEST(0, round(extract(epoch FROM "finished_at" - "started_at") * 1000))::int,
            "error_class", "error_message", "error_stack", "worker_id", "finished_at" FROM outcome
        )
        SELECT ${COLUMNS} FROM outcome`
      : `${failUpdate} RETURNING ${columnList('e')}`, prepared);
    // release: a claim handed back uncharged (see decideLeaseExpiry): Pending if no attempt has
    // failed yet, else Failed (due as it was); with $3 also marked a crash suspect, to run alone.
    // Recorded in its history with the worker that held it. $1 ids, $2 tokens, $3 mark suspects,
    // $4 the workers that held them, $5 why, $6 test clock.
    this.release = `WITH released AS (
        UPDATE ${t} AS e SET ${CLEAR_CLAIM},
          "status" = CASE WHEN e."retry_count" = 0 THEN ${to('release', 0)} ELSE ${to('release', 1)} END,
          "last_outcome" = CASE WHEN $3::boolean THEN '${AttemptOutcome.LeaseExpired}' ELSE e."last_outcome" END
        FROM unnest($1::uuid[], $2::uuid[], $4::text[]) AS d("id", "token", "worker")
        WHERE e."id" = d."id" AND e."lock_token" = d."token" AND ${fenced('release', 'e.')}
        RETURNING ${columnList('e')}, d."worker"
      ), recorded AS (
        INSERT INTO ${h} ("entry_id", "event", "attempt", "worker_id", "reason", "recorded_at")
        SELECT "id", '${HistoryEvent.Released}', "retry_count" + 1, "worker", $5::text, ${wallTime('$6')} FROM released
      )
      SELECT ${COLUMNS} FROM released`;
    // Claims whose lease ran out. A live worker holds the row lock while its handlers run, so SKIP
    // LOCKED only finds claims whose worker is gone (crashed, killed, disconnected) or that never
    // started. $1 test clock, $2 limit.
    this.anyExpiredLease = statement('expired', `SELECT 1 FROM ${t}
      WHERE ${from('expireLease')} AND "locked_until" <= ${statementTime('$1')} LIMIT 1`, prepared);
    this.selectExpiredLeases = `SELECT ${COLUMNS} FROM ${t}
      WHERE ${from('expireLease')} AND "locked_until" <= ${statementTime('$1')}
      ORDER BY "locked_until" LIMIT $2 FOR UPDATE SKIP LOCKED`;
    // Served by a partial index that only holds crash suspects: usually empty, always cheap.
    // $1 test clock, $2 command types.
    this.anySuspectDue = statement('suspect', `SELECT 1 FROM ${t}
      WHERE ${from('claim')} AND ${SUSPECT} AND NOT "waiting" AND ${due} AND "command_type" = ANY($2::text[]) LIMIT 1`, prepared);

    // Ordering keys (see state/ordering.ts). lockKeys: the first step of handing keys over, in the
    // transaction that finished their holders (and of a receiveMany in a transaction): it locks the
    // keys' rows, so that no receive of them runs until it commits, creating a row that retention
    // removed (or that a new key lacks). One pass in key order, so that two transactions cannot
    // wait for each other: a missing row is inserted (and so held), an existing one locked by the
    // conflict (DO UPDATE … WHERE false locks the row and writes nothing; unlike a SELECT … FOR
    // UPDATE after an insert in the same statement, it sees a row committed after the statement
    // began, and the rows the statement itself inserts). $1 keys.
    const holding = `("status" IN (${HOLDING_STATUSES.map(status).join(', ')}) OR "blocks_key")`;
    this.lockKeys = statement('lock_keys', `INSERT INTO ${keys} ("ordering_key", "last_seq", "busy")
        SELECT DISTINCT "key", 0, false FROM unnest($1::text[]) AS u("key") ORDER BY 1
        ON CONFLICT ("ordering_key") DO UPDATE SET "busy" = ${keys}."busy" WHERE false`, prepared);
    // settleKeys: the second step, a statement of its own so that it sees every entry a receive
    // committed before the lock was granted. A key whose holder is done gets its earliest waiting
    // entry as holder; a key with neither holder nor waiting entry is free again (and one that has
    // a holder is busy, whatever its row said). Returns the new holders. $1 keys, $2 test clock.
    this.settleKeys = statement('settle_keys', `WITH settled AS (
        SELECT u."key", EXISTS (
            SELECT 1 FROM ${t} WHERE "ordering_key" = u."key" AND NOT "waiting" AND ${holding}
          ) AS "held"
        FROM (SELECT DISTINCT "key" FROM unnest($1::text[]) AS u("key")) AS u
      ), next AS (
        SELECT n."id", s."key" FROM settled s
        CROSS JOIN LATERAL (
          SELECT "id" FROM ${t} WHERE "ordering_key" = s."key" AND "waiting" ORDER BY "ordering_seq" LIMIT 1
        ) AS n
        WHERE NOT s."held"
      ), promoted AS (
        UPDATE ${t} AS e SET "waiting" = false FROM next WHERE e."id" = next."id"
        RETURNING e."id", e."ordering_key", e."status"
      ), marked AS (
        UPDATE ${keys} AS k SET "busy" = s."busy", "touched_at" = ${wallTime('$2')}
        FROM (SELECT "key", "held" OR EXISTS (SELECT FROM next WHERE next."key" = settled."key") AS "busy" FROM settled) AS s
        WHERE k."ordering_key" = s."key" AND k."busy" IS DISTINCT FROM s."busy"
      )
      SELECT "id", "ordering_key", "status" FROM promoted`, prepared);
    // The keys held by a dead letter (policy block), oldest first, each with how many entries wait
    // behind it. $1 command type of the blocking entry or NULL, $2 limit.
    this.blockedKeys = `SELECT ${COLUMNS}, (SELECT count(*)::int FROM ${t} AS w WHERE w."ordering_key" = e."ordering_key" AND w."waiting") AS "waiting_behind"
      FROM ${t} AS e
      WHERE e."status" = ${status(InboxStatus.DeadLetter)} AND e."blocks_key" AND NOT e."waiting" AND e."ordering_key" IS NOT NULL
        AND ($1::varchar IS NULL OR e."command_type" = $1)
      ORDER BY e."dead_lettered_at", e."id" LIMIT $2`;
    // The entry that holds key $1, if any.
    this.keyHolder = `SELECT ${COLUMNS} FROM ${t} WHERE "ordering_key" = $1 AND NOT "waiting" AND ${holding}`;

    // replay: back to Pending with no attempts, the same messageId. A corrected payload keeps the
    // digest of the one first received (see sameCommand); the last outcome is kept, so a replayed
    // crash suspect still runs alone. With an ordering key it keeps its place (see resetForReplay;
    // settleKeys follows). $1 id, $2 corrected payload or NULL, $3 actor, $4 reason, $5 test clock.
    this.replay = `WITH previous AS (
        SELECT "id", "payload" FROM ${t} WHERE "id" = $1 AND ${from('replay')} FOR UPDATE
      ), replayed AS (
        UPDATE ${t} AS e SET ${this.resetForReplay('e.')}, "payload" = COALESCE($2::jsonb, e."payload"),
          "payload_digest" = CASE WHEN $2::jsonb IS NULL THEN e."payload_digest" ELSE COALESCE(e."payload_digest", md5(e."payload"::text)) END
        FROM previous WHERE e."id" = previous."id"
        RETURNING ${columnList('e')}, previous."payload" AS "previous_payload"
      ), recorded AS (
        INSERT INTO ${h} ("entry_id", "event", "actor", "reason", "previous_payload", "recorded_at")
        SELECT "id", '${HistoryEvent.Replayed}', $3, $4, CASE WHEN $2::jsonb IS NULL THEN NULL ELSE "previous_payload" END, ${wallTime('$5')} FROM replayed
      )
      SELECT ${COLUMNS} FROM replayed`;
    // discard: closes a dead letter; it stays for deduplication and audit, and no longer holds or
    // waits in its key's order (settleKeys follows). $1 id, $2 test clock, $3 actor, $4 reason.
    this.discard = `WITH discarded AS (
        UPDATE ${t} SET "status" = ${to('discard')}, "discarded_at" = ${wallTime('$2')}, "blocks_key" = false, "waiting" = false
        WHERE "id" = $1 AND ${from('discard')} AND "discarded_at" IS NULL
        RETURNING ${COLUMNS}
      ), recorded AS (
        INSERT INTO ${h} ("entry_id", "event", "actor", "reason", "recorded_at")
        SELECT "id", '${HistoryEvent.Discarded}', $3, $4, "discarded_at" FROM discarded
      )
      SELECT ${COLUMNS} FROM discarded`;
    // deadLetter, by hand. With an ordering key, $5 says whether it holds its key (policy block): a
    // holder keeps holding it, a waiting entry will hold it when its turn comes; under skip it is
    // done with its key's order (settleKeys follows). $1 id, $2 test clock, $3 actor, $4 reason.
    this.deadLetter = `WITH dead AS (
        UPDATE ${t} SET "status" = ${to('deadLetter')}, "dead_letter_reason" = 'manual', "dead_lettered_at" = ${wallTime('$2')},
          "blocks_key" = "ordering_key" IS NOT NULL AND $5::boolean, "waiting" = "waiting" AND $5::boolean,
          "error" = 'Dead-lettered by ' || $3::varchar || COALESCE(': ' || $4::text, ''), "next_retry_at" = NULL
        WHERE "id" = $1 AND ${from('deadLetter')}
        RETURNING ${COLUMNS}
      ), recorded AS (
        INSERT INTO ${h} ("entry_id", "event", "actor", "reason", "recorded_at")
        SELECT "id", '${HistoryEvent.DeadLetter}', $3::varchar, $4::text, "dead_lettered_at" FROM dead
      )
      SELECT ${COLUMNS} FROM dead`;

    // Retention, in small batches that skip rows others hold. $1 test clock, $2 age, $3 batch size.
    this.removePayloads = `UPDATE ${t} SET "payload_digest" = COALESCE("payload_digest", md5("payload"::text)), "payload" = NULL, "metadata" = '{}'
      WHERE "id" IN (SELECT "id" FROM ${t}
        WHERE ${from('removePayload')} AND "payload" IS NOT NULL AND "processed_at" < ${statementTime('$1')} - $2::interval
        ORDER BY "processed_at" LIMIT $3 FOR UPDATE SKIP LOCKED)`;
    // Keys free for longer than the deduplication window ($2): their row only numbers entries long
    // gone. Not a key with a dead letter (discarded or not, it can be replayed): numbered again from
    // 1, the key would put that replay among the entries received after it, not before them. The
    // dead letters' keys come from the dead-letter index, a small set read once per batch.
    this.removeIdleKeys = `DELETE FROM ${keys} WHERE "ordering_key" IN (SELECT "ordering_key" FROM ${keys}
        WHERE NOT "busy" AND "touched_at" < ${statementTime('$1')} - $2::interval
          AND "ordering_key" NOT IN (SELECT "ordering_key" FROM ${t} WHERE "status" = ${status(InboxStatus.DeadLetter)} AND "ordering_key" IS NOT NULL)
        LIMIT $3 FOR UPDATE SKIP LOCKED)`;
    this.removeCompleted = `DELETE FROM ${t}
      WHERE "id" IN (SELECT "id" FROM ${t}
        WHERE ${from('remove')} AND "processed_at" < ${statementTime('$1')} - $2::interval
        ORDER BY "processed_at" LIMIT $3 FOR UPDATE SKIP LOCKED)`;

    // The gauges' figures, shared by the fleet: the first instance that finds them older than $1
    // recounts them in the same statement (a concurrent one then sees the row fresh, and skips);
    // every other one reads them, FOR SHARE so that one which waited for a recount reads its result
    // (a plain read would see the row as it was when the statement began). Each count is served by a partial index or a range of the
    // (status, received_at) index, so it costs what the open entries number, not the table: the
    // completed entries are estimated from the planner's statistics (reltuples) instead. A table
    // never analyzed has none (-1): a small one, as autovacuum analyzes a table only past 50 changed
    // rows, or a new one; its rows are counted, up to a bound. $1 age, $2 test clock.
    const counted = (s: InboxStatus) => `(SELECT count(*) FROM ${t} WHERE "status" = ${status(s)})`;
    const snapshotColumns = `"pending", "processing", "failed", "dead_letter", "completed_estimate", "open_dead_letters", "expired_leases", "oldest_due_at", "refreshed_at", ${statementTime('$2')} AS "read_at"`;
    this.snapshot = statement('snapshot', `WITH fresh AS (
        UPDATE ${snapshot} SET "refreshed_at" = now(),
          "pending" = ${counted(InboxStatus.Pending)}, "processing" = ${counted(InboxStatus.Processing)},
          "failed" = ${counted(InboxStatus.Failed)}, "dead_letter" = ${counted(InboxStatus.DeadLetter)},
          "completed_estimate" = (SELECT CASE WHEN "reltuples" >= 0 THEN "reltuples"::bigint
            ELSE (SELECT count(*) FROM (SELECT FROM ${t} LIMIT ${UNANALYZED_COUNT_LIMIT}) AS "rows") END
            FROM pg_class WHERE "oid" = '${t}'::regclass),
          "open_dead_letters" = (SELECT count(*) FROM ${t} WHERE "status" = ${status(InboxStatus.DeadLetter)} AND "discarded_at" IS NULL),
          "expired_leases" = (SELECT count(*) FROM ${t} WHERE ${from('expireLease')} AND "locked_until" <= ${statementTime('$2')}),
          "oldest_due_at" = (SELECT min(${DUE_AT}) FROM ${t} WHERE ${from('claim')} AND NOT "waiting")
        WHERE "id" = 1 AND "refreshed_at" <= now() - $1::interval
        RETURNING ${snapshotColumns}
      ), kept AS (
        SELECT ${snapshotColumns} FROM ${snapshot} WHERE "id" = 1 AND NOT EXISTS (SELECT FROM fresh) FOR SHARE
      )
      SELECT * FROM fresh UNION ALL SELECT * FROM kept`, prepared);
    // Dead letters since $1 (the health check's last look): the dead-letter index's range. $2 test clock.
    this.deadLettersSince = `SELECT count(*)::int AS "count", ${wallTime('$2')} AS "now" FROM ${t}
      WHERE "status" = ${status(InboxStatus.DeadLetter)} AND "dead_lettered_at" > $1`;
  }

  /**
   * What a replay resets: status, attempts, times and claim, the dead-letter marks. An entry that
   * holds its ordering key (a blocking dead letter, or a Failed one: only a holder runs) stays its
   * holder and runs next; any other keyed entry waits for its turn by its sequence number (settleKeys
   * gives it the key at once if nothing else holds it).
   */
  private resetForReplay(alias = ''): string {
    const c = (column: string) => `${alias}"${column}"`;
    return `"status" = '${TRANSITIONS.replay.to[0]}'::${this.statusType}, "retry_count" = 0, "next_retry_at" = NULL,
        "processed_at" = NULL, "processing_started_at" = NULL, "processed_by" = NULL, ${CLEAR_CLAIM},
        "dead_letter_reason" = NULL, "dead_lettered_at" = NULL, "discarded_at" = NULL,
        "waiting" = ${c('ordering_key')} IS NOT NULL AND (${c('waiting')} OR NOT (${c('blocks_key')} OR ${c('status')} = '${InboxStatus.Failed}')),
        "blocks_key" = false`;
  }

  /**
   * Newest first; `after`: the last entry of the page before (keyset: pages hold still while
   * entries arrive). Without a status, one branch per status, each reading the (status,
   * received_at) index backwards for its first `limit` rows, merged: the newest entries of a big
   * table without sorting it (and without an index of its own on the receive path). A filter that
   * may match few rows is one scan, sorted.
   */
  list(filter: EntryFilter, limit: number, after: string | null = null): { sql: string; params: unknown[] } {
    // From the fixed set only: the status is written into the statement, not passed.
    const statuses = INBOX_STATUSES.filter((status) => filter.status === undefined || status === filter.status);
    // Other conditions (a command type, a payload value, an error) may match few rows: those are
    // found by one scan and sorted, not walked for through each status's entries.
    const selective = ['commandType', 'deadLetterReason', 'errorContains', 'errorFingerprint', 'payload'].some((name) => filter[name as keyof EntryFilter] !== undefined);
    const { clause, params } = whereClause({ ...filter, status: undefined }, this.statusType);
    const conditions = clause ? [clause.slice('WHERE '.length)] : [];
    if (after !== null) {
      params.push(after);
      conditions.push(`("received_at", "id") < (SELECT "received_at", "id" FROM ${this.table} WHERE "id" = $${params.length})`);
    }
    params.push(limit);
    const limitParam = `$${params.length}`;
    const branch = (status: InboxStatus) =>
      `(SELECT ${COLUMNS} FROM ${this.table} WHERE ${['"status" = ' + `'${status}'::${this.statusType}`, ...conditions].join(' AND ')} ORDER BY "received_at" DESC, "id" DESC LIMIT ${limitParam})`;
    if (selective && filter.status === undefined) {
      return { sql: `SELECT ${COLUMNS} FROM ${this.table} ${conditions.length ? `WHERE ${conditions.join(' AND ')}` : ''} ORDER BY "received_at" DESC, "id" DESC LIMIT ${limitParam}`, params };
    }
    const sql = statuses.length === 1 ? branch(statuses[0]) : `SELECT * FROM (${statuses.map(branch).join(' UNION ALL ')}) AS newest ORDER BY "received_at" DESC, "id" DESC LIMIT ${limitParam}`;
    return { sql, params };
  }

  /**
   * Dead letters not discarded, grouped by command type and error fingerprint, the largest group
   * first, each with its newest entry's id and error. Params: ...filter, limit.
   */
  deadLetterGroups(filter: EntryFilter, limit: number): { sql: string; params: unknown[] } {
    const { clause, params } = whereClause({ ...filter, status: InboxStatus.DeadLetter, includeDiscarded: false }, this.statusType);
    return {
      sql: `SELECT "command_type", "fingerprint", count(*)::int AS "count", min("dead_lettered_at") AS "first_at", max("dead_lettered_at") AS "last_at",
          (array_agg("id" ORDER BY "dead_lettered_at" DESC, "id"))[1] AS "example_id", (array_agg("error" ORDER BY "dead_lettered_at" DESC, "id"))[1] AS "example_error",
          (array_agg(DISTINCT "dead_letter_reason"::text)) AS "reasons"
        FROM (SELECT *, ${ERROR_FINGERPRINT} AS "fingerprint" FROM ${this.table} ${clause}) AS d
        GROUP BY "command_type", "fingerprint" ORDER BY count(*) DESC, "command_type", "fingerprint" LIMIT $${params.length + 1}`,
      params: [...params, limit],
    };
  }

  /**
   * One batch of a bulk discard, as replayBatch does it: dead letters not discarded yet. Params:
   * ...filter, afterId, batchSize, actor, reason, test clock.
   */
  discardBatch(filter: EntryFilter): { sql: string; params: unknown[] } {
    const { clause, params } = whereClause({ ...filter, status: InboxStatus.DeadLetter, includeDiscarded: false }, this.statusType);
    const n = params.length;
    return {
      sql: `WITH batch AS (
          SELECT "id" FROM ${this.table} ${clause} AND "id" > $${n + 1} ORDER BY "id" LIMIT $${n + 2} FOR UPDATE SKIP LOCKED
        ), discarded AS (
          UPDATE ${this.table} AS e SET "discarded_at" = ${wallTime(`$${n + 5}`)}, "blocks_key" = false, "waiting" = false
          FROM batch WHERE e."id" = batch."id" RETURNING e."id", e."ordering_key", e."command_type", e."discarded_at"
        ), recorded AS (
          INSERT INTO ${this.history} ("entry_id", "event", "actor", "reason", "recorded_at")
          SELECT "id", '${HistoryEvent.Discarded}', $${n + 3}, $${n + 4}, "discarded_at" FROM discarded
        )
        SELECT "id", "ordering_key", "command_type" FROM discarded ORDER BY "id"`,
      params,
    };
  }

  count(filter: EntryFilter): { sql: string; params: unknown[] } {
    const { clause, params } = whereClause(filter, this.statusType);
    return { sql: `SELECT count(*)::int AS "count" FROM ${this.table} ${clause}`, params };
  }

  /**
   * One batch of a bulk replay: the next `batchSize` matching entries after `afterId` (keyset, so
   * each batch is a short statement of its own and the table is never locked as a whole). The
   * filter's status must be one replay accepts. Params: ...filter, afterId, batchSize, actor,
   * reason, test clock.
   */
  replayBatch(filter: EntryFilter): { sql: string; params: unknown[] } {
    const { clause, params } = whereClause(filter, this.statusType);
    const n = params.length;
    // Keyset by (place in its key, id): the earlier entries of a key are replayed in an earlier
    // batch than its later ones, so that one replayed later never takes a free key ahead of an
    // earlier one still to come (a batch's hand-over commits with it). The cursor is the last
    // entry of the batch before (none at first: from the start).
    const place = `COALESCE("ordering_seq", 0)`;
    const cursor = `(SELECT COALESCE(c."ordering_seq", 0), c."id" FROM ${this.table} AS c WHERE c."id" = $${n + 1}
        UNION ALL SELECT 0, '00000000-0000-0000-0000-000000000000'::uuid ORDER BY 1 DESC, 2 DESC LIMIT 1)`;
    const keyset = `${clause ? `${clause} AND` : 'WHERE'} (${place}, "id") > ${cursor}`;
    return {
      sql: `WITH batch AS (
          SELECT "id" FROM ${this.table} ${keyset} ORDER BY ${place}, "id" LIMIT $${n + 2} FOR UPDATE SKIP LOCKED
        ), replayed AS (
          UPDATE ${this.table} AS e SET ${this.resetForReplay('e.')}
          FROM batch WHERE e."id" = batch."id" RETURNING e."id", e."ordering_key", e."ordering_seq", e."command_type"
        ), recorded AS (
          INSERT INTO ${this.history} ("entry_id", "event", "actor", "reason", "recorded_at")
          SELECT "id", '${HistoryEvent.Replayed}', $${n + 3}, $${n + 4}, ${wallTime(`$${n + 5}`)} FROM replayed
        )
        SELECT "id", "ordering_key", "command_type" FROM replayed ORDER BY ${place}, "id"`,
      params,
    };
  }
}
