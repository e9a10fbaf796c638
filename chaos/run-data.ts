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

export interface RunData {
  entries: EntryRow[];
  /** Failed attempts, by messageId then attempt number. */
  attempts: Map<string, Map<number, AttemptRow>>;
  effectIds: string[];
}

export async function readRunData(url: string): Promise<RunData> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    const { rows: entries } = await client.query<EntryRow>(
      `SELECT id, message_id, command_type, status, retry_count, error, dead_letter_reason, processed_by, payload->>'kind' AS kind FROM inbox_entries`,
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
    return { entries, attempts, effectIds: effects.map((r) => r.message_id) };
  } finally {
    await client.end();
  }
}
