import type { InboxEntry } from '../store/inbox-entry.entity';
import { HistoryEvent, type DeadLetterReason } from '../state/inbox-state-machine';
import type { InboxHistoryRecord } from '../interfaces/inbox-history.interface';
import type { InboxStatus } from '../state/inbox-state-machine';
import type { BlockedKey, DueCommandType } from '../interfaces/inbox-command.interface';

export interface Stats {
  byStatus: Record<InboxStatus, number>;
  /** Dead letters per reason: still open (replayable) and discarded. */
  deadLetters: Record<DeadLetterReason, { open: number; discarded: number }>;
  /** What is due now, by command type (a type no running worker handles waits here). */
  due: DueCommandType[];
}

/** Seconds are enough on a terminal; JSON output keeps full precision. */
export function formatDate(date: Date | null | undefined): string {
  return date ? date.toISOString().replace(/\.\d{3}Z$/, 'Z') : '-';
}

/** One line, at most `max` characters: error messages can be long and multi-line. */
export function truncate(text: string | null | undefined, max: number): string {
  if (!text) return '-';
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

function statusOf(entry: InboxEntry): string {
  return entry.discardedAt ? `${entry.status} (discarded)` : entry.status;
}

export function formatStats(stats: Stats): string {
  const statuses = Object.entries(stats.byStatus);
  const total = statuses.reduce((sum, [, n]) => sum + n, 0);
  const reasons = Object.entries(stats.deadLetters).map(([reason, { open, discarded }]) => [reason, String(open), String(discarded)]);
  return [
    table(['status', 'entries'], [...statuses.map(([status, n]) => [status, String(n)]), ['total', String(total)]]),
    '',
    table(['dead-letter reason', 'open', 'discarded'], reasons),
    '',
    stats.due.length === 0
      ? 'Nothing is due.'
      : table(['due command type', 'entries', 'due since'], stats.due.map((d) => [d.commandType, String(d.due), formatDate(d.oldestDueAt)])),
  ].join('\n');
}

export function formatBlockedKeys(keys: BlockedKey[]): string {
  if (keys.length === 0) return 'No ordering key is blocked.';
  return table(
    ['ordering key', 'waiting', 'blocked by', 'type', 'reason', 'since', 'error'],
    keys.map((key) => [
      truncate(key.orderingKey, 40),
      String(key.waiting),
      key.blockedBy.id,
      truncate(key.blockedBy.commandType, 30),
      key.blockedBy.deadLetterReason ?? '-',
      formatDate(key.blockedBy.deadLetteredAt),
      truncate(key.blockedBy.error, 60),
    ]),
  );
}

export function formatEntryTable(entries: InboxEntry[]): string {
  if (entries.length === 0) return 'No matching entries.';
  return table(
    ['id', 'messageId', 'type', 'status', 'retries', 'reason', 'receivedAt', 'error'],
    entries.map((e) => [
      e.id,
      truncate(e.messageId, 40),
      truncate(e.commandType, 40),
      statusOf(e),
      String(e.retryCount),
      e.deadLetterReason ?? '-',
      formatDate(e.receivedAt),
      truncate(e.error, 60),
    ]),
  );
}

export function formatEntry(entry: InboxEntry, history: InboxHistoryRecord[]): string {
  const fields: Array<[string, string]> = [
    ['id', entry.id],
    ['messageId', entry.messageId],
    ['type', entry.commandType],
    ['status', statusOf(entry)],
    ['retryCount', String(entry.retryCount)],
    ['receivedAt', formatDate(entry.receivedAt)],
    ['processedAt', entry.processedBy ? `${formatDate(entry.processedAt)} by ${entry.processedBy}` : formatDate(entry.processedAt)],
    ['nextRetryAt', formatDate(entry.nextRetryAt)],
    ['deadLetterReason', entry.deadLetterReason ?? '-'],
    ['deadLetteredAt', formatDate(entry.deadLetteredAt)],
    ['discardedAt', formatDate(entry.discardedAt)],
    ['orderingKey', entry.orderingKey === null ? '-' : `${entry.orderingKey} #${entry.orderingSeq}${entry.waiting ? ' (waiting)' : ''}${entry.blocksKey ? ' (blocks the key)' : ''}`],
    ['correlationId', entry.correlationId ?? '-'],
    ['causationId', entry.causationId ?? '-'],
    ['lockedBy', entry.lockedBy ? `${entry.lockedBy} until ${formatDate(entry.lockedUntil)}` : '-'],
    ['error', entry.error ?? '-'],
    // Retention removes the payload of old completed entries.
    ['payload', entry.payload === null ? '(removed by retention)' : JSON.stringify(entry.payload)],
    ['metadata', JSON.stringify(entry.metadata)],
  ];
  const width = Math.max(...fields.map(([name]) => name.length));
  const head = fields.map(([name, value]) => `${name.padEnd(width)}  ${value}`).join('\n');
  return `${head}\n\nHistory\n${formatHistory(history)}`;
}

function formatHistory(history: InboxHistoryRecord[]): string {
  if (history.length === 0) return '(none recorded)';
  return table(
    ['#', 'event', 'outcome', 'at', 'duration', 'by', 'detail'],
    history.map((record) => {
      const attempt = record.event === HistoryEvent.Attempt;
      const detail = attempt
        ? record.errorClass || record.errorMessage
          ? `${record.errorClass ?? 'Error'}: ${record.errorMessage ?? ''}`
          : ''
        : [record.reason, record.previousPayload ? '(payload corrected)' : null].filter(Boolean).join(' ');
      return [
        record.attempt === null ? '' : String(record.attempt),
        record.event,
        record.outcome ?? '',
        formatDate(attempt ? (record.startedAt ?? record.recordedAt) : record.recordedAt),
        record.durationMs === null ? '' : `${record.durationMs} ms`,
        (attempt ? record.workerId : record.actor) ?? '',
        truncate(detail, 200).replace(/^-$/, ''),
      ];
    }),
  );
}

/** Stable JSON for scripts: dates as ISO strings (JSON.stringify's default), two-space indent. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
