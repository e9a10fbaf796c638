// What the database holds at the end of a run, read once for every check: the entries, their
// recorded attempts (the inbox's attempt history) and the effect rows.
import { Client } from 'pg';
import type { DeadLetterReason, InboxStatus } from '../lib';

export interface EntryRow {
  id: string;
  message_id: string;
  command_type: string;
  status: InboxStatus;
  retry_count: number;
  error: string | null;
  dead_letter_reason: DeadLetterReason | null;
  /** The worker that completed it. */
  processed_by: string | null;
  kind: string | null;
  ordering_key: string | null;
  /** Its place in its key's order (bigint, as text). */
  ordering_seq: string | null;
  waiting: boolean;
  blocks_key: boolean;
  /** Database times in microseconds since the epoch (a Date would cut them to milliseconds). */
  received_us: number;
  dead_lettered_us: number | null;
  discarded_us: number | null;
}

/** One failed attempt as the history records it (the completing attempt lives on the entry). */
export interface AttemptRow {
  message_id: string;
  attempt: number;
  error_class: string | null;
  worker_id: string | null;
  /** For a lease expiry: the attempt's start stamp (a crash suspect's, stamped right before its handler). */
  started_at: Date | null;
}

/** An effect row of a keyed command: a committed handler run, timed by the database's clock. */
export interface KeyedEffectRow {
  message_id: string;
  ordering_key: string;
  ordering_seq: string;
  /** The database's clock when the handler started and finished, in microseconds since the epoch. */
  started_us: number;
  finished_us: number | null;
}

export interface RunData {
  entries: EntryRow[];
  /** Failed attempts, by messageId then attempt number. */
  attempts: Map<string, Map<number, AttemptRow>>;
  effectIds: string[];
  /** The effect rows that carry an ordering key. */
  keyedEffects: KeyedEffectRow[];
}

/** A timestamp column as microseconds since the epoch (exact in a double until the year 2255). */
const micros = (column: string) => `(extract(epoch FROM ${column}) * 1000000)::float8`;

export async function readRunData(url: string): Promise<RunData> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    const { rows: entries } = await client.query<EntryRow>(
      `SELECT id, message_id, command_type, status, retry_count, error, dead_letter_reason, processed_by, payload->>'kind' AS kind,
         ordering_key, ordering_seq, waiting, blocks_key,
         ${micros('received_at')} AS received_us, ${micros('dead_lettered_at')} AS dead_lettered_us, ${micros('discarded_at')} AS discarded_us
       FROM inbox_entries`,
    );
    const { rows: history } = await client.query<AttemptRow>(
      `SELECT e.message_id, h.attempt, h.error_class, h.worker_id, h.started_at FROM inbox_entries_history h JOIN inbox_entries e ON e.id = h.entry_id
       WHERE h.event = 'attempt'`,
    );
    const attempts = new Map<string, Map<number, AttemptRow>>();
    for (const row of history) {
      const byAttempt = attempts.get(row.message_id) ?? new Map<number, AttemptRow>();
      byAttempt.set(row.attempt, row);
      attempts.set(row.message_id, byAttempt);
    }
    const { rows: effects } = await client.query<{ message_id: string }>('SELECT message_id FROM chaos_effects');
    const { rows: keyedEffects } = await client.query<KeyedEffectRow>(
      `SELECT message_id, ordering_key, ordering_seq, ${micros('started_at')} AS started_us, ${micros('finished_at')} AS finished_us
       FROM chaos_effects WHERE ordering_key IS NOT NULL`,
    );
    return { entries, attempts, effectIds: effects.map((r) => r.message_id), keyedEffects };
  } finally {
    await client.end();
  }
}
