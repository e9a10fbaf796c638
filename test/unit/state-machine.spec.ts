import {
  acceptedStatuses,
  AttemptOutcome,
  canTransition,
  decideFailure,
  decideLeaseExpiry,
  LeaseExpiryDecision,
  DeadLetterReason,
  FailureKind,
  historyOutcome,
  InboxStatus,
  INBOX_STATUSES,
  isCrashSuspect,
  TRANSITIONS,
  type TransitionName,
} from '../../lib/state/inbox-state-machine';

const { Pending, Processing, Completed, Failed, DeadLetter } = InboxStatus;

/** Every transition, and the statuses it may start from: the whole table, written out. */
const ALLOWED: Record<TransitionName, InboxStatus[]> = {
  claim: [Pending, Failed],
  start: [Processing],
  unstart: [Processing],
  release: [Processing],
  complete: [Processing],
  fail: [Processing],
  expireLease: [Processing],
  replay: [DeadLetter, Failed],
  discard: [DeadLetter],
  deadLetter: [Pending, Failed],
  removePayload: [Completed],
  remove: [Completed],
};

/** Where each transition may lead. */
const LEADS_TO: Record<TransitionName, InboxStatus[]> = {
  claim: [Processing],
  start: [Processing],
  unstart: [Processing],
  release: [Pending, Failed],
  complete: [Completed],
  fail: [Failed, DeadLetter],
  expireLease: [Failed, DeadLetter],
  replay: [Pending],
  discard: [DeadLetter],
  deadLetter: [DeadLetter],
  removePayload: [Completed],
  remove: [],
};

describe('the inbox state machine', () => {
  it('has exactly the five statuses, in the stored enum order', () => {
    expect(INBOX_STATUSES).toEqual(['pending', 'processing', 'completed', 'failed', 'dead_letter']);
  });

  it('has exactly the transitions of the table', () => {
    expect(Object.keys(TRANSITIONS).sort()).toEqual(Object.keys(ALLOWED).sort());
  });

  const cases = (Object.keys(ALLOWED) as TransitionName[]).flatMap((transition) =>
    INBOX_STATUSES.map((status) => [transition, status, ALLOWED[transition].includes(status)] as const),
  );
  it.each(cases)('%s from %s: allowed = %s', (transition, status, allowed) => {
    expect(canTransition(transition, status)).toBe(allowed);
  });

  it.each(Object.entries(LEADS_TO))('%s leads to %j', (transition, targets) => {
    expect([...TRANSITIONS[transition as TransitionName].to]).toEqual(targets);
  });

  it('never leaves Completed but by retention, and never enters Pending but by receive, release or replay', () => {
    const leavingCompleted = (Object.keys(ALLOWED) as TransitionName[]).filter((t) => ALLOWED[t].includes(Completed));
    expect(leavingCompleted.sort()).toEqual(['remove', 'removePayload']);
    const enteringPending = (Object.keys(LEADS_TO) as TransitionName[]).filter((t) => LEADS_TO[t].includes(Pending));
    expect(enteringPending.sort()).toEqual(['release', 'replay']);
  });

  it('does not discard a dead letter twice', () => {
    expect(canTransition('discard', DeadLetter, false)).toBe(true);
    expect(canTransition('discard', DeadLetter, true)).toBe(false);
  });

  it('lists what each operator action accepts, for its error message', () => {
    expect(acceptedStatuses('replay')).toEqual(['dead_letter', 'failed']);
    expect(acceptedStatuses('discard')).toEqual(['dead_letter (not yet discarded)']);
    expect(acceptedStatuses('deadLetter')).toEqual(['pending', 'failed']);
  });

  it('tells a crash suspect by the stored outcome of its last attempt', () => {
    expect(isCrashSuspect(AttemptOutcome.LeaseExpired)).toBe(true);
    for (const outcome of [AttemptOutcome.Failed, AttemptOutcome.TimedOut, AttemptOutcome.Completed, null]) expect(isCrashSuspect(outcome)).toBe(false);
  });

  it.each([
    // started, suspect → decision
    [false, false, LeaseExpiryDecision.ReleaseAsSuspect],
    [false, true, LeaseExpiryDecision.Release],
    [true, false, LeaseExpiryDecision.ReleaseAsSuspect],
    [true, true, LeaseExpiryDecision.Charge],
  ])('decides an expired lease: started %s, crash suspect %s → %s', (started, suspect, decision) => {
    expect(decideLeaseExpiry(started, suspect)).toBe(decision);
  });

  describe('the failure decision', () => {
    const delay = () => 1234;
    it.each([
      // kind, attempt, maxAttempts, expected decision
      [FailureKind.Transient, 1, 3, { status: Failed, ended: AttemptOutcome.Failed, retryDelayMs: 1234 }],
      [FailureKind.Transient, 2, 3, { status: Failed, ended: AttemptOutcome.Failed, retryDelayMs: 1234 }],
      [FailureKind.Transient, 3, 3, { status: DeadLetter, ended: AttemptOutcome.Failed, reason: DeadLetterReason.RetriesExhausted }],
      [FailureKind.Transient, 4, 3, { status: DeadLetter, ended: AttemptOutcome.Failed, reason: DeadLetterReason.RetriesExhausted }],
      [FailureKind.TimedOut, 1, 3, { status: Failed, ended: AttemptOutcome.TimedOut, retryDelayMs: 1234 }],
      [FailureKind.TimedOut, 3, 3, { status: DeadLetter, ended: AttemptOutcome.TimedOut, reason: DeadLetterReason.RetriesExhausted }],
      [FailureKind.LeaseExpired, 1, 3, { status: Failed, ended: AttemptOutcome.LeaseExpired, retryDelayMs: 1234 }],
      [FailureKind.LeaseExpired, 3, 3, { status: DeadLetter, ended: AttemptOutcome.LeaseExpired, reason: DeadLetterReason.LeaseExpired }],
      [FailureKind.Permanent, 1, 3, { status: DeadLetter, ended: AttemptOutcome.Failed, reason: DeadLetterReason.PermanentError }],
      [FailureKind.InvalidPayload, 1, 3, { status: DeadLetter, ended: AttemptOutcome.Failed, reason: DeadLetterReason.InvalidPayload }],
      [FailureKind.Transient, 1, 1, { status: DeadLetter, ended: AttemptOutcome.Failed, reason: DeadLetterReason.RetriesExhausted }],
    ] as const)('%s on attempt %i of %i', (kind, attempt, maxAttempts, expected) => {
      expect(decideFailure(kind, attempt, maxAttempts, delay)).toEqual(expected);
    });

    it('asks for a backoff only when the entry will be retried', () => {
      const backoff = jest.fn(() => 10);
      decideFailure(FailureKind.Permanent, 1, 5, backoff);
      decideFailure(FailureKind.Transient, 5, 5, backoff);
      expect(backoff).not.toHaveBeenCalled();
      decideFailure(FailureKind.Transient, 1, 5, backoff);
      expect(backoff).toHaveBeenCalledTimes(1);
    });

    it('records the attempt after which the entry died as dead_letter in the history, any other as it ended', () => {
      expect(historyOutcome(decideFailure(FailureKind.LeaseExpired, 3, 3, delay))).toBe(AttemptOutcome.DeadLetter);
      expect(historyOutcome(decideFailure(FailureKind.LeaseExpired, 1, 3, delay))).toBe(AttemptOutcome.LeaseExpired);
      expect(historyOutcome(decideFailure(FailureKind.TimedOut, 1, 3, delay))).toBe(AttemptOutcome.TimedOut);
    });
  });
});
