import { Inject, Injectable } from '@nestjs/common';
import { LeaseExpiredError } from '../errors/inbox.error';
import { INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { OutcomeWriter } from '../outcomes/outcome-writer';
import { runQuery } from '../store/connection';
import { clockTime } from '../store/database-clock';
import type { InboxRow } from '../store/schema';
import { InboxStatements } from '../store/statements';
import { WorkerConnections } from './connections';

/** Expired leases handled per sweep; the rest wait for the next one. */
const LEASE_SWEEP_LIMIT = 100;

/**
 * Finds claims whose lease ran out — their worker crashed, froze or lost its connection (a live
 * worker holds its rows' locks, so SKIP LOCKED passes over it) — and settles each through the
 * outcome writer: an attempt that had started failed (`expireLease`), so a message that keeps
 * killing workers ends in DeadLetter instead of looping for ever; a claim whose attempt never
 * started goes back uncharged (`release`). The writer's statements are fenced by each claim's
 * token, so two sweeping workers cannot both settle one claim.
 */
@Injectable()
export class LeaseRescuer {
  private readonly sql: InboxStatements;

  constructor(
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly writer: OutcomeWriter,
    private readonly connections: WorkerConnections,
  ) {
    this.sql = new InboxStatements(options.tableName, options.attemptHistory, options.preparedStatements);
  }

  async sweep(): Promise<void> {
    const clock = clockTime(this.options.clock);
    await this.connections.use(async (queryRunner) => {
      // The usual answer is "none": find that out with one cheap statement.
      if ((await runQuery(queryRunner, this.sql.anyExpiredLease, [clock])).rows.length === 0) return;
      const { rows } = await runQuery<InboxRow>(queryRunner, this.sql.selectExpiredLeases, [clock, LEASE_SWEEP_LIMIT]);
      await this.writer.release(queryRunner, rows.filter((row) => row.processing_started_at === null), 'its claim expired before its attempt started');
      await this.writer.fail(
        queryRunner,
        rows
          .filter((row) => row.processing_started_at !== null)
          .map((row) => ({
            row,
            error: new LeaseExpiredError(`Lease expired: worker ${row.locked_by ?? '?'} did not finish within ${this.options.leaseMs} ms (crash, kill or hang).`),
            startMs: null,
            durationMs: null,
          })),
      );
    });
  }
}
