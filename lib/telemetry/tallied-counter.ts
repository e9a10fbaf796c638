import type { Attributes, Meter, MetricOptions } from '@opentelemetry/api';

/**
 * Attribute sets a counter keeps apart; beyond it they are summed under the overflow set. With the
 * overflow set, the SDK's default cardinality limit (2,000 points per instrument): past that the SDK
 * would fold points itself.
 */
const MAX_ATTRIBUTE_SETS = 1_999;
const OVERFLOW: Attributes = Object.freeze({ 'otel.metric.overflow': true });

interface Tally {
  attributes: Attributes;
  value: number;
}

/**
 * A monotonic counter summed in the process and reported, as its running total, when a reader
 * collects (an asynchronous counter). Counting is two map lookups, where a synchronous counter
 * sorts and serialises its attributes on every add: on the hot path (a count per receive and per
 * attempt) that cost more than the rest of the metrics together.
 */
export class TalliedCounter {
  /** By command type, then by the variant that tells its attribute sets apart (a result, an outcome). */
  private readonly tallies = new Map<string, Map<string, Tally>>();
  private overflow: Tally | undefined;
  private size = 0;

  constructor(meter: Meter, name: string, options: MetricOptions) {
    meter.createObservableCounter(name, options).addCallback((result) => {
      for (const variants of this.tallies.values()) for (const tally of variants.values()) result.observe(tally.value, tally.attributes);
      if (this.overflow) result.observe(this.overflow.value, this.overflow.attributes);
    });
  }

  /** Adds `value` to the set of `commandType` and `variant`; `attributes` builds the set the first time. */
  add(value: number, commandType: string, variant: string, attributes: () => Attributes): void {
    let variants = this.tallies.get(commandType);
    let tally = variants?.get(variant);
    if (!tally) {
      if (this.size >= MAX_ATTRIBUTE_SETS) {
        tally = this.overflow ??= { attributes: OVERFLOW, value: 0 };
      } else {
        tally = { attributes: Object.freeze(attributes()), value: 0 };
        if (!variants) this.tallies.set(commandType, (variants = new Map()));
        variants.set(variant, tally);
        this.size++;
      }
    }
    tally.value += value;
  }
}
