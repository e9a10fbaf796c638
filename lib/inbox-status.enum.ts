/** Lifecycle of an inbox entry. Stored as the PostgreSQL enum type `inbox_status`. */
export enum InboxStatus {
  Pending = 'pending',
  Processing = 'processing',
  Completed = 'completed',
  Failed = 'failed',
  DeadLetter = 'dead_letter',
}

export const INBOX_STATUSES: readonly InboxStatus[] = Object.values(InboxStatus);
