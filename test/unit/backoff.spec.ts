import { backoffDelayMs, DEFAULT_BACKOFF } from 'nestjs-inbox';

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
