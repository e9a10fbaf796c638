import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn, Unique } from 'typeorm';

/** Flat JSON details of an event. */
export type AccountEventData = Record<string, string | number | boolean | null>;

export enum AccountEventType {
  Opened = 'AccountOpened',
  Deposited = 'MoneyDeposited',
  Withdrawn = 'MoneyWithdrawn',
}

/**
 * One fact about an account; the balance is derived from these rows only. Every command
 * appends exactly one event, so the unique message_id makes a doubled effect fail loudly
 * instead of silently moving money twice.
 */
@Entity('account_events')
@Unique('uq_account_events_message_id', ['messageId'])
@Unique('uq_account_events_account_sequence', ['accountId', 'sequence'])
export class AccountEvent {
  @PrimaryGeneratedColumn('identity', { type: 'bigint', primaryKeyConstraintName: 'pk_account_events' })
  id!: string;

  @Column({ name: 'account_id', type: 'varchar', length: 64 })
  accountId!: string;

  /** 1, 2, 3 ... per account: the position of the event in the account's stream. */
  @Column({ type: 'integer' })
  sequence!: number;

  @Column({ type: 'varchar', length: 32 })
  type!: AccountEventType;

  /** Minor units; 0 for AccountOpened. Deposits add, withdrawals subtract. */
  @Column({ type: 'integer' })
  amount!: number;

  /** Event details that are not money, e.g. the owner of a new account. */
  @Column({ type: 'jsonb', default: {} })
  data!: AccountEventData;

  /** Idempotency key of the command that caused this event. */
  @Column({ name: 'message_id', type: 'varchar', length: 255 })
  messageId!: string;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
