import { Inject, Injectable } from '@nestjs/common';
import type { DataSource, QueryRunner } from 'typeorm';
import { INBOX_DATA_SOURCE } from '../inbox.constants';
import { destroyConnection, newQueryRunner } from '../store/connection';

/** The worker's pool connections: lent out one at a time, and all cut at once when shutdown runs out of time. */
@Injectable()
export class WorkerConnections {
  private readonly held = new Set<QueryRunner>();
  private abandoned = false;

  constructor(@Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource) {}

  /** True once shutdown gave up on the work in flight: nothing more is to be recorded. */
  get isAbandoned(): boolean {
    return this.abandoned;
  }

  /** Lends a connection to `work` and always gives it back. */
  async use<T>(work: (queryRunner: QueryRunner) => Promise<T>): Promise<T> {
    const queryRunner = newQueryRunner(this.dataSource);
    this.held.add(queryRunner);
    try {
      return await work(queryRunner);
    } finally {
      this.held.delete(queryRunner);
      await queryRunner.release();
    }
  }

  /** Cuts every connection held: open transactions roll back, nothing hangs. */
  abandon(): void {
    this.abandoned = true;
    for (const queryRunner of this.held) void destroyConnection(queryRunner, new Error('nestjs-inbox shutdown timeout'));
  }
}
