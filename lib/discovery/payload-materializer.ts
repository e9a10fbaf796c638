import type { Type } from '@nestjs/common';
import type { ValidationError } from 'class-validator';
import { InboxConfigurationError, PayloadValidationError } from '../errors/inbox.error';
import type { PayloadValidationOptions } from '../interfaces/inbox-options.interface';

type PayloadValidation = Pick<typeof import('class-transformer'), 'plainToInstance'> & Pick<typeof import('class-validator'), 'validate'>;
let validation: PayloadValidation | undefined;

/**
 * class-transformer and class-validator, loaded on first use: a worker whose handlers take plain
 * payloads never pays for them (together about 15 MiB of memory).
 */
/** Loads them now (at boot, when a handler declares a payload class), so a missing one fails the boot, not every entry. */
export function loadPayloadValidation(): void {
  try {
    payloadValidation();
  } catch (error) {
    throw new InboxConfigurationError(
      `nestjs-inbox needs class-validator and class-transformer for handlers with a payload class: ${(error as Error).message}`,
    );
  }
}

function payloadValidation(): PayloadValidation {
  validation ??= {
    plainToInstance: (require('class-transformer') as typeof import('class-transformer')).plainToInstance,
    validate: (require('class-validator') as typeof import('class-validator')).validate,
  };
  return validation;
}

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
 * Undeclared properties are stripped (`whitelist`) or refused (`forbidNonWhitelisted`).
 * Materialising is deterministic: a payload that makes it throw (one nested too deep for the
 * transformer's recursion, say) will always do so, so it is an invalid payload, not a transient
 * failure. Only errors of custom validators (which may do I/O) stay transient.
 */
export async function materializeCommand(
  commandType: string,
  payload: Record<string, unknown>,
  payloadClass: Type<object> | undefined,
  options: Required<PayloadValidationOptions>,
): Promise<unknown> {
  if (!payloadClass) return payload;
  const { plainToInstance, validate } = payloadValidation();
  let command: object;
  try {
    command = plainToInstance(payloadClass, payload);
  } catch (error) {
    throw new PayloadValidationError(commandType, [`cannot be turned into ${payloadClass.name}: ${messageOf(error)}`]);
  }
  let errors: ValidationError[];
  try {
    errors = await validate(command, {
      forbidUnknownValues: true,
      whitelist: options.whitelist || options.forbidNonWhitelisted,
      forbidNonWhitelisted: options.forbidNonWhitelisted,
    });
  } catch (error) {
    if (error instanceof RangeError) throw new PayloadValidationError(commandType, [`cannot be validated: ${error.message}`]);
    throw error;
  }
  if (errors.length > 0) throw new PayloadValidationError(commandType, describe(errors));
  return command;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
