import type { Type } from '@nestjs/common';
import { INBOX_COMMAND_METADATA, MAX_COMMAND_TYPE_LENGTH } from '../inbox.constants';
import { InboxConfigurationError } from '../errors/inbox.error';

export function assertCommandTypeName(name: unknown, where: string): asserts name is string {
  if (typeof name !== 'string' || name.trim().length === 0 || name.length > MAX_COMMAND_TYPE_LENGTH) {
    throw new InboxConfigurationError(
      `${where} needs a non-empty command type name of at most ${MAX_COMMAND_TYPE_LENGTH} characters (got ${JSON.stringify(name) ?? String(name)}).`,
    );
  }
}

/** The stored name of a command class: its `@InboxCommand` name, or else the class name. */
export function commandTypeOf(commandClass: Type<object>): string {
  const explicit: unknown = Reflect.getMetadata(INBOX_COMMAND_METADATA, commandClass);
  return typeof explicit === 'string' ? explicit : commandClass.name;
}
