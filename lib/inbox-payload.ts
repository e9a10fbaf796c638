import type { Type } from '@nestjs/common';
import { plainToInstance } from 'class-transformer';
import { validate, type ValidationError } from 'class-validator';
import { PayloadValidationError } from './errors/inbox.error';

function describe(errors: ValidationError[], path = ''): string[] {
  return errors.flatMap((error) => {
    const property = path ? `${path}.${error.property}` : error.property;
    const own = error.constraints ? [`${property}: ${Object.values(error.constraints).join(', ')}`] : [];
    return [...own, ...describe(error.children ?? [], property)];
  });
}

/**
 * Turns a stored payload into the handler's command: an instance of the payload class, validated
 * with its class-validator rules, or the plain object when the handler declared no class.
 */
export async function materializeCommand(
  commandType: string,
  payload: Record<string, unknown>,
  payloadClass: Type<object> | undefined,
): Promise<unknown> {
  if (!payloadClass) return payload;
  const command = plainToInstance(payloadClass, payload);
  const errors = await validate(command, { forbidUnknownValues: true });
  if (errors.length > 0) throw new PayloadValidationError(commandType, describe(errors));
  return command;
}
