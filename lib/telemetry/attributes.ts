/**
 * The names the library's spans and metrics carry: OpenTelemetry's messaging semantic conventions
 * where they have one, `nestjs_inbox.*` for the rest. Attribute values are identifiers, counts and
 * outcomes only: never a payload or metadata value.
 */
export const MESSAGING_SYSTEM = 'nestjs_inbox';

export const ATTR = {
  messagingSystem: 'messaging.system',
  operationType: 'messaging.operation.type',
  operationName: 'messaging.operation.name',
  destinationName: 'messaging.destination.name',
  messageId: 'messaging.message.id',
  conversationId: 'messaging.message.conversation_id',
  batchMessageCount: 'messaging.batch.message_count',
  errorType: 'error.type',
  entryId: 'nestjs_inbox.entry.id',
  attempt: 'nestjs_inbox.attempt',
  outcome: 'nestjs_inbox.outcome',
  deadLetterReason: 'nestjs_inbox.dead_letter.reason',
  receiveResult: 'nestjs_inbox.receive.result',
  actor: 'nestjs_inbox.actor',
  status: 'nestjs_inbox.status',
  count: 'nestjs_inbox.count',
} as const;

/** What a receive did with the command: the `nestjs_inbox.receive.result` attribute. */
export type ReceiveResultName = 'new' | 'duplicate' | 'conflict' | 'error';

/** How an attempt ended: the `nestjs_inbox.outcome` attribute. `released`: handed back uncharged. */
export type AttemptOutcomeName = 'completed' | 'failed' | 'dead_letter' | 'released' | 'not_recorded';

export const METRIC = {
  received: 'nestjs_inbox.commands.received',
  processed: 'nestjs_inbox.commands.processed',
  replayed: 'nestjs_inbox.commands.replayed',
  discarded: 'nestjs_inbox.commands.discarded',
  processDuration: 'messaging.process.duration',
  completionDuration: 'nestjs_inbox.command.completion.duration',
  waitDuration: 'nestjs_inbox.command.wait.duration',
  entries: 'nestjs_inbox.entries',
  oldestDueAge: 'nestjs_inbox.oldest_due.age',
  openDeadLetters: 'nestjs_inbox.dead_letters',
  expiredLeases: 'nestjs_inbox.leases.expired',
} as const;
