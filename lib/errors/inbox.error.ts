/** Base class of every error this library throws on purpose. */
export class InboxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A public method was called with an invalid argument; nothing was stored. */
export class InboxArgumentError extends InboxError {
  constructor(
    /** Path of the offending argument, e.g. `command.messageId`. */
    readonly argument: string,
    reason: string,
  ) {
    super(`Invalid argument "${argument}": ${reason}`);
  }
}

/** The module options, a decorator or the set of handlers is wrong; raised at boot. */
export class InboxConfigurationError extends InboxError {}

/** `receive` was asked for a command type that no handler in this application handles. */
export class UnknownCommandTypeError extends InboxArgumentError {
  constructor(readonly commandType: string) {
    super(
      'command.commandType',
      `no @InboxHandler is registered for "${commandType}". Register a handler, or set ` +
        '`acceptUnknownCommandTypes: true` on a receive-only instance whose workers run elsewhere.',
    );
  }
}

/** `receive` got an ordering key that is not the one the command type's handler derives from the payload. */
export class OrderingKeyMismatchError extends InboxArgumentError {
  constructor(
    readonly commandType: string,
    readonly given: string,
    readonly derived: string,
  ) {
    super(
      'command.orderingKey',
      `is "${given}", but the handler of "${commandType}" derives "${derived}" from the payload. ` +
        'Leave the key out (it is derived), or send the same one.',
    );
  }
}

/** The same messageId was received before with a different command type or payload. */
export class IdempotencyConflictError extends InboxError {
  constructor(
    readonly messageId: string,
    readonly existingEntryId: string,
  ) {
    super(
      `messageId "${messageId}" was already used for a different command (entry ${existingEntryId}); ` +
        'an idempotency key may only be reused for the identical command type and payload.',
    );
  }
}

/** No entry has the given id. */
export class InboxEntryNotFoundError extends InboxError {
  constructor(readonly entryId: string) {
    super(`No inbox entry with id ${entryId}.`);
  }
}

/**
 * A confirmed bulk action found another number of entries than the count the operator confirmed
 * (entries arrived or left since the dry run): nothing was changed; count again and confirm that.
 */
export class BulkCountChangedError extends InboxError {
  constructor(
    readonly expected: number,
    readonly matched: number,
  ) {
    super(`The filter now matches ${matched} entries, not the ${expected} confirmed; nothing was changed. Run the dry run again and confirm its count.`);
  }
}

/** An operation is not allowed in the entry's current status (e.g. replaying a Completed entry). */
export class InvalidEntryStateError extends InboxError {
  constructor(
    readonly entryId: string,
    readonly status: string,
    operation: string,
    allowed: readonly string[],
  ) {
    super(`Cannot ${operation} inbox entry ${entryId}: its status is "${status}", expected one of ${allowed.join(', ')}.`);
  }
}

/**
 * Thrown by a handler when a command can never succeed (a business rule is violated):
 * the entry goes to DeadLetter at once, without retries.
 */
export class PermanentError extends InboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message);
    if (options && 'cause' in options) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** The payload failed the handler's class-validator rules; the entry is dead-lettered. */
export class PayloadValidationError extends PermanentError {
  constructor(
    readonly commandType: string,
    readonly failures: readonly string[],
  ) {
    super(`Payload of "${commandType}" is invalid: ${failures.join('; ')}`);
  }
}

/**
 * The database could not be reached, or did not answer within `receiveTimeoutMs`. Nothing was
 * stored by this call, or, if a statement committed after all (or, in a `receiveMany` without all
 * or nothing, before the failure), a retry with the same messageIds returns those as duplicates:
 * retry the same commands.
 */
export class InboxUnavailableError extends InboxError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super(`The inbox database is unavailable: ${reason}. Retry the same command (same messageId) later.`);
    if (options && 'cause' in options) (this as { cause?: unknown }).cause = options.cause;
  }
}

/**
 * No connection of the pool became free within `receiveTimeoutMs`: every one is held, typically by
 * running handlers. Nothing was stored. A handler that receives a follow-up command must pass its
 * own transaction (`{ manager: context.manager }`), or the pool must be larger than the concurrency.
 */
export class InboxPoolExhaustedError extends InboxUnavailableError {
  constructor(
    /** The pool's size (`max`). */
    readonly poolSize: number,
    timeoutMs: number,
  ) {
    super('');
    this.message =
      `No connection of the pool (max ${poolSize}) became free within receiveTimeoutMs (${timeoutMs} ms): the pool is exhausted. ` +
      'A handler that receives a command must pass { manager: context.manager } to use its own transaction; ' +
      'otherwise make the pool larger than the worker concurrency + 2. Nothing was stored.';
  }
}

/** The application that owns the inbox has shut down (or is closing its database connection). */
export class InboxShutDownError extends InboxUnavailableError {
  constructor() {
    super('');
    this.message = 'The inbox is shut down: its application has closed its database connection. Nothing was stored or changed.';
  }
}

/**
 * A handler returned normally although its transaction was aborted: one of its statements failed
 * and it caught the error (e.g. an INSERT that hit a unique key). Its writes cannot commit, so the
 * attempt failed; use a savepoint (or `INSERT … ON CONFLICT DO NOTHING`) to ignore a failed statement.
 */
export class AbortedTransactionError extends InboxError {
  constructor() {
    super(
      'The handler returned normally but left its transaction aborted: a statement failed and the handler caught the error. ' +
        'Its writes cannot commit. Use INSERT … ON CONFLICT DO NOTHING, or a savepoint, to carry on after a failed statement.',
    );
  }
}

/** A handler ran longer than its timeout; its transaction was rolled back and the attempt counts as failed. */
export class HandlerTimeoutError extends InboxError {
  constructor(readonly timeoutMs: number) {
    super(`Handler timed out after ${timeoutMs} ms; its transaction was rolled back.`);
  }
}

/**
 * Recorded (never thrown to callers) when a started attempt's lease ran out with its worker gone:
 * it crashed, was killed, froze, or lost its connection.
 */
export class LeaseExpiredError extends Error {
  override readonly name = 'LeaseExpiredError';
}
