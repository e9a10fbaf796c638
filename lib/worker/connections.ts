import { Inject, Injectable, Logger } from '@nestjs/common';
import type { Socket } from 'node:net';
import type { DataSource, QueryRunner } from 'typeorm';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { destroyConnection, newQueryRunner } from '../store/connection';
import { withDeadline } from '../store/deadline';
import { InboxStatements } from '../store/statements';

/** What a quiet connection's session was found doing (see settleQuiet). */
type SessionState = 'at work' | 'gone quiet' | 'no answer' | 'unknown';

/** The bits of node-postgres' client the watch on a quiet connection uses. */
interface WatchedClient {
  processID?: number;
  connection?: { stream?: Socket };
}

/**
 * The worker's pool connections: lent out one at a time, each watched while it is quiet, and all
 * cut at once when shutdown runs out of time.
 */
@Injectable()
export class WorkerConnections {
  private readonly logger = new Logger('InboxProcessor');
  /** Runners lent out that hold a connection. */
  private readonly held = new Set<QueryRunner>();
  /** Runners lent out still waiting for the pool; those shutdown gave up on, once they get it. */
  private readonly connecting = new Set<QueryRunner>();
  private readonly givenUp = new WeakSet<QueryRunner>();
  private abandoned = false;

  constructor(
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
    private readonly sql: InboxStatements,
  ) {}

  /** True once shutdown gave up on the work in flight: nothing more is to be recorded. */
  get isAbandoned(): boolean {
    return this.abandoned;
  }

  /** Lends a connection to `work` and always gives it back. */
  async use<T>(work: (queryRunner: QueryRunner) => Promise<T>): Promise<T> {
    const queryRunner = newQueryRunner(this.dataSource);
    let unwatch: (() => void) | undefined;
    try {
      this.connecting.add(queryRunner);
      const client = (await queryRunner.connect().finally(() => this.connecting.delete(queryRunner))) as WatchedClient;
      // Shutdown gave up while this waited for the pool: the connection goes back now, destroyed.
      // (A runner released before it has its connection would never give that one back, and the
      // pool could never close: abandon() leaves such a runner to this.)
      if (this.givenUp.has(queryRunner)) {
        const gaveUp = new Error('nestjs-inbox shutdown timeout');
        await destroyConnection(queryRunner, gaveUp);
        throw gaveUp;
      }
      this.held.add(queryRunner);
      unwatch = this.watchWhileQuiet(client);
      return await work(queryRunner);
    } finally {
      unwatch?.();
      this.held.delete(queryRunner);
      await queryRunner.release();
    }
  }

  /** Cuts every connection held: open transactions roll back, nothing hangs. Borrowers still waiting for the pool give theirs back as they get it. */
  abandon(): void {
    this.abandoned = true;
    for (const queryRunner of this.held) void destroyConnection(queryRunner, new Error('nestjs-inbox shutdown timeout'));
    for (const queryRunner of this.connecting) this.givenUp.add(queryRunner);
  }

  /**
   * Ends the server session `pid` of a connection this worker gave up on (destroyed on its side):
   * what the server still runs for it stops, and its locks go. Never throws.
   */
  async endSession(pid: number): Promise<void> {
    await this.onOwnConnection(this.sql.endSession, [pid]).catch(() => undefined);
  }

  /**
   * Looks into the connection each time nothing has passed over it for a lease (until the returned
   * function is called); see settleQuiet.
   */
  private watchWhileQuiet(client: WatchedClient): () => void {
    const stream = client.connection?.stream;
    if (!stream || typeof stream.setTimeout !== 'function') return () => undefined;
    let watching = true;
    const quiet = () => void this.settleQuiet(client.processID, stream, () => watching);
    stream.setTimeout(this.options.leaseMs);
    stream.on('timeout', quiet);
    return () => {
      watching = false;
      stream.setTimeout(0);
      stream.removeListener('timeout', quiet);
    };
  }

  /**
   * A worker connection quiet for a lease. A statement waiting for a lock (a migration's, an
   * application's transaction on a key) or running long is quiet too, so the server is asked, from
   * another connection, what its session is doing. At work: it is watched for another lease.
   * Otherwise the connection went silent (a NAT or firewall that forgot it drops what is sent, and
   * tells nobody) and the statement waiting on it would hold the worker's pass for as long as the
   * operating system keeps retrying, a quarter of an hour: its session is ended (it may hold the
   * batch's locks), and its socket destroyed, so that the statement fails as on a broken
   * connection. No answer at all (the network is gone): the socket is destroyed. No connection to
   * ask with: watched again, nothing known is wrong.
   */
  private async settleQuiet(pid: number | undefined, stream: Socket, watching: () => boolean): Promise<void> {
    const traffic = () => stream.bytesRead + stream.bytesWritten;
    const before = traffic();
    const state = await this.sessionState(pid);
    if (!watching()) return;
    // Bytes passed meanwhile (an event loop held up past the lease runs the timer before it reads
    // the answer that was waiting): not silent.
    if (state === 'at work' || state === 'unknown' || traffic() !== before) {
      stream.setTimeout(this.options.leaseMs);
      return;
    }
    this.logger.warn(`A worker connection was silent for leaseMs (${this.options.leaseMs} ms), its session ${state === 'gone quiet' ? 'idle' : 'out of reach'}; ended, its work goes on with a new one.`);
    if (state === 'gone quiet' && pid !== undefined) await this.endSession(pid);
    // Given back meanwhile (its statement failed as its session ended): the pool has dealt with it.
    if (watching()) stream.destroy();
  }

  /**
   * Only a question asked and not answered says the server is out of reach; no connection to ask
   * with (the pool taken, the server turning new connections away at its limit) says nothing.
   */
  private async sessionState(pid: number | undefined): Promise<SessionState> {
    if (pid === undefined) return 'no answer';
    let asked = false;
    try {
      const rows = await this.onOwnConnection<{ state: string | null }>(this.sql.sessionState, [pid], () => (asked = true));
      return rows[0]?.state === 'active' ? 'at work' : 'gone quiet';
    } catch {
      return asked ? 'no answer' : 'unknown';
    }
  }

  /** One statement on a pool connection of its own, within the receive's deadline; `sent` once it has one. */
  private onOwnConnection<R>(sql: string, params: unknown[], sent?: () => void): Promise<R[]> {
    const timeoutMs = this.options.receiveTimeoutMs;
    return withDeadline(this.dataSource, timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`), (query) => {
      sent?.();
      return query<R>(sql, params);
    });
  }
}
