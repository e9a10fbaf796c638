import { createHash } from 'node:crypto';
import { STATUS_ENUM_NAME } from '../inbox.constants';

/** PostgreSQL cuts identifiers longer than this many bytes (NAMEDATALEN - 1). */
export const MAX_IDENTIFIER_BYTES = 63;

/**
 * `<base>_<suffix>`, or, when that is longer than PostgreSQL keeps, the base cut short with a digest
 * of the whole name in between: derived names never collide or get truncated by the server, and
 * every name short enough to fit stays as it always was.
 */
export function fitIdentifier(base: string, suffix: string): string {
  const full = suffix ? `${base}_${suffix}` : base;
  if (Buffer.byteLength(full) <= MAX_IDENTIFIER_BYTES) return full;
  const digest = createHash('sha1').update(full).digest('hex').slice(0, 8);
  // A short suffix (an index's purpose) stays readable at the end; a long one is cut with the rest.
  const keepSuffix = suffix.length > 0 && suffix.length <= 24;
  const tail = keepSuffix ? `_${digest}_${suffix}` : `_${digest}`;
  return `${(keepSuffix ? base : full).slice(0, MAX_IDENTIFIER_BYTES - tail.length)}${tail}`;
}

/** Every database name derived from a table name (already checked against the identifier pattern). */
export interface InboxIdentifiers {
  /** The table, quoted (`"schema"."table"` or `"table"`). */
  readonly table: string;
  /** Its history table, quoted. */
  readonly history: string;
  /** Its ordering keys table, quoted. */
  readonly keys: string;
  /** Its metrics snapshot table, quoted. */
  readonly snapshot: string;
  /** The status enum type, quoted, in the table's schema. */
  readonly statusType: string;
  /** An index or constraint name of the table, unquoted: `<kind>_<schema>_<table>[_<suffix>]`. */
  name(kind: NameKind, suffix?: string): string;
  /** The same for the history table. */
  historyName(kind: NameKind, suffix?: string): string;
  /** The same for the keys table. */
  keysName(kind: NameKind, suffix?: string): string;
  /** The same for the snapshot table. */
  snapshotName(kind: NameKind, suffix?: string): string;
  /** The LISTEN/NOTIFY channel of the table. */
  readonly channel: string;
}

/** Primary key, unique, check, foreign key, index. */
export type NameKind = 'pk' | 'uq' | 'ck' | 'fk' | 'ix';

export function inboxIdentifiers(tableName: string): InboxIdentifiers {
  const dot = tableName.indexOf('.');
  const schema = dot < 0 ? undefined : tableName.slice(0, dot);
  const quote = (name: string) => (schema ? `"${schema}"."${name}"` : `"${name}"`);
  const bare = dot < 0 ? tableName : tableName.slice(dot + 1);
  // Index and constraint names are unique per schema; the schema is part of them as it always was.
  const prefix = tableName.replace('.', '_');
  return {
    table: quote(bare),
    history: quote(`${bare}_history`),
    keys: quote(`${bare}_keys`),
    snapshot: quote(`${bare}_stats`),
    statusType: quote(STATUS_ENUM_NAME),
    name: (kind, suffix = '') => fitIdentifier(`${kind}_${prefix}`, suffix),
    historyName: (kind, suffix = '') => fitIdentifier(`${kind}_${prefix}_history`, suffix),
    keysName: (kind, suffix = '') => fitIdentifier(`${kind}_${prefix}_keys`, suffix),
    snapshotName: (kind, suffix = '') => fitIdentifier(`${kind}_${prefix}_stats`, suffix),
    channel: fitIdentifier('nestjs_inbox', prefix),
  };
}
