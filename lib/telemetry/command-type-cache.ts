/** Most values kept in all; beyond it (command types without number) each is built afresh. */
const MAX_CACHED = 2_000;

/**
 * Values built once per command type and variant (an operation, an outcome): spans and instruments
 * are given the same frozen attribute object, and the same span name, every time instead of one
 * built per command. Two levels of maps, so that a lookup builds no key string.
 */
export class CommandTypeCache<T> {
  private readonly byType = new Map<string, Map<string, T>>();
  private size = 0;

  get(commandType: string, variant: string, build: () => T): T {
    let variants = this.byType.get(commandType);
    const cached = variants?.get(variant);
    if (cached !== undefined) return cached;
    const value = build();
    if (typeof value === 'object' && value !== null) Object.freeze(value);
    if (this.size < MAX_CACHED) {
      if (!variants) this.byType.set(commandType, (variants = new Map()));
      variants.set(variant, value);
      this.size++;
    }
    return value;
  }
}
