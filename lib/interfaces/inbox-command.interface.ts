import type { EntityManager } from 'typeorm';
import type { InboxEntry } from '../store/inbox-entry.entity';
import type { EntryFilter } from '../store/entry-filter';
import type { InboxStatus } from '../state/inbox-state-machine';
import type { InboxError } from '../errors/inbox.error';
export type { EntryFilter };

/** A command as it arrives, before it is stored. */
export interface IncomingCommand {
  /** Idempotency key, unique per command: 1–255 characters (code points), well-formed Unicode, no NUL. */
  messageId: string;
  /** Stored command type; a handler must exist for it unless unknown types are accepted. */
  commandType: string;
  /** JSON object handed (validated) to the handler. */
  payload: Record<string, unknown>;
  correlationId?: string | null;
  causationId?: string | null;
  /** Transport details (headers, tenant, ...); not part of the idempotency comparison. */
  metadata?: Record<string, unknown>;
  /**
   * Entries with the same key (an aggregate's id, say) run one at a time, in the order received.
   * 1–255 characters. Where the type's handler derives the key (`@InboxHandler(…, { orderingKey })`),
   * leave it out or send the same one.
   */
  orderingKey?: string | null;
}

export interface ReceiveOptions {
  /** Join the caller's transaction: the entry is stored only if that transaction commits. */
  manager?: EntityManager;
}

export interface ReceiveManyOptions extends ReceiveOptions {
  /**
   * All or none: an invalid command, or a messageId already used for another command, refuses the
   * whole batch (nothing stored). Otherwise each command gets its own result.
   */
  allOrNothing?: boolean;
}

/** What became of one command of a batch, in the order given (`index`). */
export type ReceiveManyResult =
  | { index: number; status: 'new' | 'duplicate'; entry: InboxEntry }
  /** `conflict`: IdempotencyConflictError; `invalid`: the error `receive` would have thrown. */
  | { index: number; status: 'conflict' | 'invalid'; error: InboxError };

export interface ReceiveResult {
  entry: InboxEntry;
  /** true when the messageId was already stored; the handler does not run again. */
  duplicate: boolean;
}

export interface ListEntriesQuery extends EntryFilter {
  /** 1..1000, default 100. Newest first. */
  limit?: number;
  /** The id of the last entry of the page before: the page after it (keyset pagination). */
  after?: string;
}

/** Which entries a bulk replay takes: DeadLetter by default (or Failed); discarded ones never. */
export type ReplayFilter = Omit<EntryFilter, 'includeDiscarded'>;

/** Who asks for an operator action, and why; both end up in the entry's history. */
export interface OperatorAction {
  /** Free-form: a user name, a ticket, a service. 1–255 characters. */
  actor: string;
  reason?: string;
}

export interface ReplayOptions extends Partial<OperatorAction> {
  /** A corrected payload; it must pass the handler's validation. The old one is kept in the history. */
  payload?: Record<string, unknown>;
}

export interface BulkReplayOptions extends OperatorAction {
  /** Count only; change nothing. */
  dryRun?: boolean;
  /** Entries per statement. Default 500. */
  batchSize?: number;
  /** Called after each batch with the number replayed so far and the number matched. */
  onProgress?: (replayed: number, matched: number) => void;
  /**
   * The count a dry run showed and the operator confirmed: when the filter matches another number
   * now, nothing changes and BulkCountChangedError says so.
   */
  expectedCount?: number;
}

/** Which dead letters a bulk discard closes (those not discarded yet), and who asks. */
export interface BulkDiscardOptions extends OperatorAction {
  dryRun?: boolean;
  batchSize?: number;
  expectedCount?: number;
}

export interface BulkDiscardResult {
  matched: number;
  discarded: number;
  dryRun: boolean;
}

/** Dead letters not discarded that failed the same way: one command type, one error fingerprint. */
export interface DeadLetterGroup {
  commandType: string;
  /** The last error with ids and numbers masked; filter on it with `errorFingerprint`. */
  fingerprint: string;
  count: number;
  /** The dead-letter reasons in the group. */
  reasons: string[];
  firstAt: Date;
  lastAt: Date;
  /** The newest entry of the group and its error as it was. */
  example: { id: string; error: string | null };
}

export interface DeadLetterGroupsQuery {
  commandType?: string;
  /** 1..1000, default 100. */
  limit?: number;
}

/** What an operator's console shows at a glance. */
export interface InboxStats {
  /** Entries by status: exact, except Completed, estimated from the table's statistics. */
  entries: Record<InboxStatus, number>;
  /** Entries not completed, by command type and status (exact). */
  byCommandType: Array<{ commandType: string; counts: Record<InboxStatus, number> }>;
  /** How long the oldest due entry has waited, in ms (0 when none is due). */
  oldestDueAgeMs: number;
  /** Dead letters not discarded, by reason. */
  deadLettersByReason: Record<string, number>;
}

/** Entries due now of one command type (see `InboxService.dueByCommandType`). */
export interface DueCommandType {
  commandType: string;
  due: number;
  /** Since when the oldest of them has been due. */
  oldestDueAt: Date;
}

export interface BlockedKeysQuery {
  /** Only keys blocked by an entry of this command type. */
  commandType?: string;
  /** 1..1000, default 100. */
  limit?: number;
}

/** An ordering key held by a dead letter (policy `block`): nothing later of the key runs until it is replayed or discarded. */
export interface BlockedKey {
  orderingKey: string;
  /** The dead letter that holds the key. */
  blockedBy: InboxEntry;
  /** How many entries of the key wait behind it. */
  waiting: number;
}

export interface BulkReplayResult {
  matched: number;
  replayed: number;
  dryRun: boolean;
}
