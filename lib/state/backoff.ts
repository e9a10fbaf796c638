import type { BackoffOptions } from '../interfaces/inbox-options.interface';

/**
 * Delay before the next attempt after `failedAttempts` failures (1 = the first failure):
 * `initialDelayMs * multiplier^(failedAttempts-1)`, spread by ±jitter, never above `maxDelayMs`.
 * `random` returns a number in [0, 1); it is a parameter so the maths can be tested exactly.
 */
export function backoffDelayMs(failedAttempts: number, options: BackoffOptions, random: () => number = Math.random): number {
  const exponent = Math.max(0, failedAttempts - 1);
  const exponential = options.initialDelayMs * Math.pow(options.multiplier, exponent);
  const base = Math.min(options.maxDelayMs, exponential);
  const spread = 1 + options.jitter * (2 * random() - 1);
  return Math.max(0, Math.min(options.maxDelayMs, Math.round(base * spread)));
}
