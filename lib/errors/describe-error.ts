/**
 * A thrown value as one line of text, whatever it is: a handler or a listener may throw anything,
 * an object with no prototype or a `toString` that throws included, and reporting it must not
 * throw in turn (the failure would go unrecorded, or the rejection unhandled).
 */
export function describeError(error: unknown): string {
  try {
    if (error instanceof Error) return storable(String(error.message || error.name));
    return storable(String(error));
  } catch {
    return Object.prototype.toString.call(error);
  }
}

/** The class of a thrown value (`typeof` for what is not an Error), never throwing. */
export function errorClassOf(error: unknown): string {
  try {
    return error instanceof Error ? storable(String(error.name)) : typeof error;
  } catch {
    return typeof error;
  }
}

/** The stack of a thrown Error, never throwing. */
export function errorStackOf(error: unknown): string | undefined {
  try {
    return error instanceof Error && typeof error.stack === 'string' ? storable(error.stack) : undefined;
  } catch {
    return undefined;
  }
}

/** PostgreSQL text cannot hold a NUL: an error text that carries one (from outside data) is stored with U+FFFD instead. */
function storable(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}
