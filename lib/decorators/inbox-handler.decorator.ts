import type { Type } from '@nestjs/common';
import { INBOX_HANDLER_METADATA } from '../inbox.constants';
import { InboxConfigurationError } from '../errors/inbox.error';
import {
  DEFAULT_BACKOFF,
  DEFAULT_PAYLOAD_VALIDATION,
  resolveBackoff,
  resolveDeadLetterPolicy,
  resolveHandlerTimeout,
  resolveMaxAttempts,
  resolvePayloadValidation,
} from '../inbox-options';
import type { InboxHandlerMetadata, InboxHandlerOptions } from '../interfaces/inbox-handler.interface';
import { assertCommandTypeName, commandTypeOf } from './command-type';

const KNOWN_HANDLER_OPTIONS = new Set(['maxAttempts', 'backoff', 'payload', 'timeoutMs', 'payloadValidation', 'orderingKey', 'onDeadLetter']);

/**
 * Marks a provider as the handler of one command type. `command` is the stored type name, or a
 * command class whose `@InboxCommand` name (or class name) is stored and whose class-validator
 * rules validate the payload before `execute` runs.
 */
export function InboxHandler<TPayload extends object = Record<string, any>>(command: string | Type<TPayload>, options: InboxHandlerOptions<TPayload> = {}): ClassDecorator {
  const metadata = buildHandlerMetadata(command, options);
  return (target) => {
    Reflect.defineMetadata(INBOX_HANDLER_METADATA, metadata, target);
  };
}

function resolveOrderingKey(name: string, value: unknown): ((payload: never) => string) | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') throw new InboxConfigurationError(`${name} must be a function of the payload that returns the key.`);
  return value as (payload: never) => string;
}

function buildHandlerMetadata(command: string | Type<object>, options: InboxHandlerOptions<never>): InboxHandlerMetadata {
  const where = '@InboxHandler';
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InboxConfigurationError(`${where} options must be an object.`);
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_HANDLER_OPTIONS.has(key)) {
      throw new InboxConfigurationError(`${where} has an unknown option "${key}"; known: ${[...KNOWN_HANDLER_OPTIONS].join(', ')}.`);
    }
  }
  let commandType: string;
  let payloadClass: Type<object> | undefined;
  if (typeof command === 'function') {
    if (options.payload !== undefined) {
      throw new InboxConfigurationError(`${where}(${command.name}) takes no "payload" option: the command class is the payload class.`);
    }
    commandType = commandTypeOf(command);
    assertCommandTypeName(commandType, where);
    payloadClass = command;
  } else {
    assertCommandTypeName(command, where);
    commandType = command;
    if (options.payload !== undefined && typeof options.payload !== 'function') {
      throw new InboxConfigurationError(`${where}("${command}") option "payload" must be a class.`);
    }
    payloadClass = options.payload;
  }
  const label = `@InboxHandler("${commandType}")`;
  return {
    commandType,
    payloadClass,
    maxAttempts: options.maxAttempts === undefined ? undefined : resolveMaxAttempts(`${label}.maxAttempts`, options.maxAttempts, 0),
    // Checked against the defaults now; merged with the module's backoff at boot.
    timeoutMs: options.timeoutMs === undefined ? undefined : resolveHandlerTimeout(`${label}.timeoutMs`, options.timeoutMs, 0, Number.MAX_SAFE_INTEGER),
    backoff: options.backoff === undefined ? undefined : (resolveBackoff(options.backoff, DEFAULT_BACKOFF, `${label}.backoff`, false), options.backoff),
    // Checked now; merged with the module's at boot.
    payloadValidation:
      options.payloadValidation === undefined
        ? undefined
        : (resolvePayloadValidation(`${label}.payloadValidation`, options.payloadValidation, DEFAULT_PAYLOAD_VALIDATION), options.payloadValidation),
    orderingKey: resolveOrderingKey(`${label}.orderingKey`, options.orderingKey),
    onDeadLetter: options.onDeadLetter === undefined ? undefined : resolveDeadLetterPolicy(`${label}.onDeadLetter`, options.onDeadLetter, 'block'),
  };
}
