import { Inject, Injectable, Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { backoffDelayMs } from './backoff';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from './inbox.constants';
import type { ResolvedInboxOptions } from './interfaces/inbox-options.interface';

/** The bits of node-postgres' Client this class uses. */
interface ListenClient {
  connect(): Promise<void>;
  query(sql: string): Promise<unknown>;
  end(): Promise<void>;
  on(event: 'notification', listener: () => void): void;
  on(event: 'error' | 'end', listener: (error?: Error) => void): void;
  removeAllListeners(): void;
}

const MAX_RECONNECT_DELAY_MS = 10_000;
const MIN_NOTIFY_SPACING_MS = 2;

/**
 * Wakes workers in other processes when commands arrive, without a NOTIFY in the receiving
 * transaction (PostgreSQL serialises the commits of notifying transactions). After a receive
 * commits, `notify()` sends one `pg_notify` on its own; while one is on its way, further calls
 * are folded into a single follow-up. Workers LISTEN on a dedicated connection that reconnects
 * with bounded backoff, logging once per outage.
 */
@Injectable()
export class InboxNotifier implements BeforeApplicationShutdown {
  private readonly logger = new Logger('InboxProcessor');
  readonly channel: string;
  private sending = false;
  private again = false;
  private client?: ListenClient;
  private closed = false;
  private failures = 0;
  private reconnectTimer?: NodeJS.Timeout;
  private spacingTimer?: NodeJS.Timeout;
  private lastSentAt = 0;

  constructor(
    @Inject(INBOX_DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
  ) {
    this.channel = `nestjs_inbox_${options.tableName.replace('.', '_')}`;
  }

  /**
   * Tells other instances that new commands are due; never throws. At most one NOTIFY is on its
   * way at a time and they are at least MIN_NOTIFY_SPACING_MS apart: a burst of receives costs a
   * few notifications, a lone receive is announced at once.
   */
  notify(): void {
    if (!this.options.notify || this.closed) return;
    if (this.sending || this.spacingTimer) {
      this.again = true;
      return;
    }
    const wait = this.lastSentAt + MIN_NOTIFY_SPACING_MS - Date.now();
    if (wait > 0) {
      this.spacingTimer = setTimeout(() => {
        this.spacingTimer = undefined;
        this.again = false;
        this.notify();
      }, wait);
      return;
    }
    this.sending = true;
    this.lastSentAt = Date.now();
    this.dataSource
      .query('SELECT pg_notify($1, NULL)', [this.channel])
      .catch(() => undefined) // the next poll finds the commands anyway
      .finally(() => {
        this.sending = false;
        if (this.again) {
          this.again = false;
          this.notify();
        }
      });
  }

  beforeApplicationShutdown(): void {
    this.closed = true;
    clearTimeout(this.spacingTimer);
    this.spacingTimer = undefined;
  }

  /** Calls `onWake` whenever another instance received commands. */
  async listen(onWake: () => void): Promise<void> {
    if (!this.options.notify) return;
    await this.connect(onWake);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
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
    const lost = (error?: Error) => {
      if (this.client !== client || this.closed) return;
      this.client = undefined;
      client.removeAllListeners();
      client.on('error', () => undefined);
      void client.end().catch(() => undefined);
      this.scheduleReconnect(onWake, error);
    };
    client.on('error', lost);
    client.on('end', () => lost(new Error('connection ended')));
    client.on('notification', onWake);
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channel}"`);
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
