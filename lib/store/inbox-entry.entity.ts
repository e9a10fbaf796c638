import { Column, Entity, Index, PrimaryGeneratedColumn, Unique } from 'typeorm';
import { DEFAULT_TABLE_NAME, STATUS_ENUM_NAME } from '../inbox.constants';
import { InboxStatus } from '../state/inbox-state-machine';
import type { AttemptOutcome, DeadLetterReason } from '../state/inbox-state-machine';

/**
 * One received command. The schema is created by the shipped migration (`InboxMigration`);
 * register this entity in your data source to query the table through TypeORM. The claim and
 * lease indexes are partial expression indexes that only the migration creates.
 */
@Entity(DEFAULT_TABLE_NAME)
@Index('ix_inbox_entries_status_received', ['status', 'receivedAt'])
@Unique('uq_inbox_entries_message_id', ['messageId'])
export class InboxEntry {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_inbox_entries' })
  id!: string;

  /** Idempotency key: a second receive with it returns this entry instead of storing another. */
  @Column({ name: 'message_id', type: 'varchar', length: 255 })
  messageId!: string;

  @Column({ name: 'command_type', type: 'varchar', length: 255 })
  commandType!: string;

  /** The command's payload; null once retention removed it (the entry stays for deduplication). */
  @Column({ type: 'jsonb', nullable: true })
  payload!: Record<string, unknown> | null;

  /** md5 of the payload's jsonb text, kept when retention removes the payload. */
  @Column({ name: 'payload_digest', type: 'varchar', length: 32, nullable: true, select: false })
  payloadDigest?: string | null;

  @Column({ type: 'enum', enum: InboxStatus, enumName: STATUS_ENUM_NAME, default: InboxStatus.Pending })
  status!: InboxStatus;

  /** Failed attempts so far. */
  @Column({ name: 'retry_count', type: 'integer', default: 0 })
  retryCount!: number;

  /**
   * Attempts allowed, written when an attempt starts by the worker that has the handler, so that any
   * worker (one without the handler, the lease sweep) decides the same way; null before the first.
   */
  @Column({ name: 'max_attempts', type: 'integer', nullable: true })
  maxAttempts!: number | null;

  /** When a Failed entry becomes due again. */
  @Column({ name: 'next_retry_at', type: 'timestamptz', nullable: true })
  nextRetryAt!: Date | null;

  /** The last failure's message (or why the entry was dead-lettered). */
  @Column({ type: 'text', nullable: true })
  error!: string | null;

  /**
   * How the last attempt ended (`completed`, `failed`, `timed_out`, `lease_expired`); kept through a
   * replay. `lease_expired` marks a crash suspect: its worker died while running it, so it runs alone.
   */
  @Column({ name: 'last_outcome', type: 'varchar', length: 32, nullable: true })
  lastOutcome!: AttemptOutcome | null;

  @Column({ name: 'received_at', type: 'timestamptz', default: () => 'now()' })
  receivedAt!: Date;

  @Column({ name: 'processed_at', type: 'timestamptz', nullable: true })
  processedAt!: Date | null;

  /** When the attempt that completed the entry started (its record in `history()` is read from here). */
  @Column({ name: 'processing_started_at', type: 'timestamptz', nullable: true })
  processingStartedAt!: Date | null;

  /** The worker whose attempt completed the entry. */
  @Column({ name: 'processed_by', type: 'varchar', length: 255, nullable: true })
  processedBy!: string | null;

  @Column({ name: 'correlation_id', type: 'varchar', length: 255, nullable: true })
  correlationId!: string | null;

  @Column({ name: 'causation_id', type: 'varchar', length: 255, nullable: true })
  causationId!: string | null;

  @Column({ type: 'jsonb', default: {} })
  metadata!: Record<string, unknown>;

  /** Worker holding the current claim. */
  @Column({ name: 'locked_by', type: 'varchar', length: 255, nullable: true })
  lockedBy!: string | null;

  /** End of the current claim's lease; after it another worker counts the attempt as crashed. */
  @Column({ name: 'locked_until', type: 'timestamptz', nullable: true })
  lockedUntil!: Date | null;

  /** Fencing token of the current claim: only its holder may record the outcome. */
  @Column({ name: 'lock_token', type: 'uuid', nullable: true })
  lockToken!: string | null;

  /** Why the entry is in DeadLetter. */
  @Column({ name: 'dead_letter_reason', type: 'varchar', length: 32, nullable: true })
  deadLetterReason!: DeadLetterReason | null;

  @Column({ name: 'dead_lettered_at', type: 'timestamptz', nullable: true })
  deadLetteredAt!: Date | null;

  /** Set when an operator closed a dead letter without running it; kept for deduplication and audit. */
  @Column({ name: 'discarded_at', type: 'timestamptz', nullable: true })
  discardedAt!: Date | null;

  /** Entries with the same key run one at a time, in the order they were received. */
  @Column({ name: 'ordering_key', type: 'varchar', length: 255, nullable: true })
  orderingKey!: string | null;

  /** The entry's place in its key's order (a bigint, as TypeORM gives bigints: a string). */
  @Column({ name: 'ordering_seq', type: 'bigint', nullable: true })
  orderingSeq!: string | null;

  /** Waits behind an earlier entry of its key; it is not claimed until that one is done. */
  @Column({ type: 'boolean', default: false })
  waiting!: boolean;

  /** A dead letter that holds its key (policy `block`) until it is replayed or discarded. */
  @Column({ name: 'blocks_key', type: 'boolean', default: false })
  blocksKey!: boolean;

  /** The W3C trace context (`traceparent`) of the receive: the parent of every attempt's span. */
  @Column({ name: 'trace_parent', type: 'varchar', length: 55, nullable: true })
  traceParent!: string | null;

  /** The W3C `tracestate` that came with it. */
  @Column({ name: 'trace_state', type: 'varchar', length: 512, nullable: true })
  traceState!: string | null;
}
