import { Logger, type ArgumentsHost } from '@nestjs/common';
import {
  HandlerTimeoutError,
  IdempotencyConflictError,
  InboxArgumentError,
  InboxConfigurationError,
  InboxEntryNotFoundError,
  InboxExceptionFilter,
  InboxUnavailableError,
  InvalidEntryStateError,
  PayloadValidationError,
  PermanentError,
  toHttpError,
  UnknownCommandTypeError,
} from 'nestjs-inbox';

describe('toHttpError', () => {
  const id = '00000000-0000-4000-8000-000000000001';

  const cases: Array<[Error, number, Record<string, unknown>]> = [
    [new InboxArgumentError('command.messageId', 'must not be empty'), 400, { argument: 'command.messageId' }],
    [new UnknownCommandTypeError('x.y'), 400, { argument: 'command.commandType', commandType: 'x.y', message: 'Unknown command type "x.y".' }],
    [new PayloadValidationError('x.y', ['amount: must not be less than 1']), 400, { failures: ['amount: must not be less than 1'] }],
    [new IdempotencyConflictError('key-1', id), 409, { messageId: 'key-1', existingEntryId: id }],
    [new InboxEntryNotFoundError(id), 404, { id }],
    [new InvalidEntryStateError(id, 'completed', 'replay', ['dead_letter', 'failed']), 409, { id, status: 'completed' }],
  ];

  it.each(cases.map(([error, status, fields]) => [error.name, status, error, fields] as const))('maps %s to %i with the fields a client needs', (_name, status, error, fields) => {
    const answer = toHttpError(error);
    expect(answer.status).toBe(status);
    expect(answer.body).toMatchObject({ error: error.name, ...fields });
    expect(typeof answer.body.message).toBe('string');
    expect(answer.headers).toEqual({});
  });

  it('asks for a retry after a second when the database is unavailable, without the reason', () => {
    const answer = toHttpError(new InboxUnavailableError('connect ECONNREFUSED 10.0.0.7:5432'));
    expect(answer).toMatchObject({ status: 503, headers: { 'Retry-After': '1' }, body: { error: 'InboxUnavailableError' } });
    expect(answer.body.message).not.toContain('10.0.0.7');
  });

  it.each([
    new InboxConfigurationError('tableName "secret.inbox" is wrong'),
    new PermanentError('secret business detail'),
    new HandlerTimeoutError(1000),
    new Error('not even a library error'),
  ].map((error) => [error.name, error] as const))('keeps the text of %s to the server (500)', (_name, error) => {
    expect(toHttpError(error)).toEqual({ status: 500, headers: {}, body: { error: 'InternalServerError', message: 'Internal server error' } });
  });
});

describe('InboxExceptionFilter', () => {
  beforeAll(() => Logger.overrideLogger(false)); // a 5xx is logged; not here
  /** A host whose response is the given object. */
  const httpHost = (response: object) =>
    ({ getType: () => 'http', switchToHttp: () => ({ getResponse: () => response }) }) as unknown as ArgumentsHost;

  it('answers through a Fastify reply (code, header, send)', () => {
    const calls: unknown[][] = [];
    const reply = {
      header: (name: string, value: string) => calls.push(['header', name, value]),
      code(status: number) {
        calls.push(['code', status]);
        return { send: (body: unknown) => calls.push(['send', body]) };
      },
    };
    new InboxExceptionFilter().catch(new InboxUnavailableError('down'), httpHost(reply));
    expect(calls).toEqual([
      ['header', 'Retry-After', '1'],
      ['code', 503],
      ['send', expect.objectContaining({ error: 'InboxUnavailableError' })],
    ]);
  });

  it('rethrows outside HTTP (microservices, WebSockets), where there is no response to write', () => {
    const error = new InboxEntryNotFoundError('00000000-0000-4000-8000-000000000001');
    const host = { getType: () => 'rpc' } as unknown as ArgumentsHost;
    expect(() => new InboxExceptionFilter().catch(error, host)).toThrow(error);
  });
});
