import { Inject, Injectable, Logger } from '@nestjs/common';
import { InboxExplorer } from '../discovery/inbox.explorer';
import { INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { runQuery } from '../store/connection';
import { clockTime } from '../store/database-clock';
import { InboxStatements } from '../store/statements';
import { WorkerConnections } from './connections';

/**
 * A worker only claims the command types it has handlers for, so entries of a type no running
 * worker handles stay Pending, for ever if need be (their commands did not fail). Says so once they
 * have been due for `unclaimedWarningMs`, at most once per that interval.
 */
@Injectable()
export class UnclaimedWarning {
  private readonly logger = new Logger('InboxProcessor');
  /** When the last look was taken (ms since epoch, on the inbox's clock). */
  private lastCheck: number;

  constructor(
    private readonly sql: InboxStatements,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly explorer: InboxExplorer,
    private readonly connections: WorkerConnections,
  ) {
    this.lastCheck = options.clock.now().getTime();
  }

  async check(): Promise<void> {
    const threshold = this.options.unclaimedWarningMs;
    const now = this.options.clock.now().getTime();
    if (threshold === 0 || now - this.lastCheck < threshold) return;
    this.lastCheck = now;
    const { rows } = await this.connections.use((queryRunner) =>
      runQuery<{ command_type: string; due: number; oldest_due_at: Date }>(queryRunner, this.sql.unclaimedByCommandType, [
        clockTime(this.options.clock),
        `${threshold} milliseconds`,
        this.explorer.commandTypes(),
      ]),
    );
    for (const row of rows) {
      this.logger.warn(
        `${row.due} ${row.due === 1 ? 'entry' : 'entries'} of command type "${row.command_type}" due since ${row.oldest_due_at.toISOString()} ` +
          `(over ${threshold} ms): no running worker has claimed them, and this one has no handler for that type. ` +
          'Deploy a worker that handles it, or dead-letter them (npx nestjs-inbox dead-letter).',
      );
    }
  }
}
