import { INBOX_COMMAND_METADATA } from '../inbox.constants';
import { assertCommandTypeName } from './command-type';

/**
 * Gives a command class the stable name stored in `commandType`. Without it the class name is
 * used, which breaks stored entries when the class is renamed or the code is minified.
 */
export function InboxCommand(name: string): ClassDecorator {
  assertCommandTypeName(name, '@InboxCommand');
  return (target) => {
    Reflect.defineMetadata(INBOX_COMMAND_METADATA, name, target);
  };
}
