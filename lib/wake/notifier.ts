import { Inject, Injectable, Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { backoffDelayMs } from '../state/backoff';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import { inboxIdentifiers } from '../store/identifiers';
import { pgPoolOf, pgQuery } from '../store/connection';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';

/** The bits of node-postgres' Client this class uses. */
interface ListenClient {
  connect(): Promise<void>;
  query(sql: string): Promise<unknown>;
  end(): Promise<void>;
  on(event: 'notification', listener: () => void): void;
  on(event: 'error' | 'end', listener: (error?: Error) => void): void;
  removeAllListeners(): void;
  /** node-postgres' connection, with its socket. */
  connection?: { stream?: { destroy(): void } };
}

const MAX_RECONNECT_DELAY_MS = 10_000;
const NOTIFY = { name: 'nestjs_inbox_notify', text: 'SELECT pg_notify($1, NULL)' };
const MIN_NOTIFY_SPACING_MS = 2;
/** The LISTEN connection's checks come at most this often: a short lease must not make a busy server look gone. */
const MIN_HEARTBEAT_MS = 1_000;

/** A receive statement's licence to carry the notification. */
export interface InlineTicket {
  readonly channel: string;
  /** It also carries announcements owed by earlier receives. */
  readonly owes: boolean;
  /** Sends those if the statement is held up; cleared when it settles. */
  guard?: NodeJS.Timeout;
}

/**
 * Wakes workers in other processes when commands arrive, without a NOTIFY in every receiving
 * transaction (PostgreSQL serialises the commits of notifying transactions). At most one
 * notification per MIN_NOTIFY_SPACING_MS, carried by the next receive statement to go out once the
 * interval is over (`takeInline`, no extra round trip), or, when none goes out, by one `pg_notify`
 * sent at its end for all the receives of the interval. A lone receive is always announced at once.
 * Workers LISTEN on a dedicated connection that reconnects with bounded backoff, logging once per
 * outage.
 */
@Injectable()
export class InboxNotifier implements BeforeApplicationShutdown {
  private readonly logger = new Logger('InboxProcessor');
  readonly channel: string;
  /** Receives committed since the last notification went out, not yet announced. */
  private pending = false;
  private sending = false;
  private client?: ListenClient;
  private closed = false;
  private failures = 0;
  private listening = false;
  /** Drops the current LISTEN connection and schedules a new one. */
  private drop?: (error: Error) => void;
  private reconnectTimer?: NodeJS.Timeout;
  /** Checks the LISTEN connection every half lease, at most once a second (see checkConnection). */
  private heartbeat?: NodeJS.Timeout;
  /** When the connection was asked something (to connect, LISTEN, or answer a ping) that it has not answered yet (monotonic ms). */
  private askedAt: number | null = null;
  private spacingTimer?: NodeJS.Timeout;
  /** When the last notification went out, on the monotonic clock (the wall clock may be set back). */
  private lastSentAt = -Infinity;

  /** How often the LISTEN connection is checked: every half lease, at most once a second. */
  private get heartbeatMs(): number {
    return Math.max(MIN_HEARTBEAT_MS, Math.floor(this.options.leaseMs / 2));
  }

  constructor(
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
  ) {
    this.channel = inboxIdentifiers(options.tableName).channel;
  }

  /**
   * Called by a receive right before it sends its statement: returns a ticket when that statement
   * should carry the notification (inside its INSERT, delivered at its commit), or undefined when
   * one went out less than the spacing ago or is on its way. The statement also covers every
   * receive that committed before it and still waits for an announcement. Every ticket is handed
   * back to `settle()` once its statement has finished.
   */
  takeInline(): InlineTicket | undefined {
    if (!this.options.notify || this.closed || this.sending) return undefined;
    const now = performance.now();
    if (now - this.lastSentAt < MIN_NOTIFY_SPACING_MS) return undefined;
    this.lastSentAt = now;
    const ticket: InlineTicket = { channel: this.channel, owes: this.pending };
    if (this.pending) {
      this.pending = false;
      // Should that statement be held up (a lock on the same key), the owed announcement goes out anyway.
      ticket.guard = setTimeout(() => {
        ticket.guard = undefined;
        this.notify();
      }, MIN_NOTIFY_SPACING_MS);
    }
    return ticket;
  }

  /**
   * The statement that took the ticket has finished; `sent`: it stored a new entry, so its commit
   * delivered the notification. If not, what was owed before it is owed again.
   */
  settle(ticket: InlineTicket, sent: boolean): void {
    if (!ticket.guard) return; // nothing was owed, or the guard announced it already
    clearTimeout(ticket.guard);
    ticket.guard = undefined;
    if (!sent) this.notify();
  }

  /** Tells other instances, soon, that new commands are due (after a receive that carried no notification); never throws. */
  notify(): void {
    if (!this.options.notify || this.closed) return;
    this.pending = true;
    this.schedule();
  }

  private schedule(): void {
    if (this.sending || this.spacingTimer || this.closed) return;
    // Even when the interval is over, wait a moment (a timer runs after pending I/O): a receive
    // statement about to go out takes the notification, and this one has nothing left to send.
    const wait = Math.max(0, this.lastSentAt + MIN_NOTIFY_SPACING_MS - performance.now());
    this.spacingTimer = setTimeout(() => this.flush(), wait);
  }

  private flush(): void {
    this.spacingTimer = undefined;
    if (!this.pending || this.closed || this.sending) return;
    if (performance.now() - this.lastSentAt < MIN_NOTIFY_SPACING_MS) return this.schedule(); // a receive carried one meanwhile
    this.pending = false;
    this.sending = true;
    this.lastSentAt = performance.now();
    pgQuery(pgPoolOf(this.dataSource), this.options.preparedStatements ? NOTIFY : NOTIFY.text, [this.channel])
      .catch(() => undefined) // the next poll finds the commands anyway
      .finally(() => {
        this.sending = false;
        if (this.pending) this.schedule();
      });
  }

  beforeApplicationShutdown(): void {
    this.closed = true;
    clearTimeout(this.spacingTimer);
    this.spacingTimer = undefined;
  }

  /** Whether this instance hears other instances' notifications now (its LISTEN connection is up). */
  get isListening(): boolean {
    return this.listening;
  }

  /** Calls `onWake` whenever another instance received commands. */
  async listen(onWake: () => void): Promise<void> {
    if (!this.options.notify) return;
    this.heartbeat = setInterval(() => this.checkConnection(), this.heartbeatMs);
    this.heartbeat.unref();
    await this.connect(onWake);
  }

  /**
   * A LISTEN connection hears nothing while nothing arrives, so one that went silent (a NAT or
   * firewall that forgot it drops what is sent, and tells nobody) would leave this instance deaf
   * to other instances for good, waking only on polls. Every half lease (at most once a second)
   * it is asked for an answer (which also keeps such middleboxes from seeing it idle); an answer
   * owed for a whole interval (to the ping, or to a connect or LISTEN) means the connection is
   * gone: it is dropped and opened anew.
   */
  private checkConnection(): void {
    const client = this.client;
    if (!client || this.closed) return;
    if (this.askedAt !== null) {
      // Connecting (a handshake, TLS, LISTEN) may take as long as a receive may wait for the database.
      const allowedMs = this.listening ? this.heartbeatMs : Math.max(this.heartbeatMs, this.options.receiveTimeoutMs);
      if (performance.now() - this.askedAt >= allowedMs) this.drop?.(new Error(`no answer within ${allowedMs} ms`));
      return;
    }
    if (!this.listening) return;
    const askedAt = (this.askedAt = performance.now());
    client.query('SELECT 1').then(
      () => {
        if (this.askedAt === askedAt) this.askedAt = null;
      },
      () => undefined, // a broken connection says so through its 'error' or 'end'
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listening = false;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.heartbeat);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    client.removeAllListeners();
    client.on('error', () => undefined);
    await client.end().catch(() => undefined);
  }

  private async connect(onWake: () => void): Promise<void> {
    const driver = this.dataSource.driver as unknown as {
      postgres: { Client: new (options: object) => ListenClient };
      master: { options: object };
    };
    const client = new driver.postgres.Client(driver.master.options);
    this.client = client;
    this.askedAt = performance.now();
    const lost = (error?: Error) => {
      if (this.client !== client) return;
      this.listening = false;
      this.drop = undefined;
      if (this.closed) return;
      this.client = undefined;
      this.askedAt = null;
      client.removeAllListeners();
      client.on('error', () => undefined);
      void client.end().catch(() => undefined);
      // A silent connection would not close on its own: its socket goes now.
      client.connection?.stream?.destroy();
      this.scheduleReconnect(onWake, error);
    };
    this.drop = lost;
    client.on('error', lost);
    client.on('end', () => lost(new Error('connection ended')));
    client.on('notification', onWake);
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channel}"`);
      if (this.client !== client) return;
      this.listening = true;
      this.askedAt = null;
      if (this.failures > 0) this.logger.log('Inbox notification listener reconnected.');
      this.failures = 0;
      onWake(); // commands may have arrived while we were not listening
    } catch (error) {
      lost(error as Error);
    }
  }

  private scheduleReconnect(onWake: () => void, error?: Error): void {
    this.failures++;
    if (this.failures === 1) this.logger.warn(`Inbox notification listener lost its connection; reconnecting (polling meanwhile): ${error?.message ?? 'unknown error'}`);
    const delay = backoffDelayMs(this.failures, { initialDelayMs: 100, multiplier: 2, maxDelayMs: MAX_RECONNECT_DELAY_MS, jitter: 0.2 });
    this.reconnectTimer = setTimeout(() => void this.connect(onWake), delay);
  }
}
