import { InboxArgumentError } from '../errors/inbox.error';
import type { ListEntriesQuery } from '../interfaces/inbox-command.interface';
import { onlyFields } from '../receive/command-validation';
import type { EntryFilter } from '../store/entry-filter';

/** A query string as Express or Fastify parse it. */
export type QueryString = Record<string, unknown>;

const TEXT_FIELDS = ['status', 'commandType', 'deadLetterReason', 'errorContains', 'errorFingerprint'] as const;
const FILTER_FIELDS = new Set<string>([...TEXT_FIELDS, 'receivedAfter', 'receivedBefore', 'includeDiscarded']);

/**
 * A filter from a query string (or a bulk action's `filter` object): the fields of EntryFilter as
 * text, times as ISO 8601, `includeDiscarded` as true/false, and `payload.<path>=<text>` for values
 * inside the payload. Unknown fields are refused, so a typo never widens a bulk action.
 * InboxService validates the values.
 */
export function filterFrom(source: unknown, name: string, extra: readonly string[] = []): EntryFilter {
  if (typeof source !== 'object' || source === null || Array.isArray(source)) throw new InboxArgumentError(name, 'expected an object');
  const filter: EntryFilter = {};
  // No prototype: a path named `__proto__` is kept as a path, not swallowed by a setter.
  const payload: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [field, raw] of Object.entries(source as QueryString)) {
    if (extra.includes(field)) continue;
    if (field === 'payload' && typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
      // A bulk action's body may nest the payload's paths.
      for (const [path, text] of Object.entries(raw)) payload[path] = single(`${name}.payload.${path}`, text);
      continue;
    }
    const value = single(`${name}.${field}`, raw);
    if (field.startsWith('payload.')) {
      payload[field.slice('payload.'.length)] = value;
    } else if (!FILTER_FIELDS.has(field)) {
      throw new InboxArgumentError(`${name}.${field}`, `unknown filter; expected one of ${[...FILTER_FIELDS].join(', ')} or payload.<path>`);
    } else if (field === 'receivedAfter' || field === 'receivedBefore') {
      const time = new Date(value);
      // Date rolls 2025-02-30 over into March: refused, as the CLI refuses it.
      const [year, month, day] = value.slice(0, 10).split('-').map(Number);
      const calendar = new Date(0);
      calendar.setUTCFullYear(year, month - 1, day);
      const realDay = calendar.getUTCMonth() === month - 1 && calendar.getUTCDate() === day;
      if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(time.getTime()) || !realDay) throw new InboxArgumentError(`${name}.${field}`, 'expected an ISO 8601 time');
      filter[field] = time;
    } else if (field === 'includeDiscarded') {
      if (value !== 'true' && value !== 'false') throw new InboxArgumentError(`${name}.${field}`, 'expected true or false');
      filter.includeDiscarded = value === 'true';
    } else {
      (filter as Record<string, unknown>)[field] = value;
    }
  }
  if (Object.keys(payload).length > 0) filter.payload = { ...payload };
  return filter;
}

/** The list's query: a filter, `limit` and `after` (the last id of the page before). */
export function listQueryFrom(query: QueryString): ListEntriesQuery {
  const listed: ListEntriesQuery = filterFrom(query, 'query', ['limit', 'after']);
  if (query.limit !== undefined) listed.limit = limitFrom(query.limit);
  if (query.after !== undefined) listed.after = single('query.after', query.after);
  return listed;
}

/** The query of the dead-letter groups and the blocked keys: a command type and a limit. */
export function typeQueryFrom(query: QueryString): { commandType?: string; limit?: number } {
  onlyFields(query, 'query', ['commandType', 'limit']);
  return {
    commandType: query.commandType === undefined ? undefined : single('query.commandType', query.commandType),
    limit: query.limit === undefined ? undefined : limitFrom(query.limit),
  };
}

/** Digits only; InboxService checks the range. */
function limitFrom(value: unknown): number {
  const limit = single('query.limit', value);
  if (!/^\d+$/.test(limit)) throw new InboxArgumentError('query.limit', 'expected an integer from 1 to 1000');
  return Number(limit);
}

/** One text: a field given twice (`?status=a&status=b`) is refused rather than guessed. */
function single(name: string, value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  throw new InboxArgumentError(name, 'expected one text value');
}
