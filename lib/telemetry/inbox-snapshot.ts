import { Inject, Injectable } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { InboxStatus } from '../state/inbox-state-machine';
import { InboxUnavailableError } from '../errors/inbox.error';
import { clockTime } from '../store/database-clock';
import { withDeadline } from '../store/deadline';
import { InboxStatements } from '../store/statements';

/** The figures the gauges and the health check report, as the fleet last counted them. */
export interface InboxSnapshot {
  /** Entries by status; Completed is estimated from the table's statistics. */
  entries: Record<InboxStatus, number>;
  /** Dead letters not discarded. */
  openDeadLetters: number;
  /** Processing entries whose lease ran out (their worker is gone or frozen). */
  expiredLeases: number;
  /** How long the oldest due entry has waited, in ms (0 when none is due). */
  oldestDueAgeMs: number;
  /** When the figures were counted. */
  refreshedAt: Date;
}

interface SnapshotRow {
  pending: string;
  processing: string;
  failed: string;
  dead_letter: string;
  completed_estimate: string;
  open_dead_letters: string;
  expired_leases: string;
  oldest_due_at: Date | null;
  refreshed_at: Date;
  read_at: Date;
}

/**
 * Reads the shared figures (see InboxStatements.snapshot): one statement that recounts them only
 * when they are older than `maxAgeMs`, whichever instance asks first; a read that overlaps one in
 * this process accepting figures at least as fresh as it wants shares that one's statement.
 */
@Injectable()
export class InboxSnapshots {
  /** The read in flight, and the age of figures it accepts. */
  private reading: { answer: Promise<InboxSnapshot>; maxAgeMs: number } | null = null;

  constructor(
    private readonly sql: InboxStatements,
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
  ) {}

  read(maxAgeMs: number = this.options.telemetry.snapshotMaxAgeMs): Promise<InboxSnapshot> {
    // A read in flight that accepts older figures than this one wants is no answer to it.
    if (this.reading && this.reading.maxAgeMs <= maxAgeMs) return this.reading.answer;
    const reading = {
      maxAgeMs,
      answer: this.query(maxAgeMs).finally(() => {
        if (this.reading === reading) this.reading = null;
      }),
    };
    this.reading = reading;
    return reading.answer;
  }

  private async query(maxAgeMs: number): Promise<InboxSnapshot> {
    // Bounded as a receive is: a read left hanging on a connection that went silent would hold
    // every later read (they share it), and the health check would stay down after the database
    // answers again.
    const timeoutMs = this.options.receiveTimeoutMs;
    const rows = await withDeadline(
      this.dataSource,
      timeoutMs,
      () => new InboxUnavailableError(`no answer within receiveTimeoutMs (${timeoutMs} ms)`),
      (query) => query<SnapshotRow>(this.sql.snapshot, [`${maxAgeMs} milliseconds`, clockTime(this.options.clock)]),
    );
    const row = rows[0];
    if (!row) throw new Error(`the inbox's snapshot row is missing: run the inbox migration (table "${this.options.tableName}")`);
    const open = Number(row.pending) + Number(row.processing) + Number(row.failed) + Number(row.dead_letter);
    return {
      entries: {
        [InboxStatus.Pending]: Number(row.pending),
        [InboxStatus.Processing]: Number(row.processing),
        [InboxStatus.Failed]: Number(row.failed),
        [InboxStatus.DeadLetter]: Number(row.dead_letter),
        [InboxStatus.Completed]: Math.max(0, Number(row.completed_estimate) - open),
      },
      openDeadLetters: Number(row.open_dead_letters),
      expiredLeases: Number(row.expired_leases),
      oldestDueAgeMs: row.oldest_due_at ? Math.max(0, row.read_at.getTime() - row.oldest_due_at.getTime()) : 0,
      refreshedAt: row.refreshed_at,
    };
  }
}
