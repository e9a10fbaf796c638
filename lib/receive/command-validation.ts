import { DataSource, EntityManager } from 'typeorm';
import { describeError } from '../errors/describe-error';
import { InboxArgumentError, OrderingKeyMismatchError, UnknownCommandTypeError } from '../errors/inbox.error';
import {
  DEFAULT_LIST_LIMIT,
  MAX_COMMAND_TYPE_LENGTH,
  MAX_CORRELATION_ID_LENGTH,
  MAX_LIST_LIMIT,
  MAX_MESSAGE_ID_LENGTH,
  MAX_ORDERING_KEY_LENGTH,
} from '../inbox.constants';
import type { BlockedKeysQuery, IncomingCommand, ReceiveOptions } from '../interfaces/inbox-command.interface';
import { DEAD_LETTER_REASONS, INBOX_STATUSES } from '../state/inbox-state-machine';
import type { EntryFilter } from '../store/entry-filter';

/**
 * The checks every public entry point makes before anything reaches the database: a bad argument
 * is an InboxArgumentError naming its path, and nothing is stored.
 */

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** PostgreSQL's earliest timestamptz (4714-11-24 BC); the latest JavaScript date is within its range. */
const EARLIEST_TIMESTAMP = Date.UTC(-4713, 10, 24);
/**
 * In JSON.stringify's output, a NUL or a lone surrogate is always a `\u` escape, and a paired
 * surrogate never is; an escape counts only after an even run of backslashes (`\\u0000` is a
 * backslash followed by the text "u0000").
 */
const ESCAPED_NUL = /(?<!\\)(?:\\\\)*\\u0000/;
const ESCAPED_LONE_SURROGATE = /(?<!\\)(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/i;

/** A command whose every part passed: the strings as they will be stored, payload and metadata as JSON. */
export interface ValidatedCommand {
  messageId: string;
  commandType: string;
  payloadJson: string;
  metadataJson: string;
  correlationId: string | null;
  causationId: string | null;
  /** Entries with the same key run one at a time, in the order received; null: none. */
  orderingKey: string | null;
}

/** What a command is checked against. */
export interface CommandRules {
  maxPayloadBytes: number;
  /** Whether this application may receive the type (it has a handler, or accepts unknown types). */
  accepts(commandType: string): boolean;
  /** How the type's handler derives the ordering key from a payload, if this application has it and it does. */
  orderingKeyOf(commandType: string): ((payload: Record<string, unknown>) => unknown) | undefined;
}

export function validateCommand(command: IncomingCommand, rules: CommandRules): ValidatedCommand {
  if (typeof command !== 'object' || command === null || Array.isArray(command)) {
    throw new InboxArgumentError('command', 'expected an object with messageId, commandType and payload');
  }
  const messageId = boundedString('command.messageId', command.messageId, MAX_MESSAGE_ID_LENGTH);
  const commandType = boundedString('command.commandType', command.commandType, MAX_COMMAND_TYPE_LENGTH);
  if (!rules.accepts(commandType)) throw new UnknownCommandTypeError(commandType);
  const payloadJson = jsonObject('command.payload', command.payload, true, rules.maxPayloadBytes);
  return {
    messageId,
    commandType,
    payloadJson,
    metadataJson: jsonObject('command.metadata', command.metadata ?? {}, false, rules.maxPayloadBytes),
    correlationId: optionalId('command.correlationId', command.correlationId),
    causationId: optionalId('command.causationId', command.causationId),
    orderingKey: orderingKeyOf(command, commandType, rules),
  };
}

/** The key given with the command, or the one its handler derives (they must agree), or none. */
function orderingKeyOf(command: IncomingCommand, commandType: string, rules: CommandRules): string | null {
  const given = command.orderingKey === undefined || command.orderingKey === null ? null : boundedString('command.orderingKey', command.orderingKey, MAX_ORDERING_KEY_LENGTH);
  const derive = rules.orderingKeyOf(commandType);
  if (!derive) return given;
  let value: unknown;
  try {
    value = derive(command.payload);
  } catch (error) {
    throw new InboxArgumentError('command.orderingKey', `the handler of "${commandType}" could not derive it from the payload: ${describeError(error)}`);
  }
  let derived: string;
  try {
    derived = boundedString('command.orderingKey', value, MAX_ORDERING_KEY_LENGTH);
  } catch (error) {
    throw new InboxArgumentError('command.orderingKey', `the handler of "${commandType}" derived an unusable key from the payload (${(error as InboxArgumentError).message.replace(/^Invalid argument "[^"]+": /, '')})`);
  }
  if (given !== null && given !== derived) throw new OrderingKeyMismatchError(commandType, given, derived);
  return derived;
}

/** `{ manager }`: a TypeORM EntityManager of the inbox's own data source. */
export function validateReceiveOptions(options: ReceiveOptions, dataSource: DataSource): EntityManager | undefined {
  if (typeof options !== 'object' || options === null) throw new InboxArgumentError('options', 'expected an object');
  const { manager } = options;
  if (manager === undefined) return undefined;
  if (!(manager instanceof EntityManager)) throw new InboxArgumentError('options.manager', 'expected a TypeORM EntityManager');
  if (manager.connection !== dataSource) throw new InboxArgumentError('options.manager', "belongs to another data source than the inbox's");
  return manager;
}

export function validateFilter(name: string, filter: EntryFilter, extra: readonly string[] = []): EntryFilter {
  // Missing is not empty: to a bulk action, the empty filter means every dead letter.
  if (typeof filter !== 'object' || filter === null || Array.isArray(filter)) throw new InboxArgumentError(name, 'expected an object');
  // A misspelt field would be dropped, and a bulk action would then reach every entry.
  onlyFields(filter, name, [...FILTER_FIELDS, ...extra]);
  const validated: EntryFilter = {};
  if (filter.status !== undefined) {
    if (!INBOX_STATUSES.includes(filter.status)) throw new InboxArgumentError(`${name}.status`, `expected one of ${INBOX_STATUSES.join(', ')}`);
    validated.status = filter.status;
  }
  if (filter.commandType !== undefined) validated.commandType = boundedString(`${name}.commandType`, filter.commandType, MAX_COMMAND_TYPE_LENGTH);
  if (filter.deadLetterReason !== undefined) {
    if (!DEAD_LETTER_REASONS.includes(filter.deadLetterReason)) {
      throw new InboxArgumentError(`${name}.deadLetterReason`, `expected one of ${DEAD_LETTER_REASONS.join(', ')}`);
    }
    validated.deadLetterReason = filter.deadLetterReason;
  }
  if (filter.errorContains !== undefined) validated.errorContains = boundedString(`${name}.errorContains`, filter.errorContains, 1000);
  for (const key of ['receivedAfter', 'receivedBefore'] as const) {
    const value = filter[key];
    if (value === undefined) continue;
    if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw new InboxArgumentError(`${name}.${key}`, 'expected a valid Date');
    if (value.getTime() < EARLIEST_TIMESTAMP) throw new InboxArgumentError(`${name}.${key}`, 'is before 4714 BC, the earliest time PostgreSQL stores');
    validated[key] = value;
  }
  if (filter.includeDiscarded !== undefined) {
    if (typeof filter.includeDiscarded !== 'boolean') throw new InboxArgumentError(`${name}.includeDiscarded`, 'expected true or false');
    validated.includeDiscarded = filter.includeDiscarded;
  }
  if (filter.payload !== undefined) validated.payload = payloadFilter(`${name}.payload`, filter.payload);
  if (filter.errorFingerprint !== undefined) validated.errorFingerprint = boundedString(`${name}.errorFingerprint`, filter.errorFingerprint, 1000);
  return validated;
}

/** Refuses a field not in `known`: a misspelt one would otherwise be ignored, and the call mean something else. */
export function onlyFields(source: object, name: string, known: readonly string[]): void {
  const unknown = Object.keys(source).find((field) => !known.includes(field));
  if (unknown !== undefined) throw new InboxArgumentError(`${name}.${unknown}`, `unknown field; expected one of ${known.join(', ')}`);
}

/** The fields of EntryFilter. */
const FILTER_FIELDS: readonly string[] = [
  'status', 'commandType', 'deadLetterReason', 'errorContains', 'receivedAfter', 'receivedBefore', 'includeDiscarded', 'payload', 'errorFingerprint',
] satisfies ReadonlyArray<keyof EntryFilter>;

/**
 * At most 10 dotted paths (1–10 segments of 1–100 characters), each with a non-empty text of at
 * most 1000; both as PostgreSQL stores them (no NUL, well-formed Unicode).
 */
function payloadFilter(name: string, value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InboxArgumentError(name, 'expected an object of dotted paths and texts');
  const pairs = Object.entries(value);
  if (pairs.length > 10) throw new InboxArgumentError(name, 'expected at most 10 paths');
  for (const [path, text] of pairs) {
    const at = `${name}[${JSON.stringify(path)}]`;
    const segments = path.split('.');
    if (segments.length > 10) throw new InboxArgumentError(at, 'expected a dotted path of 1 to 10 names');
    for (const segment of segments) boundedString(at, segment, 100);
    boundedString(at, text, 1000);
  }
  return Object.fromEntries(pairs) as Record<string, string>;
}

/** A command type (optional) and a limit: the blocked keys' and the dead-letter groups' query. */
export function validateTypeQuery(query: BlockedKeysQuery): { commandType: string | null; limit: number } {
  if (typeof query !== 'object' || query === null || Array.isArray(query)) throw new InboxArgumentError('query', 'expected an object');
  onlyFields(query, 'query', ['commandType', 'limit']);
  const commandType = query.commandType === undefined ? null : boundedString('query.commandType', query.commandType, MAX_COMMAND_TYPE_LENGTH);
  const limit = query.limit ?? DEFAULT_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) throw new InboxArgumentError('query.limit', `expected an integer from 1 to ${MAX_LIST_LIMIT}`);
  return { commandType, limit };
}

/** Who asks for an operator action (required or not) and why. */
export function validateAudit(name: string, options: unknown, actorRequired: boolean, known: readonly string[] = ['actor', 'reason']): { actor: string | null; reason: string | null } {
  if (typeof options !== 'object' || options === null) throw new InboxArgumentError(name, 'expected an object');
  // A misspelt option (`dryrun`, `paylod`) would be dropped, and the action would do something else.
  onlyFields(options, name, known);
  const { actor, reason } = options as { actor?: unknown; reason?: unknown };
  const validatedReason = reason === undefined || reason === null ? null : boundedString(`${name}.reason`, reason, 2000);
  if (actor === undefined && !actorRequired) return { actor: null, reason: validatedReason };
  return { actor: boundedString(`${name}.actor`, actor, 255), reason: validatedReason };
}

export function assertUuid(name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || !UUID_PATTERN.test(value)) throw new InboxArgumentError(name, `expected a UUID, got ${describeType(value)}`);
}

/**
 * A non-empty string PostgreSQL stores as it is: well-formed Unicode (a lone surrogate would be
 * stored as U+FFFD, so two different keys would collapse into one), no NUL, at most `max`
 * characters as the column counts them (code points, not UTF-16 units).
 */
export function boundedString(name: string, value: unknown, max: number): string {
  if (typeof value !== 'string') throw new InboxArgumentError(name, `expected a string, got ${describeType(value)}`);
  if (value.length === 0) throw new InboxArgumentError(name, 'must not be empty');
  if (!(value as string & { isWellFormed(): boolean }).isWellFormed()) throw new InboxArgumentError(name, 'must be well-formed Unicode (it contains a lone surrogate)');
  const length = characterCount(value);
  if (length > max) throw new InboxArgumentError(name, `must be at most ${max} characters (got ${length})`);
  if (value.includes('\u0000')) throw new InboxArgumentError(name, 'must not contain NUL characters');
  return value;
}

/** Serialises a plain JSON object, refusing what jsonb or the size limit would refuse. */
export function jsonObject(name: string, value: unknown, required: boolean, maxBytes: number): string {
  if (value === undefined && !required) return '{}';
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InboxArgumentError(name, `expected a JSON object, got ${describeType(value)}`);
  }
  let json: string;
  try {
    json = JSON.stringify(value);
  } catch (error) {
    throw new InboxArgumentError(name, `is not JSON-serialisable (${(error as Error).message})`);
  }
  if (!json.startsWith('{')) throw new InboxArgumentError(name, 'must serialise to a JSON object');
  // JSON.stringify writes NaN and Infinity as null and a Map or Set as {}: the command stored would
  // not be the one given. Looked for only when the JSON holds what they become (rarely).
  if (json.includes('null') || json.includes('{}')) {
    const changed = silentlyChanged(value, name);
    if (changed) throw new InboxArgumentError(changed.path, changed.why);
  }
  if (Buffer.byteLength(json, 'utf8') > maxBytes) throw new InboxArgumentError(name, `is larger than maxPayloadBytes (${maxBytes} bytes of JSON)`);
  if (ESCAPED_NUL.test(json)) throw new InboxArgumentError(name, 'must not contain NUL characters (jsonb rejects them)');
  if (ESCAPED_LONE_SURROGATE.test(json)) throw new InboxArgumentError(name, 'must be well-formed Unicode: a string or key in it holds a lone surrogate');
  return json;
}

/** The first value inside `value` that JSON would store as something else, with its path. */
function silentlyChanged(value: unknown, path: string): { path: string; why: string } | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : { path, why: `is ${value}, which JSON stores as null` };
  if (typeof value !== 'object' || value === null) return undefined;
  if (value instanceof Date && Number.isNaN(value.getTime())) return { path, why: 'is an invalid Date, which JSON stores as null' };
  if (value instanceof Map || value instanceof Set) return { path, why: `is a ${value instanceof Map ? 'Map' : 'Set'}, which JSON stores as {}: send an object or an array` };
  // What toJSON returns is stored, not the object (a Date's text): nothing more to look at.
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return undefined;
  for (const [key, inner] of Object.entries(value)) {
    const found = silentlyChanged(inner, Array.isArray(value) ? `${path}[${key}]` : `${path}.${key}`);
    if (found) return found;
  }
  return undefined;
}

function optionalId(name: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  return boundedString(name, value, MAX_CORRELATION_ID_LENGTH);
}

/** Code points of a well-formed string: its UTF-16 length less one per surrogate pair. */
function characterCount(value: string): number {
  let count = value.length;
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code >= 0xd800 && code <= 0xdbff) count--;
  }
  return count;
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return value.length > 40 ? `"${value.slice(0, 40)}…"` : JSON.stringify(value);
  return typeof value;
}
