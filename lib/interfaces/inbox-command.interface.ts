import type { EntityManager } from 'typeorm';
import type { InboxEntry } from '../entities/inbox-entry.entity';
import type { InboxStatus } from '../inbox-status.enum';

/** A command as it arrives, before it is stored. */
export interface IncomingCommand {
  /** Idempotency key, unique per command (1–255 characters). */
  messageId: string;
  /** Stored command type; a handler must exist for it unless unknown types are accepted. */
  commandType: string;
  /** JSON object handed (validated) to the handler. */
  payload: Record<string, unknown>;
  correlationId?: string | null;
  causationId?: string | null;
  /** Transport details (headers, tenant, ...); not part of the idempotency comparison. */
  metadata?: Record<string, unknown>;
}

export interface ReceiveOptions {
  /** Join the caller's transaction: the entry is stored only if that transaction commits. */
  manager?: EntityManager;
}

export interface ReceiveResult {
  entry: InboxEntry;
  /** true when the messageId was already stored; the handler does not run again. */
  duplicate: boolean;
}

export interface ListEntriesQuery {
  status?: InboxStatus;
  commandType?: string;
  /** 1..1000, default 100. Newest first. */
  limit?: number;
}
