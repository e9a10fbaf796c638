import { Catch, Logger, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { InboxError } from '../errors/inbox.error';
import { toHttpError, type InboxHttpError } from './inbox-http-error';

/** The parts of an Express response the filter uses. */
interface ExpressResponse {
  setHeader(name: string, value: string): unknown;
  status(code: number): { json(body: unknown): unknown };
  json(body: unknown): unknown;
}

/** The parts of a Fastify reply the filter uses. */
interface FastifyReply {
  header(name: string, value: string): unknown;
  code(code: number): { send(body: unknown): unknown };
}

/**
 * Answers the library's errors over HTTP as `toHttpError` maps them, on Express or Fastify:
 * register it with `{ provide: APP_FILTER, useClass: InboxExceptionFilter }`,
 * `app.useGlobalFilters(new InboxExceptionFilter())` or `@UseFilters(InboxExceptionFilter)`.
 * Other errors are left to the application's other filters and to Nest.
 */
@Catch(InboxError)
export class InboxExceptionFilter implements ExceptionFilter<InboxError> {
  private readonly logger = new Logger(InboxExceptionFilter.name);

  catch(error: InboxError, host: ArgumentsHost): void {
    // Microservice and WebSocket handlers have no HTTP response to write.
    if (host.getType() !== 'http') throw error;
    const answer = toHttpError(error);
    if (answer.status >= 500) this.logger.error(error.message, error.stack);
    send(host.switchToHttp().getResponse<ExpressResponse | FastifyReply>(), answer);
  }
}

function send(response: ExpressResponse | FastifyReply, { status, headers, body }: InboxHttpError): void {
  if ('json' in response && typeof response.json === 'function') {
    for (const [name, value] of Object.entries(headers)) response.setHeader(name, value);
    response.status(status).json(body);
    return;
  }
  const reply = response as FastifyReply;
  for (const [name, value] of Object.entries(headers)) reply.header(name, value);
  reply.code(status).send(body);
}
