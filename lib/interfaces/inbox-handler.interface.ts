import type { Type } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { DeadLetterPolicy } from '../state/ordering';
import type { BackoffOptions, PayloadValidationOptions } from './inbox-options.interface';

/** What a handler learns about the entry it is running. */
export interface InboxContextEntry {
  readonly id: string;
  readonly messageId: string;
  readonly commandType: string;
  /** 1 for the first attempt, 2 for the first retry, ... */
  readonly attempt: number;
  readonly correlationId: string | null;
  readonly causationId: string | null;
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly receivedAt: Date;
}

/** @deprecated renamed `InboxContextEntry` (it describes the entry, not a handler); the old name goes in the next version. */
export type InboxHandlerEntry = InboxContextEntry;

export interface InboxContext {
  /**
   * The EntityManager of the transaction that will mark the entry Completed. Write through it
   * and your writes commit together with the completion, or roll back if the handler throws.
   */
  readonly manager: EntityManager;
  readonly entry: InboxContextEntry;
}

export interface InboxCommandHandler<TCommand = unknown> {
  execute(command: TCommand, context: InboxContext): Promise<void>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface InboxHandlerOptions<TPayload = any> {
  /** Attempts before dead-lettering; overrides the module's `maxAttempts`. */
  maxAttempts?: number;
  /** Overrides (field by field) the module's backoff. */
  backoff?: Partial<BackoffOptions>;
  /** class-validator class the payload is transformed into and validated against (string command types). */
  payload?: Type<object>;
  /** Overrides the module's `handlerTimeoutMs`; must be below `leaseMs`. */
  timeoutMs?: number;
  /** Overrides (field by field) the module's treatment of undeclared payload properties. */
  payloadValidation?: PayloadValidationOptions;
  /**
   * The ordering key of a command, derived from its payload as received (an aggregate's id, say):
   * entries with the same key run one at a time, in the order received. Applied by `receive` in
   * every application that has this handler; a key passed to `receive` must then agree with it.
   */
  orderingKey?: (payload: TPayload) => string;
  /** Overrides the module's `onDeadLetter` for this command type. */
  onDeadLetter?: DeadLetterPolicy;
}

/** What `@InboxHandler` stores on the class. */
export interface InboxHandlerMetadata {
  commandType: string;
  payloadClass?: Type<object>;
  maxAttempts?: number;
  backoff?: Partial<BackoffOptions>;
  timeoutMs?: number;
  payloadValidation?: PayloadValidationOptions;
  orderingKey?: (payload: never) => string;
  onDeadLetter?: DeadLetterPolicy;
}
