import { isDeepStrictEqual } from 'node:util';
import { InboxArgumentError } from '../errors/inbox.error';
import type { InboxHistoryRecord } from '../interfaces/inbox-history.interface';
import type { InboxEntry } from '../store/inbox-entry.entity';

/** How the console applies the user's `redact` to what it returns, and keeps masks out of the database. */
export class Redaction {
  constructor(
    private readonly redact: (entry: InboxEntry) => InboxEntry,
    /** False when no `redact` was given: nothing to hide, nothing to restore. */
    readonly active: boolean,
  ) {}

  /** The entry as an operator may see it; the user's function gets a copy, so it may change what it is given. */
  entry(entry: InboxEntry): InboxEntry {
    return this.active ? this.redact(copyOf(entry)) : entry;
  }

  /** A history record: an earlier payload as the entry would show with it; error texts as the entry's error would show. */
  record(entry: InboxEntry, record: InboxHistoryRecord): InboxHistoryRecord {
    if (!this.active) return record;
    const shown = { ...record };
    if (record.previousPayload !== null) shown.previousPayload = this.redact(copyOf(entry, { payload: record.previousPayload })).payload;
    if (record.errorMessage !== null) {
      const error = this.redact(copyOf(entry, { error: record.errorMessage })).error;
      if (error !== record.errorMessage) {
        shown.errorMessage = error;
        // The stack begins with the message it would give away.
        shown.errorStack = null;
      }
    }
    return shown;
  }

  /**
   * A corrected payload sent back from the page holds the masks the operator was shown where the
   * operator left hidden fields alone: those fields get their stored values back, so a replay
   * never stores a mask.
   */
  restoreHidden(corrected: Record<string, unknown>, entry: InboxEntry): Record<string, unknown> {
    if (!this.active || entry.payload === null) return corrected;
    const shown = this.redact(copyOf(entry)).payload;
    return restore(corrected, entry.payload, shown, 'body.payload') as Record<string, unknown>;
  }
}

function restore(corrected: unknown, stored: unknown, shown: unknown, path: string): unknown {
  if (isObject(corrected) && isObject(stored) && isObject(shown)) {
    const merged: Record<string, unknown> = { ...corrected };
    for (const key of Object.keys(merged)) {
      if (Object.hasOwn(stored, key) && Object.hasOwn(shown, key)) merged[key] = restore(merged[key], stored[key], shown[key], `${path}.${key}`);
    }
    return merged;
  }
  const hidden = !isDeepStrictEqual(shown, stored);
  if (Array.isArray(corrected) && Array.isArray(stored) && Array.isArray(shown) && hidden && !isDeepStrictEqual(corrected, shown)) {
    // Edited in place: each element against the one shown at its place. Grown or shrunk, an
    // element's place no longer says which stored one it was, and its masks would be stored.
    if (corrected.length !== stored.length || shown.length !== stored.length) {
      throw new InboxArgumentError(path, 'holds hidden values and changed length: edit its elements in place, or send each element whole');
    }
    return corrected.map((element, index) => restore(element, stored[index], shown[index], `${path}[${index}]`));
  }
  // Left as shown, where what was shown was not what is stored: the stored value.
  return isDeepStrictEqual(corrected, shown) && hidden ? stored : corrected;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A copy deep enough for a redact function that edits the payload in place. */
function copyOf(entry: InboxEntry, changes: Partial<InboxEntry> = {}): InboxEntry {
  const copy = Object.assign(Object.create(Object.getPrototypeOf(entry)) as InboxEntry, entry, changes);
  copy.payload = copy.payload === null ? null : structuredClone(copy.payload);
  copy.metadata = structuredClone(copy.metadata);
  return copy;
}
