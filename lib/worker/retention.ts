import {
  Inject,
  Injectable,
  Logger,
  Optional,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import type { DataSource, QueryRunner } from 'typeorm';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS, INBOX_TIMER_NAME } from '../inbox.constants';
import { clockTime } from '../store/database-clock';
import { destroyConnection, newQueryRunner, runQuery } from '../store/connection';
import { InboxTracing, type RecordAttributes } from '../telemetry/inbox-tracing';
import { InboxStatements } from '../store/statements';
import { settlesWithin } from './settles-within';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';

export interface RetentionResult {
  /** Completed entries whose payload (and metadata) was removed; a digest keeps deduplication working. */
  payloadsRemoved: number;
  /** Completed entries deleted after the deduplication window (with their history). */
  deleted: number;
  /** Ordering keys free for longer than the deduplication window whose row was removed. */
  keysRemoved: number;
}

/**
 * Cleans up completed entries on a schedule: first their payloads, later (after the deduplication
 * window) the rows. Dead letters are never touched. Works in small batches that skip locked rows,
 * so it never holds long locks. Same lifecycle as the processor: worker instances only, started at
 * bootstrap, never overlapping, stopped (and awaited, up to shutdownTimeoutMs) on shutdown.
 */
@Injectable()
export class InboxRetention implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(InboxRetention.name);
  private readonly timerName: string;
  private timer?: NodeJS.Timeout;
  private running: Promise<RetentionResult> | null = null;
  private stopping = false;
  /** The connection the running statement is on (cut if shutdown runs out of time). */
  private current?: QueryRunner;
  /** Set when shutdown ran out of time: no statement is sent any more. */
  private cut = false;

  constructor(
    private readonly sql: InboxStatements,
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly tracing: InboxTracing,
    @Inject(INBOX_TIMER_NAME) timerName: string,
    @Optional() private readonly schedulerRegistry?: SchedulerRegistry,
  ) {
    this.timerName = `${timerName}:retention`;
  }

  onApplicationBootstrap(): void {
    const { worker, retention } = this.options;
    if (!worker || retention.intervalMs === 0 || !this.schedulerRegistry) return;
    if (this.schedulerRegistry.doesExist('interval', this.timerName)) return; // a second import of the module
    this.timer = setInterval(() => void this.runOnce().catch((error: unknown) => this.logger.error(`Inbox retention failed: ${(error as Error).message}`)), retention.intervalMs);
    this.schedulerRegistry.addInterval(this.timerName, this.timer);
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    if (this.schedulerRegistry?.doesExist('interval', this.timerName)) this.schedulerRegistry.deleteInterval(this.timerName);
    clearInterval(this.timer);
    // A batch is one short statement: let the current one finish, within shutdownTimeoutMs (one
    // that waits for a lock, or on a connection gone silent, would hold shutdown for ever).
    const running = this.running?.catch(() => undefined);
    if (!running || (await settlesWithin(running, this.options.shutdownTimeoutMs))) return;
    // Cut: what it removed so far stays removed, the rest is for the next start.
    this.logger.warn('Inbox retention still running after shutdownTimeoutMs; its connection was cut.');
    this.cut = true;
    const current = this.current;
    // Still waiting for the pool: nothing to cut, and a runner released now would keep the
    // connection the pool hands it later for ever (TypeORM's closePool then never returns).
    // inBatches gives that connection back as soon as it has it; shutdown does not wait for the pool.
    if (!current || !(current as unknown as { databaseConnection?: unknown }).databaseConnection) return;
    await destroyConnection(current, new Error('nestjs-inbox shutdown timeout'));
    await running;
  }

  /** Runs one cleanup now (or joins the running one). */
  runOnce(): Promise<RetentionResult> {
    this.running ??= this.tracing.internal('nestjs_inbox.retention', {}, (record) => this.cleanUp(record)).finally(() => (this.running = null));
    return this.running;
  }

  private async cleanUp(record: RecordAttributes): Promise<RetentionResult> {
    const { payloadRetentionMs, deduplicationWindowMs } = this.options.retention;
    const deleted = await this.inBatches(this.sql.removeCompleted, deduplicationWindowMs);
    const payloadsRemoved = await this.inBatches(this.sql.removePayloads, payloadRetentionMs);
    // An ordering key's row outlives its entries by the same window; a key received again gets a new one.
    const keysRemoved = await this.inBatches(this.sql.removeIdleKeys, deduplicationWindowMs);
    if (deleted + payloadsRemoved + keysRemoved > 0) {
      this.logger.log(`Inbox retention removed ${payloadsRemoved} payload(s), deleted ${deleted} completed entr(ies) and forgot ${keysRemoved} idle ordering key(s).`);
    }
    record({ 'nestjs_inbox.retention.deleted': deleted, 'nestjs_inbox.retention.payloads_removed': payloadsRemoved, 'nestjs_inbox.retention.keys_removed': keysRemoved });
    return { payloadsRemoved, deleted, keysRemoved };
  }

  /** Runs `statement` on completed entries older than `ageMs` (by the database's clock) until none is left. */
  private async inBatches(statement: string, ageMs: number): Promise<number> {
    const { batchSize } = this.options.retention;
    let total = 0;
    while (!this.stopping) {
      const queryRunner = newQueryRunner(this.dataSource);
      this.current = queryRunner;
      let affected: number;
      try {
        await queryRunner.connect();
        if (this.cut) break;
        ({ affected } = await runQuery(queryRunner, statement, [clockTime(this.options.clock), `${ageMs} milliseconds`, batchSize]));
      } finally {
        this.current = undefined;
        await queryRunner.release();
      }
      total += affected;
      if (affected < batchSize) break;
    }
    return total;
  }
}
