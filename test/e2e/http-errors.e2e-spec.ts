import { Body, Controller, Get, Headers, HttpCode, Module, Param, Post, type INestApplication } from '@nestjs/common';
import { APP_FILTER, NestFactory } from '@nestjs/core';
import { ScheduleModule } from '@nestjs/schedule';
import {
  InboxConfigurationError,
  InboxExceptionFilter,
  InboxModule,
  InboxProcessor,
  InboxService,
  InboxStatus,
} from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, TransferHandler } from '../fixtures/handlers';
import { proxyFor, type TcpProxy } from '../support/tcp-proxy';
import { typeOrmForTests } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** A controller written as the README's Quick start writes one: no error handling of its own. */
@Controller()
class CommandsController {
  constructor(private readonly inbox: InboxService) {}

  @Post('commands/:type')
  @HttpCode(202)
  async receive(@Param('type') commandType: string, @Headers('idempotency-key') key: string, @Body() body: Record<string, unknown>) {
    const { entry, duplicate } = await this.inbox.receive({ messageId: key, commandType, payload: body });
    return { id: entry.id, status: entry.status, duplicate };
  }

  @Post('entries/:id/replay')
  @HttpCode(200)
  async replay(@Param('id') id: string, @Body() body: Record<string, unknown>) {
    const payload = Object.keys(body).length > 0 ? body : undefined;
    const entry = await this.inbox.replay(id, { actor: 'http-spec', payload });
    return { id: entry.id, status: entry.status };
  }

  /** Stands for any library error that is the server's fault. */
  @Get('misconfigured')
  misconfigured(): never {
    throw new InboxConfigurationError('tableName "secret_schema.inbox" does not exist');
  }
}

describe('InboxExceptionFilter over HTTP (Express)', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let app: INestApplication;
  let base: string;

  beforeAll(async () => {
    db = await createTestDatabase('http_errors');
    await sql(db.url, EFFECTS_TABLE_SQL);
    proxy = proxyFor(db.url);
    const url = await proxy.start(db.url);

    @Module({
      imports: [typeOrmForTests(url), ScheduleModule.forRoot(), InboxModule.forRoot({ pollIntervalMs: 60_000, receiveTimeoutMs: 2_000 })],
      controllers: [CommandsController],
      providers: [TransferHandler, { provide: APP_FILTER, useClass: InboxExceptionFilter }],
    })
    class HttpSpecModule {}

    app = await NestFactory.create(HttpSpecModule, { logger: false, abortOnError: false });
    await app.listen(0, '127.0.0.1');
    base = `http://127.0.0.1:${(app.getHttpServer().address() as { port: number }).port}`;
  });

  afterEach(() => proxy.set('forward'));

  afterAll(async () => {
    await app?.close();
    await proxy?.close();
    await db?.drop();
  });

  const stored = async () => Number((await sql<{ n: string }>(db.url, 'SELECT count(*) AS n FROM inbox_entries'))[0].n);

  async function call(method: 'GET' | 'POST', path: string, body?: unknown, headers: Record<string, string> = {}) {
    const response = await fetch(`${base}${path}`, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: { 'content-type': 'application/json', ...headers },
    });
    return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, any> };
  }
  const transfer = { account: 'acc-1', amount: 5 };
  const post = (key: string | undefined, body: unknown = transfer, type = 'test.transfer') =>
    call('POST', `/commands/${type}`, body, key === undefined ? {} : { 'idempotency-key': key });

  it('leaves successful answers alone', async () => {
    expect(await post('ok-1')).toMatchObject({ status: 202, body: { status: InboxStatus.Pending, duplicate: false } });
  });

  it('answers a missing key with 400 and the argument it concerns, storing nothing', async () => {
    const before = await stored();
    const response = await post(undefined);
    expect(response.status).toBe(400);
    expect(response.body).toEqual({ error: 'InboxArgumentError', message: expect.stringContaining('command.messageId'), argument: 'command.messageId' });
    expect(await stored()).toBe(before);
  });

  it('answers an unknown command type with 400, without the library advice meant for developers', async () => {
    const response = await post('unknown-1', {}, 'test.nobody-handles-this');
    expect(response.status).toBe(400);
    expect(response.body).toEqual({
      error: 'UnknownCommandTypeError',
      message: 'Unknown command type "test.nobody-handles-this".',
      argument: 'command.commandType',
      commandType: 'test.nobody-handles-this',
    });
  });

  it('answers a key reused with another body with 409, naming the stored entry', async () => {
    const first = await post('reuse-1');
    const again = await post('reuse-1', { account: 'acc-1', amount: 999 });
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ error: 'IdempotencyConflictError', messageId: 'reuse-1', existingEntryId: first.body.id });
  });

  it('answers a malformed id with 400, an unknown one with 404, and a replay in the wrong state with 409', async () => {
    const malformed = await call('POST', '/entries/not-a-uuid/replay', {});
    expect(malformed).toMatchObject({ status: 400, body: { error: 'InboxArgumentError', argument: 'id' } });

    const missing = '00000000-0000-4000-8000-000000000000';
    expect(await call('POST', `/entries/${missing}/replay`, {})).toMatchObject({ status: 404, body: { error: 'InboxEntryNotFoundError', id: missing } });

    const completed = await post('completed-1');
    await app.get(InboxProcessor).runOnce(); // joins the pass the receive started, if any
    const wrongState = await call('POST', `/entries/${completed.body.id}/replay`, {});
    expect(wrongState).toMatchObject({ status: 409, body: { error: 'InvalidEntryStateError', id: completed.body.id, status: InboxStatus.Completed } });
  });

  it('answers a corrected payload that fails validation with 400 and the failing properties', async () => {
    const dead = await post('invalid-1', { account: '', amount: 0 });
    await app.get(InboxProcessor).runOnce();
    expect((await sql<{ status: string }>(db.url, 'SELECT status FROM inbox_entries WHERE id = $1', [dead.body.id]))[0].status).toBe(InboxStatus.DeadLetter);

    const response = await call('POST', `/entries/${dead.body.id}/replay`, { account: 'acc-1', amount: -1 });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('PayloadValidationError');
    expect(response.body.failures).toEqual([expect.stringMatching(/^amount: /)]);
  });

  it('answers with 503 and Retry-After while the database is down, without naming the server', async () => {
    proxy.set('refuse');
    const response = await post('outage-1');
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('1');
    expect(response.body.error).toBe('InboxUnavailableError');
    expect(response.body.message).toMatch(/same idempotency key/);
    expect(JSON.stringify(response.body)).not.toMatch(/127\.0\.0\.1|ECONNREFUSED/);
  });

  it('answers any other library error with a bare 500 that keeps its text to the server', async () => {
    const response = await call('GET', '/misconfigured');
    expect(response).toEqual({ status: 500, headers: expect.anything(), body: { error: 'InternalServerError', message: 'Internal server error' } });
  });

  it('leaves errors that are not the library\'s to Nest', async () => {
    expect(await call('GET', '/no-such-route')).toMatchObject({ status: 404, body: { statusCode: 404, error: 'Not Found' } });
  });
});
