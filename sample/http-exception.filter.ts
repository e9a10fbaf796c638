import { STATUS_CODES } from 'node:http';
import { Catch, HttpException, HttpStatus, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import type { Response } from 'express';

/** Largest JSON body main.ts lets through; named here so the 413 answer can state it. */
export const JSON_BODY_LIMIT = '100kb';

/**
 * Gives Nest's own HTTP errors (malformed JSON, oversized body, unknown route) the same
 * `{ error, message }` shape as the rest of the API.
 */
@Catch(HttpException)
export class HttpExceptionFilter implements ExceptionFilter<HttpException> {
  catch(exception: HttpException, host: ArgumentsHost): void {
    const status = exception.getStatus();
    host.switchToHttp().getResponse<Response>().status(status).json(toBody(exception, status));
  }
}

function toBody(exception: HttpException, status: number): Record<string, unknown> {
  const response = exception.getResponse();
  // Thrown by this app with an explicit body: already in shape.
  if (typeof response === 'object' && response !== null && 'error' in response && !('statusCode' in response)) {
    return response as Record<string, unknown>;
  }
  // Express's JSON parser reports unparseable bodies as a SyntaxError.
  if (exception.cause instanceof SyntaxError) {
    return { error: 'MalformedJson', message: `The body must be a JSON object: ${exception.message}` };
  }
  if (status === HttpStatus.PAYLOAD_TOO_LARGE) {
    return { error: 'PayloadTooLarge', message: `The body is larger than the ${JSON_BODY_LIMIT} limit.` };
  }
  return { error: (STATUS_CODES[status] ?? 'Error').replace(/[^A-Za-z]/g, ''), message: exception.message };
}
