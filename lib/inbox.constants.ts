/** Metadata keys are namespaced strings so that two copies of the package still agree. */
export const INBOX_HANDLER_METADATA = 'nestjs-inbox:handler';
export const INBOX_COMMAND_METADATA = 'nestjs-inbox:command';

/** Injection tokens. */
export const INBOX_DATA_SOURCE = 'nestjs-inbox:data-source';
export const INBOX_RESOLVED_OPTIONS = 'nestjs-inbox:resolved-options';
/** The name of the table's worker timer (see timerNameOf). */
export const INBOX_TIMER_NAME = 'nestjs-inbox:timer-name';

export const DEFAULT_TABLE_NAME = 'inbox_entries';
export const STATUS_ENUM_NAME = 'inbox_status';

/** Limits on the envelope of a command; longer values are rejected by `receive`. */
export const MAX_MESSAGE_ID_LENGTH = 255;
export const MAX_ORDERING_KEY_LENGTH = 255;
export const MAX_COMMAND_TYPE_LENGTH = 255;
export const MAX_CORRELATION_ID_LENGTH = 255;
export const MAX_LIST_LIMIT = 1000;
/** Most commands one `receiveMany` takes: a broker consumer's batch, not a bulk import. */
export const MAX_RECEIVE_MANY = 1000;
/** Most characters of payload and metadata JSON one `receiveMany` takes (one statement carries them). */
export const MAX_RECEIVE_MANY_JSON_LENGTH = 64 * 1024 * 1024;
export const DEFAULT_LIST_LIMIT = 100;
export const INBOX_LISTENER_METADATA = 'nestjs-inbox:listener';
