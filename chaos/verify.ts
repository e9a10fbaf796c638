// The end-of-run checks: compares what the producers generated with the inbox table and the
// effects table. Each broken invariant becomes one violation line.
import { readFileSync } from 'node:fs';
import { Client } from 'pg';
import { InboxStatus } from '../lib';
import { MAX_ATTEMPTS, PERMANENT_MESSAGE, type Kind, type PlannedCommand } from './chaos-commands';

interface EntryRow {
  message_id: string;
  status: InboxStatus;
  retry_count: number;
  error: string | null;
  kind: string | null;
}

export interface Verification {
  violations: string[];
  byStatus: Record<string, number>;
  deadLetters: Record<'permanent' | 'invalid' | 'poison' | 'other', number>;
  effects: number;
  /** Completed entries that needed more than one attempt although they never failed by design. */
  okRetried: number;
  /** Attempts recorded over all entries (retry_count + 1 for Completed, retry_count for DeadLetter). */
  attempts: number;
}

const DESIGNED_DEAD: ReadonlySet<Kind> = new Set(['permanent', 'invalid', 'poison']);

/**
 * `describeWorker` names what ended a worker process (by its workerId), to explain dead letters
 * that were not designed from the attempt history.
 */
export async function verify(
  url: string,
  commands: PlannedCommand[],
  workerLogs: string[],
  describeWorker: (workerId: string) => string,
): Promise<Verification> {
  const client = new Client({ connectionString: url });
  await client.connect();
  let entries: EntryRow[];
  let effectIds: string[];
  let lostAttempts: Map<string, string[]>;
  try {
    entries = (await client.query<EntryRow>(`SELECT message_id, status, retry_count, error, payload->>'kind' AS kind FROM inbox_entries`)).rows;
    effectIds = (await client.query<{ message_id: string }>('SELECT message_id FROM chaos_effects')).rows.map((r) => r.message_id);
    lostAttempts = await crashedAttempts(client, entries.filter((e) => e.status === InboxStatus.DeadLetter).map((e) => e.message_id), describeWorker);
  } finally {
    await client.end();
  }

  const violations: string[] = [];
  const report = (what: string, items: string[], max = 10) => {
    if (items.length === 0) return;
    const shown = items.slice(0, max).join(', ');
    violations.push(`${what}: ${items.length} (${shown}${items.length > max ? ', ...' : ''})`);
  };

  const planned = new Map(commands.map((c) => [c.messageId, c]));
  const byId = new Map<string, EntryRow>();
  const repeated: string[] = [];
  for (const entry of entries) {
    if (byId.has(entry.message_id)) repeated.push(entry.message_id);
    byId.set(entry.message_id, entry);
  }
  report('commands stored more than once', repeated);
  report('generated commands missing from the inbox (lost)', commands.filter((c) => !byId.has(c.messageId)).map((c) => c.messageId));
  report('inbox entries nobody generated', entries.filter((e) => !planned.has(e.message_id)).map((e) => e.message_id));
  report(
    'entries whose stored payload differs from the generated one',
    entries.filter((e) => planned.has(e.message_id) && planned.get(e.message_id)!.kind !== e.kind).map((e) => e.message_id),
  );

  const byStatus: Record<string, number> = Object.fromEntries(Object.values(InboxStatus).map((s) => [s, 0]));
  for (const entry of entries) byStatus[entry.status]!++;
  report(
    'entries neither Completed nor DeadLetter',
    entries.filter((e) => e.status !== InboxStatus.Completed && e.status !== InboxStatus.DeadLetter).map((e) => `${e.message_id}=${e.status}`),
  );

  // Effects and completions commit in one transaction: the two sets must be identical.
  const effects = new Set(effectIds);
  const completed = entries.filter((e) => e.status === InboxStatus.Completed);
  report('Completed entries without an effect', completed.filter((e) => !effects.has(e.message_id)).map((e) => e.message_id));
  const completedIds = new Set(completed.map((e) => e.message_id));
  report('effects without a Completed entry (rolled-back work that persisted)', effectIds.filter((id) => !completedIds.has(id)));

  // A second run of an applied command hits the effects primary key: visible in the entry's error
  // and in the worker's log line for that failed attempt.
  report('entries that failed on an already applied effect', entries.filter((e) => /duplicate key/i.test(e.error ?? '')).map((e) => e.message_id));
  const logHits = workerLogs.flatMap((file) =>
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((line) => line.includes('chaos_effects_pkey'))
      .map((line) => `${file}: ${line.slice(0, 160)}`),
  );
  report('worker log lines reporting a duplicate effect', logHits, 3);

  const deadLetters = { permanent: 0, invalid: 0, poison: 0, other: 0 };
  const unexpectedDead: string[] = [];
  const wrongReason: string[] = [];
  const missedDead: string[] = [];
  const underRetried: string[] = [];
  let okRetried = 0;
  let attempts = 0;
  for (const command of commands) {
    const entry = byId.get(command.messageId);
    if (!entry) continue;
    const dead = entry.status === InboxStatus.DeadLetter;
    attempts += entry.retry_count + (entry.status === InboxStatus.Completed ? 1 : 0);
    if (dead && !DESIGNED_DEAD.has(command.kind)) {
      const lost = lostAttempts.get(command.messageId);
      unexpectedDead.push(`${command.messageId} (${command.kind}: ${entry.error})${lost ? `\n      lost attempts: ${lost.join('; ')}` : ''}`);
      deadLetters.other++;
      continue;
    }
    if (dead) deadLetters[command.kind as keyof typeof deadLetters]++;
    if (!dead && DESIGNED_DEAD.has(command.kind) && entry.status === InboxStatus.Completed) missedDead.push(`${command.messageId} (${command.kind})`);
    if (dead && !reasonFits(command.kind, entry)) wrongReason.push(`${command.messageId} (${command.kind}: ${entry.error})`);
    if (command.kind === 'transient' && entry.status === InboxStatus.Completed && entry.retry_count < Number(command.payload.failAttempts)) {
      underRetried.push(`${command.messageId} (${entry.retry_count} < ${command.payload.failAttempts})`);
    }
    if (command.kind === 'ok' && entry.retry_count > 0) okRetried++;
  }
  if (unexpectedDead.length > 0) {
    const shown = unexpectedDead.slice(0, 5).map((line) => `\n    ${line}`).join('');
    violations.push(`dead letters that were not designed to fail: ${unexpectedDead.length}${shown}${unexpectedDead.length > 5 ? '\n    ...' : ''}`);
  }
  report('designed failures that Completed', missedDead);
  report('dead letters with an unexpected reason', wrongReason, 5);
  report('transient commands that completed without their designed failures', underRetried);

  return { violations, byStatus, deadLetters, effects: effects.size, okRetried, attempts };
}

function reasonFits(kind: Kind, entry: EntryRow): boolean {
  const error = entry.error ?? '';
  if (kind === 'permanent') return error === PERMANENT_MESSAGE;
  if (kind === 'invalid') return error.startsWith('Payload of') && error.includes('amount');
  // Every attempt of a poison command ends in a crash, so it uses up all of them.
  if (kind === 'poison') return entry.retry_count === MAX_ATTEMPTS && error.startsWith(`Gave up after ${MAX_ATTEMPTS} attempt(s)`);
  return false;
}

/**
 * For each given entry, its attempts that ended in a lease expiry, with what ended the worker
 * that held them. Read from the inbox's attempt history; empty when there is none.
 */
async function crashedAttempts(client: Client, messageIds: string[], describeWorker: (workerId: string) => string): Promise<Map<string, string[]>> {
  const lost = new Map<string, string[]>();
  const { rows: [table] } = await client.query<{ name: string | null }>(`SELECT to_regclass('inbox_entries_history')::text AS name`);
  if (!table?.name || messageIds.length === 0) return lost;
  const { rows } = await client.query<{ message_id: string; attempt: number; worker_id: string | null }>(
    `SELECT e.message_id, h.attempt, h.worker_id FROM inbox_entries_history h JOIN inbox_entries e ON e.id = h.entry_id
     WHERE e.message_id = ANY($1) AND h.error_class = 'LeaseExpiredError' ORDER BY h.attempt`,
    [messageIds],
  );
  for (const row of rows) {
    const list = lost.get(row.message_id) ?? [];
    list.push(`#${row.attempt} in ${row.worker_id} (${row.worker_id ? describeWorker(row.worker_id) : '?'})`);
    lost.set(row.message_id, list);
  }
  return lost;
}
