import type { Attributes, BatchObservableResult, Observable } from '@opentelemetry/api';

/** Most attribute sets one tally keeps apart; beyond it new ones are counted together. */
const MAX_SETS = 5_000;
const OVERFLOW = '\u0000overflow';

/**
 * A counter kept in the process, by attribute set, reported (cumulatively) through an observable
 * counter when a reader collects: counting costs a map lookup, not the SDK's work of hashing the
 * attributes on every add.
 */
export class Tally {
  private readonly counts = new Map<string, { attributes: Attributes; value: number }>();

  constructor(private readonly overflowAttributes: Attributes) {}

  add(key: string, build: () => Attributes, n = 1): void {
    const counted = this.counts.get(key);
    if (counted) {
      counted.value += n;
      return;
    }
    if (this.counts.size >= MAX_SETS) return this.add(OVERFLOW, () => this.overflowAttributes, n);
    this.counts.set(key, { attributes: Object.freeze(build()), value: n });
  }

  observe(result: BatchObservableResult, instrument: Observable): void {
    for (const { attributes, value } of this.counts.values()) result.observe(instrument, value, attributes);
  }
}
