import { Inject, Injectable, Logger } from '@nestjs/common';
import type { Socket } from 'node:net';
import type { DataSource, QueryRunner } from 'typeorm';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { destroyConnection, newQueryRunner } from '../store/connection';

/**
 * The worker's pool connections: lent out one at a time, each ended should it stay silent for a
 * lease, and all cut at once when shutdown runs out of time.
 */
@Injectable()
export class WorkerConnections {
  private readonly logger = new Logger('InboxProcessor');
  private readonly held = new Set<QueryRunner>();
  private abandoned = false;

  constructor(
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
  ) {}

  /** True once shutdown gave up on the work in flight: nothing more is to be recorded. */
  get isAbandoned(): boolean {
    return this.abandoned;
  }

  /** Lends a connection to `work` and always gives it back. */
  async use<T>(work: (queryRunner: QueryRunner) => Promise<T>): Promise<T> {
    const queryRunner = newQueryRunner(this.dataSource);
    this.held.add(queryRunner);
    let unwatch: (() => void) | undefined;
    try {
      unwatch = this.endWhenSilent(await queryRunner.connect());
      return await work(queryRunner);
    } finally {
      unwatch?.();
      this.held.delete(queryRunner);
      await queryRunner.release();
    }
  }

  /** Cuts every connection held: open transactions roll back, nothing hangs. */
  abandon(): void {
    this.abandoned = true;
    for (const queryRunner of this.held) void destroyConnection(queryRunner, new Error('nestjs-inbox shutdown timeout'));
  }

  /**
   * Ends the connection once nothing has passed over it for a lease (until the returned function
   * is called). The worker never leaves its connection quiet that long: a handler's time is shorter
   * than the lease, and so is the server's own limit on an idle transaction (see the lock
   * statement). A connection quiet for a lease went silent (a NAT or firewall that forgot it drops
   * what is sent, and tells nobody): without this, the statement waiting on it would hold the
   * worker's pass for as long as the operating system keeps retrying, a quarter of an hour.
   * Destroyed, the statement fails as on a broken connection, and the pass goes on with new ones.
   */
  private endWhenSilent(client: unknown): () => void {
    const stream = (client as { connection?: { stream?: Socket } }).connection?.stream;
    if (!stream || typeof stream.setTimeout !== 'function') return () => undefined;
    const end = () => {
      this.logger.warn(`A worker connection was silent for leaseMs (${this.options.leaseMs} ms); ended, its work goes on with a new one.`);
      stream.destroy();
    };
    stream.setTimeout(this.options.leaseMs);
    stream.on('timeout', end);
    return () => {
      stream.setTimeout(0);
      stream.removeListener('timeout', end);
    };
  }
}
