/**
 * The life of an inbox entry, in one place: its five statuses, every transition between them, the
 * decision a failed attempt leads to, and what each operator action accepts. Pure: no database, no
 * clock. The statements of `store/statements.ts` are written from the tables below (their
 * `WHERE "status" IN (…)` and `SET "status" = …`), and the workers and the service ask this module
 * what an outcome means.
 *
 *   receive ──► Pending ──claim──► Processing ──complete──► Completed ──(retention)──► removed
 *                 ▲  ▲                 │
 *                 │  └──release────────┤  (a claim whose attempt never started: uncharged)
 *                 │                    ├──fail / expireLease──► Failed ──(due)──► claim again
 *                 │ replay             └──fail / expireLease──► DeadLetter ──discard──► DeadLetter (closed)
 *                 └─────────────────────────────────────────────────┘
 *   Pending / Failed ──deadLetter (by hand)──► DeadLetter
 */

/** Where an entry is. Stored as the PostgreSQL enum type `inbox_status`, in this order. */
export enum InboxStatus {
  /** Received, waiting to be claimed. */
  Pending = 'pending',
  /** Claimed by a worker: its attempt is starting or running. */
  Processing = 'processing',
  /** The handler ran and its writes committed with this status. Final. */
  Completed = 'completed',
  /** An attempt failed; the entry waits for its retry (`nextRetryAt`). */
  Failed = 'failed',
  /** It can never succeed as it is; it waits for a person (replay, discard). */
  DeadLetter = 'dead_letter',
}

export const INBOX_STATUSES: readonly InboxStatus[] = Object.values(InboxStatus);

/** Why an entry is in DeadLetter. */
export enum DeadLetterReason {
  /** Every allowed attempt failed with a transient error. */
  RetriesExhausted = 'retries_exhausted',
  /** The handler threw a PermanentError. */
  PermanentError = 'permanent_error',
  /** The payload failed the handler's class-validator rules, or could not be materialised at all. */
  InvalidPayload = 'invalid_payload',
  /** Written by earlier versions, whose workers dead-lettered types they had no handler for; no longer produced. */
  NoHandler = 'no_handler',
  /** The last allowed attempt ended with its worker gone (crash, kill, freeze): a poison message. */
  LeaseExpired = 'lease_expired',
  /** An operator dead-lettered it by hand. */
  Manual = 'manual',
}

export const DEAD_LETTER_REASONS: readonly DeadLetterReason[] = Object.values(DeadLetterReason);

/** How an attempt ended: stored as the entry's `lastOutcome` and in its history. */
export enum AttemptOutcome {
  Completed = 'completed',
  Failed = 'failed',
  TimedOut = 'timed_out',
  /** Its worker was gone when the lease ran out: the entry is a crash suspect from then on. */
  LeaseExpired = 'lease_expired',
  /** In the history only: the attempt after which the entry was dead-lettered. */
  DeadLetter = 'dead_letter',
  /** @deprecated the same value as `DeadLetter`; the name goes in the next version. */
  DeadLettered = 'dead_letter',
}

/** What a history record is about: an attempt, or an operator's action. */
export enum HistoryEvent {
  Attempt = 'attempt',
  Replayed = 'replayed',
  Discarded = 'discarded',
  /** Dead-lettered by hand. */
  DeadLetter = 'dead_letter',
  /** A claim handed back uncharged (its worker gone, its attempt not started or not known to have). */
  Released = 'released',
  /** Not stored: read at the time from the entry's key, for an entry that waits behind another of its key. */
  Waiting = 'waiting',
  /** @deprecated the same value as `DeadLetter`; the name goes in the next version. */
  DeadLettered = 'dead_letter',
}

/** A transition: the statuses it starts from, and where it leads. */
export interface Transition {
  readonly from: readonly InboxStatus[];
  /** Where it leads; several when a decision picks one (`decideFailure`), none when the entry goes away. */
  readonly to: readonly InboxStatus[];
}

const { Pending, Processing, Completed, Failed, DeadLetter } = InboxStatus;

/** Every move an entry can make. Nothing else ever changes an entry's status. */
export const TRANSITIONS = {
  /** A worker takes a due entry of a type it has a handler for (crash suspects alone). */
  claim: { from: [Pending, Failed], to: [Processing] },
  /** The claim's attempt starts: committed before the handler runs, so a crash is charged. */
  start: { from: [Processing], to: [Processing] },
  /**
   * A started attempt is given up by a worker shutting down (its shutdown ran out of time): not a
   * crash, so the start is taken back and the lease's expiry charges nothing.
   */
  unstart: { from: [Processing], to: [Processing] },
  /**
   * A claim is handed back, uncharged (see decideLeaseExpiry): Pending if no attempt of it has
   * failed yet, else Failed.
   */
  release: { from: [Processing], to: [Pending, Failed] },
  /** The handler returned and its writes commit with the status. */
  complete: { from: [Processing], to: [Completed] },
  /** The attempt failed: retry later, or dead-letter (`decideFailure`). */
  fail: { from: [Processing], to: [Failed, DeadLetter] },
  /** A crash suspect's started attempt lost its worker: a failed attempt like any other. */
  expireLease: { from: [Processing], to: [Failed, DeadLetter] },
  /** An operator sends it back, keeping its messageId (deduplication holds). */
  replay: { from: [DeadLetter, Failed], to: [Pending] },
  /** An operator closes a dead letter without running it; it stays for deduplication and audit. */
  discard: { from: [DeadLetter], to: [DeadLetter] },
  /** An operator stops an entry that has not run to its end. */
  deadLetter: { from: [Pending, Failed], to: [DeadLetter] },
  /** Retention removes a completed entry's payload, keeping its digest for deduplication… */
  removePayload: { from: [Completed], to: [Completed] },
  /** …and, after the deduplication window, the entry itself. */
  remove: { from: [Completed], to: [] },
} as const satisfies Record<string, Transition>;

export type TransitionName = keyof typeof TRANSITIONS;

/** Whether `transition` may start from `status` (a discarded dead letter accepts no discard). */
export function canTransition(transition: TransitionName, status: InboxStatus, discarded = false): boolean {
  if (transition === 'discard' && discarded) return false;
  return (TRANSITIONS[transition].from as readonly InboxStatus[]).includes(status);
}

/** What the operator actions accept, for their error messages. */
export const OPERATOR_ACTIONS = {
  replay: { verb: 'replay', accepts: TRANSITIONS.replay.from },
  discard: { verb: 'discard', accepts: TRANSITIONS.discard.from, note: 'not yet discarded' },
  deadLetter: { verb: 'dead-letter', accepts: TRANSITIONS.deadLetter.from },
} as const;

/** The statuses an operator action accepts, as its error message lists them. */
export function acceptedStatuses(action: keyof typeof OPERATOR_ACTIONS): string[] {
  const { accepts } = OPERATOR_ACTIONS[action];
  const note = 'note' in OPERATOR_ACTIONS[action] ? ` (${OPERATOR_ACTIONS.discard.note})` : '';
  return accepts.map((status) => `${status}${note}`);
}

/** Due entries (claimable): Pending, or Failed whose retry time has come. */
export const DUE_STATUSES = TRANSITIONS.claim.from;

/** A crash suspect: its last attempt ended with its worker gone. It runs alone. */
export function isCrashSuspect(lastOutcome: AttemptOutcome | null): boolean {
  return lastOutcome === AttemptOutcome.LeaseExpired;
}

/** What an expired claim (its worker gone) means for its entry. */
export enum LeaseExpiryDecision {
  /** A crash suspect whose attempt never started: back where it was, uncharged, still a suspect. */
  Release = 'release',
  /**
   * One of a batch: its handler may or may not have run before the worker died (a neighbour may
   * have killed it), nobody can tell. Back, uncharged, as a crash suspect that runs alone next time.
   */
  ReleaseAsSuspect = 'release_as_suspect',
  /** It ran alone, as a suspect, and its handler had started: a failed attempt (`expireLease`). */
  Charge = 'charge',
}

/**
 * The lease-expiry decision. An attempt is charged only when its handler is known to have started
 * and nothing else ran beside it: only a crash suspect's start is stamped (right before its handler,
 * as it runs alone), so only a suspect can be charged with its worker's death. A message that kills
 * its worker is therefore isolated by its first crash and charged from its second on. `started`:
 * whether the entry's start was stamped; `suspect`: whether it was claimed as a crash suspect.
 */
export function decideLeaseExpiry(started: boolean, suspect: boolean): LeaseExpiryDecision {
  if (!suspect) return LeaseExpiryDecision.ReleaseAsSuspect;
  return started ? LeaseExpiryDecision.Charge : LeaseExpiryDecision.Release;
}

/** Why an attempt failed, as far as its fate is concerned. */
export enum FailureKind {
  /** Anything thrown that is not one of the below: may go away. */
  Transient = 'transient',
  /** The handler ran past its time limit. */
  TimedOut = 'timed_out',
  /** A PermanentError: will never succeed. */
  Permanent = 'permanent',
  /** The payload failed validation or could not be materialised. */
  InvalidPayload = 'invalid_payload',
  /** The attempt started, and its worker was gone when the lease ran out. */
  LeaseExpired = 'lease_expired',
}

/** What the failed attempt's entry becomes. */
export type FailureDecision =
  | { status: InboxStatus.Failed; ended: AttemptOutcome; retryDelayMs: number }
  | { status: InboxStatus.DeadLetter; ended: AttemptOutcome; reason: DeadLetterReason };

/**
 * The failure decision. `attempt` is the number of the attempt that failed (1 for the first);
 * `maxAttempts` how many the entry may have; `retryDelayMs` the backoff after this many failures.
 * Permanent errors and invalid payloads are dead-lettered at once; anything else once the attempts
 * are used up — a crash of the last one (`lease_expired`) marks a poison message.
 */
export function decideFailure(kind: FailureKind, attempt: number, maxAttempts: number, retryDelayMs: () => number): FailureDecision {
  const ended = kind === FailureKind.LeaseExpired ? AttemptOutcome.LeaseExpired : kind === FailureKind.TimedOut ? AttemptOutcome.TimedOut : AttemptOutcome.Failed;
  if (kind === FailureKind.Permanent) return { status: DeadLetter, ended, reason: DeadLetterReason.PermanentError };
  if (kind === FailureKind.InvalidPayload) return { status: DeadLetter, ended, reason: DeadLetterReason.InvalidPayload };
  if (attempt >= maxAttempts) {
    const reason = kind === FailureKind.LeaseExpired ? DeadLetterReason.LeaseExpired : DeadLetterReason.RetriesExhausted;
    return { status: DeadLetter, ended, reason };
  }
  return { status: Failed, ended, retryDelayMs: retryDelayMs() };
}

/** The history's outcome of a failed attempt: how it ended, or `dead_letter` when it was the last. */
export function historyOutcome(decision: FailureDecision): AttemptOutcome {
  return decision.status === DeadLetter ? AttemptOutcome.DeadLetter : decision.ended;
}
