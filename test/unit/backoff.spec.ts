import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_BACKOFF } from 'nestjs-inbox';
import { backoffDelayMs } from '../../lib/state/backoff';

describe('backoffDelayMs', () => {
  const noJitter = { ...DEFAULT_BACKOFF, jitter: 0 };

  it('grows exponentially from initialDelayMs', () => {
    expect([1, 2, 3, 4, 5].map((n) => backoffDelayMs(n, noJitter))).toEqual([1000, 2000, 4000, 8000, 16000]);
  });

  it('is capped at maxDelayMs', () => {
    expect(backoffDelayMs(30, noJitter)).toBe(300_000);
    expect(backoffDelayMs(10_000, noJitter)).toBe(300_000); // no overflow to Infinity/NaN
  });

  it('spreads by ±jitter around the exponential value', () => {
    const options = { ...DEFAULT_BACKOFF, jitter: 0.2 };
    expect(backoffDelayMs(2, options, () => 0)).toBe(1600);
    expect(backoffDelayMs(2, options, () => 0.5)).toBe(2000);
    expect(backoffDelayMs(2, options, () => 0.999999)).toBe(2400);
  });

  it('never exceeds maxDelayMs even with jitter', () => {
    expect(backoffDelayMs(50, { ...DEFAULT_BACKOFF, jitter: 1 }, () => 0.99)).toBe(300_000);
  });

  it('uses the initial delay for the first failure and a zero delay when configured so', () => {
    expect(backoffDelayMs(1, { initialDelayMs: 0, multiplier: 2, maxDelayMs: 0, jitter: 0.5 })).toBe(0);
    expect(backoffDelayMs(1, { initialDelayMs: 250, multiplier: 3, maxDelayMs: 10_000, jitter: 0 })).toBe(250);
    expect(backoffDelayMs(3, { initialDelayMs: 250, multiplier: 3, maxDelayMs: 10_000, jitter: 0 })).toBe(2250);
  });
});

describe('the backoff formula in README.md', () => {
  /** The README's `nextRetryAt = now + …` expression, as a function of its named values. */
  function readmeFormula(): (values: Record<string, number>) => number {
    const readme = readFileSync(path.join(__dirname, '..', '..', 'README.md'), 'utf8');
    const match = /`nextRetryAt = now \+ ([^`]+)`/.exec(readme);
    if (!match) throw new Error('README.md has no `nextRetryAt = now + …` formula');
    const expression = match[1].replace(/·/g, '*').replace(/\^/g, '**').replace(/−/g, '-');
    const names = ['maxDelayMs', 'initialDelayMs', 'multiplier', 'retryCount', 'jitter', 'u'];
    const evaluate = new Function('min', 'round', ...names, `return ${expression};`) as (...args: unknown[]) => number;
    return (values) => evaluate(Math.min, Math.round, ...names.map((name) => values[name]));
  }

  it('computes what backoffDelayMs computes, capped or not, at every jitter draw', () => {
    const formula = readmeFormula();
    const options = { initialDelayMs: 1000, multiplier: 3, maxDelayMs: 60_000, jitter: 0.25 };
    for (let retryCount = 1; retryCount <= 8; retryCount++) {
      for (const random of [0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999999]) {
        const expected = backoffDelayMs(retryCount, options, () => random);
        expect({ retryCount, random, delay: formula({ ...options, retryCount, u: 2 * random - 1 }) }).toEqual({ retryCount, random, delay: expected });
      }
    }
  });

  it('keeps capped delays between (1 − jitter) · maxDelayMs and exactly maxDelayMs', () => {
    const options = { ...DEFAULT_BACKOFF, jitter: 0.2 };
    const delays = Array.from({ length: 1000 }, (_, i) => backoffDelayMs(40, options, () => i / 1000));
    expect(Math.min(...delays)).toBe(0.8 * options.maxDelayMs);
    expect(Math.max(...delays)).toBe(options.maxDelayMs);
    // Every draw from the middle up lands on the cap exactly: half of them.
    expect(delays.filter((delay) => delay === options.maxDelayMs)).toHaveLength(500);
  });
});
