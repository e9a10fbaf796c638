/**
 * A thrown value as one line of text, whatever it is: a handler or a listener may throw anything,
 * an object with no prototype or a `toString` that throws included, and reporting it must not
 * throw in turn (the failure would go unrecorded, or the rejection unhandled).
 */
export function describeError(error: unknown): string {
  try {
    if (error instanceof Error) return String(error.message || error.name);
    return String(error);
  } catch {
    return Object.prototype.toString.call(error);
  }
}

/** The class of a thrown value (`typeof` for what is not an Error), never throwing. */
export function errorClassOf(error: unknown): string {
  try {
    return error instanceof Error ? String(error.name) : typeof error;
  } catch {
    return typeof error;
  }
}

/** The stack of a thrown Error, never throwing. */
export function errorStackOf(error: unknown): string | undefined {
  try {
    return error instanceof Error && typeof error.stack === 'string' ? error.stack : undefined;
  } catch {
    return undefined;
  }
}
