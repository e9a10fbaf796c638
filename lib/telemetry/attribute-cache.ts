import type { Attributes } from '@opentelemetry/api';

/** Most attribute sets kept; beyond it (command types without number) each is built afresh. */
const MAX_CACHED = 2_000;

/**
 * Frozen attribute objects, one per combination of their values: spans and instruments are given
 * the same object every time instead of a new one per command (the SDK copies what it keeps).
 */
export class AttributeCache {
  private readonly cached = new Map<string, Attributes>();

  get(key: string, build: () => Attributes): Attributes {
    let attributes = this.cached.get(key);
    if (attributes) return attributes;
    attributes = Object.freeze(build());
    if (this.cached.size < MAX_CACHED) this.cached.set(key, attributes);
    return attributes;
  }
}
