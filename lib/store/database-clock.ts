import type { InboxClock } from '../interfaces/inbox-options.interface';

/** The default clock: the database's own. */
export const SYSTEM_CLOCK: InboxClock = Object.freeze({ now: () => new Date() });

/**
 * Every time the library compares or stores is the database's (`now()`), so instances whose hosts'
 * clocks disagree still agree on leases and due times. Every statement takes this as a parameter:
 * null (the database's clock) unless a clock was injected, which tests do to move through backoff
 * and leases without waiting; its time then stands for the database's.
 */
export function clockTime(clock: InboxClock): Date | null {
  return clock === SYSTEM_CLOCK ? null : clock.now();
}
