import { Inject, Injectable } from '@nestjs/common';
import type { QueryRunner } from 'typeorm';
import { LeaseExpiredError } from '../errors/inbox.error';
import { INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { OutcomeWriter } from '../outcomes/outcome-writer';
import { decideLeaseExpiry, isCrashSuspect, LeaseExpiryDecision } from '../state/inbox-state-machine';
import { runQuery } from '../store/connection';
import { clockTime } from '../store/database-clock';
import type { InboxRow } from '../store/schema';
import { InboxStatements } from '../store/statements';
import { ATTR } from '../telemetry/attributes';
import { InboxTracing, type RecordAttributes } from '../telemetry/inbox-tracing';
import { WorkerConnections } from './connections';

/** Expired leases handled per sweep; the rest wait for the next one. */
const LEASE_SWEEP_LIMIT = 100;

/**
 * Finds claims whose lease ran out — their worker crashed, froze or lost its connection (a live
 * worker holds its rows' locks, so SKIP LOCKED passes over it) — and settles each as the state
 * machine decides (`decideLeaseExpiry`): one of a batch goes back uncharged as a crash suspect, to
 * run alone; a suspect whose attempt never started goes back uncharged; a suspect that ran alone
 * and lost its worker has failed an attempt, so a message that keeps killing workers ends in
 * DeadLetter instead of looping for ever. The writer's statements are fenced by each claim's
 * token, so two sweeping workers cannot both settle one claim.
 */
@Injectable()
export class LeaseRescuer {

  constructor(
    private readonly sql: InboxStatements,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly writer: OutcomeWriter,
    private readonly connections: WorkerConnections,
    private readonly tracing: InboxTracing,
  ) {}

  async sweep(): Promise<void> {
    const clock = clockTime(this.options.clock);
    await this.connections.use(async (queryRunner) => {
      // The usual answer is "none": find that out with one cheap statement.
      if ((await runQuery(queryRunner, this.sql.anyExpiredLease, [clock])).rows.length === 0) return;
      await this.tracing.internal('nestjs_inbox.lease_sweep', {}, (record) => this.settle(queryRunner, clock, record));
    });
  }

  /** Settles the expired leases found, up to a sweep's limit. */
  private async settle(queryRunner: QueryRunner, clock: Date | null, record: RecordAttributes): Promise<void> {
    const { rows } = await runQuery<InboxRow>(queryRunner, this.sql.selectExpiredLeases, [clock, LEASE_SWEEP_LIMIT]);
    record({ [ATTR.count]: rows.length });
    const decided = (decision: LeaseExpiryDecision) =>
      rows.filter((row) => decideLeaseExpiry(row.processing_started_at !== null, isCrashSuspect(row.last_outcome)) === decision);
    await this.writer.release(queryRunner, decided(LeaseExpiryDecision.Release), false, 'its claim as a crash suspect expired before its attempt started');
    await this.writer.release(queryRunner, decided(LeaseExpiryDecision.ReleaseAsSuspect), true, 'its worker was gone when the lease of its batch ran out');
    await this.writer.fail(
      queryRunner,
      decided(LeaseExpiryDecision.Charge).map((row) => ({
        row,
        error: new LeaseExpiredError(`Lease expired: worker ${row.locked_by ?? '?'} did not finish within ${this.options.leaseMs} ms (crash, kill or hang).`),
        startedAt: null,
        finishedAt: null,
      })),
    );
  }
}
