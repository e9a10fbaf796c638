import type { DeadLetterReason, InboxStatus } from '../state/inbox-state-machine';

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
  /**
   * Values inside the payload, by dotted path (`{ 'customer.id': 'c-1' }`), compared as text: a
   * number matches its digits. Every pair must match.
   */
  payload?: Record<string, string>;
  /** The last error with its ids and numbers masked (see ERROR_FINGERPRINT): one group of dead letters. */
  errorFingerprint?: string;
}

/**
 * The last error with what differs between occurrences of one failure masked: UUIDs as `<id>`,
 * then digits as `<n>`. Dead letters with the same fingerprint failed the same way.
 */
export const ERROR_FINGERPRINT = `regexp_replace(regexp_replace(left(COALESCE("error", ''), 500), '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '<id>', 'g'), '[0-9]+', '<n>', 'g')`;

/**
 * A WHERE clause for a filter, every value a parameter; `first` is the number of the first one.
 * `statusType` is the table's enum type.
 */
export function whereClause(filter: EntryFilter, statusType: string, first = 1): { clause: string; params: unknown[] } {
  const conditions: string[] = [];
  const params: unknown[] = [];
  const param = (value: unknown) => {
    params.push(value);
    return `$${first + params.length - 1}`;
  };
  if (filter.status !== undefined) conditions.push(`"status" = ${param(filter.status)}::${statusType}`);
  if (filter.commandType !== undefined) conditions.push(`"command_type" = ${param(filter.commandType)}`);
  if (filter.deadLetterReason !== undefined) conditions.push(`"dead_letter_reason" = ${param(filter.deadLetterReason)}`);
  if (filter.errorContains !== undefined) {
    const escaped = filter.errorContains.replace(/[\\%_]/g, (c) => `\\${c}`);
    conditions.push(`"error" ILIKE ${param(`%${escaped}%`)}`);
  }
  if (filter.receivedAfter !== undefined) conditions.push(`"received_at" >= ${param(filter.receivedAfter)}`);
  if (filter.receivedBefore !== undefined) conditions.push(`"received_at" < ${param(filter.receivedBefore)}`);
  if (filter.includeDiscarded === false) conditions.push(`"discarded_at" IS NULL`);
  for (const [path, value] of Object.entries(filter.payload ?? {})) {
    conditions.push(`"payload" #>> ${param(path.split('.'))}::text[] = ${param(value)}`);
  }
  if (filter.errorFingerprint !== undefined) conditions.push(`${ERROR_FINGERPRINT} = ${param(filter.errorFingerprint)}`);
  return { clause: conditions.length ? `WHERE ${conditions.join(' AND ')}` : '', params };
}
