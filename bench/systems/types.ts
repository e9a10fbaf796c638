import type { Client } from 'pg';
import type { SystemName } from '../common';
import type { ChildSpec, Commands, Handler, Role } from '../protocol';

export interface EnqueueItem {
  messageId: string;
  payload: Record<string, unknown>;
  /** nestjs-inbox only: stored as a keyed receive would store it (see inbox-table.ts). */
  orderingKey?: string;
}

/** Orchestrator-side producer: stores a batch in ONE transaction, so it becomes visible at once. */
export interface Enqueuer {
  enqueue(items: EnqueueItem[], kind: Handler): Promise<void>;
  close(): Promise<void>;
}

/** What a child process runs for a role; it speaks the protocol itself (ready, go, result, stop). */
export type RoleRunner = (spec: ChildSpec, commands: Commands) => Promise<void>;

export interface SystemAdapter {
  name: SystemName;
  /** Settings used, one line each (printed in the header and the docs). */
  settings(): string[];
  /** Schema, queues, the events table; in a fresh database. */
  prepare(url: string): Promise<void>;
  openEnqueuer(url: string): Promise<Enqueuer>;
  /** Whether everything enqueued of this kind (`expected` in total) reached its final state. */
  finished(client: Client, kind: Handler, expected: number): Promise<boolean>;
  /** Commands of this kind that ended Completed, for systems that keep completed commands (a check after the drain). */
  completed?(client: Client, kind: Handler): Promise<number>;
  /** Commands stored by a `send` child (for the sanity check after the receive workloads). */
  stored(client: Client, mode: 'plain' | 'dedup'): Promise<number>;
  roles: Partial<Record<Role, RoleRunner>>;
}
