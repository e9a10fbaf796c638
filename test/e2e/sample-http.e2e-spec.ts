import type { INestApplication } from '@nestjs/common';
import { InboxService } from 'nestjs-inbox';
import { bootstrap } from '../../sample/main';
import { waitFor } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** The sample bank's HTTP API, booted as `npm start` boots it, against a database of its own. */
describe('sample HTTP API: bad input', () => {
  let db: TestDatabase;
  let app: INestApplication;
  let base: string;

  beforeAll(async () => {
    db = await createTestDatabase('sample');
    process.env.DATABASE_URL = db.url;
    process.env.PORT = '0';
    app = await bootstrap();
    base = `http://127.0.0.1:${(app.getHttpServer().address() as { port: number }).port}`;
  });

  afterAll(async () => {
    await app?.close();
    delete process.env.PORT;
    await db?.drop();
  });

  const stored = async () => Number((await sql<{ n: string }>(db.url, 'SELECT count(*) AS n FROM inbox_entries'))[0].n);

  async function post(path: string, body: string, headers: Record<string, string> = {}) {
    const response = await fetch(`${base}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
    const text = await response.text();
    return { status: response.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  it('accepts a good command (202) and runs it', async () => {
    // An account of its own: acc-t may already be held behind a dead-lettered deposit of another test.
    const opened = await post('/commands/bank.open-account', JSON.stringify({ accountId: 'acc-good', owner: 'T' }), { 'idempotency-key': 'open-good' });
    expect(opened).toMatchObject({ status: 202, body: { status: 'pending', duplicate: false } });
    await waitFor(async () => {
      const response = await fetch(`${base}/commands/${opened.body.id as string}`);
      return ((await response.json()) as { status: string }).status === 'completed';
    }, 'the command to complete');
  });

  it("runs one account's commands in order: a withdrawal sent right after a deposit waits for the deposit's retry", async () => {
    const send = (type: string, key: string, body: object) => post(`/commands/${type}`, JSON.stringify(body), { 'idempotency-key': key });
    await send('bank.open-account', 'open-ord', { accountId: 'acc-ord', owner: 'O' });
    await send('bank.deposit', 'dep-ord', { accountId: 'acc-ord', amount: 5000, simulateOutage: 1 });
    const withdrawal = await send('bank.withdraw', 'wd-ord', { accountId: 'acc-ord', amount: 3000 });
    expect(withdrawal).toMatchObject({ status: 202 });
    const account = await waitFor(async () => {
      const response = await fetch(`${base}/accounts/acc-ord`);
      const body = (await response.json()) as { version?: number; balance: number; events: Array<{ type: string; messageId: string }> };
      return body.version === 3 ? body : null;
    }, 'the three commands to complete');
    expect(account.events.map((event) => event.messageId)).toEqual(['open-ord', 'dep-ord', 'wd-ord']);
    expect(account.balance).toBe(2000);
    const view = (await (await fetch(`${base}/commands/${withdrawal.body.id as string}`)).json()) as Record<string, unknown>;
    expect(view).toMatchObject({ status: 'completed', orderingKey: 'acc-ord', orderingSeq: '3', retryCount: 0 });
  });

  it('holds an account behind a dead-lettered deposit, and lists it, until an operator discards the deposit', async () => {
    const send = (type: string, key: string, body: object) => post(`/commands/${type}`, JSON.stringify(body), { 'idempotency-key': key });
    // A deposit to an account not opened yet can never succeed as it is: dead-lettered, it holds acc-late.
    const early = await send('bank.deposit', 'dep-late', { accountId: 'acc-late', amount: 700 });
    const blockedAccounts = async () =>
      ((await (await fetch(`${base}/blocked-accounts`)).json()) as { accounts: Array<{ accountId: string; waiting: number; blockedBy: { id: string } }> }).accounts;
    await waitFor(async () => (await blockedAccounts()).some((a) => a.accountId === 'acc-late'), 'the account to be blocked');
    const opening = await send('bank.open-account', 'open-late', { accountId: 'acc-late', owner: 'L' });
    expect((await blockedAccounts()).find((a) => a.accountId === 'acc-late')).toMatchObject({ waiting: 1, blockedBy: { id: early.body.id } });
    expect(await (await fetch(`${base}/commands/${opening.body.id as string}`)).json()).toMatchObject({ status: 'pending', waiting: true });
    // The operator (CLI or InboxService) discards the deposit that came too early: the account moves on.
    await app.get(InboxService).discard(early.body.id as string, { actor: 'ops', reason: 'sent before the account was opened' });
    await waitFor(async () => (await fetch(`${base}/accounts/acc-late`)).status === 200, 'the account to be opened');
    expect((await blockedAccounts()).map((a) => a.accountId)).not.toContain('acc-late');
  });

  it('serves Prometheus metrics and a Terminus health check', async () => {
    const opened = await post('/commands/bank.open-account', JSON.stringify({ accountId: 'acc-metrics', owner: 'M' }), { 'idempotency-key': 'open-metrics' });
    await waitFor(async () => ((await (await fetch(`${base}/commands/${opened.body.id as string}`)).json()) as { status: string }).status === 'completed', 'the command to complete');
    const scrape = await fetch(`${base}/metrics`);
    expect(scrape.headers.get('content-type')).toContain('text/plain');
    const text = await scrape.text();
    expect(text).toMatch(/^nestjs_inbox_commands_received_total\{[^}]*messaging_destination_name="bank\.open-account"[^}]*nestjs_inbox_receive_result="new"[^}]*\} [1-9]/m);
    expect(text).toMatch(/^nestjs_inbox_commands_processed_total\{[^}]*messaging_destination_name="bank\.open-account"[^}]*nestjs_inbox_outcome="completed"[^}]*\} [1-9]/m);
    expect(text).toMatch(/^messaging_process_duration_count\{[^}]*messaging_destination_name="bank\.open-account"[^}]*\} [1-9]/m);
    expect(text).toMatch(/^nestjs_inbox_entries\{[^}]*nestjs_inbox_status="dead_letter"[^}]*\} \d+/m);
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', info: { inbox: { status: 'up', processorRunning: true, databaseReachable: true } } });
  });

  const deposit = JSON.stringify({ accountId: 'acc-t', amount: 100 });
  const rows: Array<[string, () => Promise<{ status: number; body: Record<string, unknown> }>, number, string]> = [
    ['a missing Idempotency-Key', () => post('/commands/bank.deposit', deposit), 400, 'MissingIdempotencyKey'],
    ['an Idempotency-Key with spaces', () => post('/commands/bank.deposit', deposit, { 'idempotency-key': 'a b' }), 400, 'InvalidIdempotencyKey'],
    ['an over-long Idempotency-Key', () => post('/commands/bank.deposit', deposit, { 'idempotency-key': 'k'.repeat(300) }), 400, 'InvalidIdempotencyKey'],
    ['malformed JSON', () => post('/commands/bank.deposit', '{"accountId": "acc-t", "amount": 1', { 'idempotency-key': 'bad-json' }), 400, 'MalformedJson'],
    ['an oversized body', () => post('/commands/bank.deposit', JSON.stringify({ accountId: 'acc-t', amount: 1, pad: 'x'.repeat(200_000) }), { 'idempotency-key': 'big' }), 413, 'PayloadTooLarge'],
    ['a JSON array body', () => post('/commands/bank.deposit', '[1,2]', { 'idempotency-key': 'array-body' }), 400, 'InvalidBody'],
    ['a string where a number belongs', () => post('/commands/bank.deposit', JSON.stringify({ accountId: 'acc-t', amount: 'ten' }), { 'idempotency-key': 'wrong-type' }), 400, 'PayloadValidationError'],
    ['a negative amount', () => post('/commands/bank.withdraw', JSON.stringify({ accountId: 'acc-t', amount: -5 }), { 'idempotency-key': 'negative' }), 400, 'PayloadValidationError'],
    ['an unknown field', () => post('/commands/bank.deposit', JSON.stringify({ accountId: 'acc-t', amount: 1, admin: true }), { 'idempotency-key': 'extra-field' }), 400, 'PayloadValidationError'],
    ['an unknown command type', () => post('/commands/bank.rob', deposit, { 'idempotency-key': 'rob' }), 400, 'UnknownCommandTypeError'],
    ['an accountId crafted as SQL', () => post('/commands/bank.deposit', JSON.stringify({ accountId: "a'; DROP TABLE x; --", amount: 1 }), { 'idempotency-key': 'sql-account' }), 400, 'PayloadValidationError'],
    ["a command type crafted as SQL", () => post(`/commands/${encodeURIComponent("x'; DROP TABLE inbox_entries; --")}`, deposit, { 'idempotency-key': 'sql-type' }), 400, 'UnknownCommandTypeError'],
  ];

  it.each(rows)('answers %s with a 4xx and a useful body, storing nothing', async (_label, call, status, error) => {
    const before = await stored();
    const response = await call();
    expect(response.status).toBe(status);
    expect(response.body.error).toBe(error);
    expect(typeof response.body.message).toBe('string');
    expect(await stored()).toBe(before);
  });

  it('refuses a reused key with another body (409), keeping the first command only', async () => {
    await post('/commands/bank.deposit', deposit, { 'idempotency-key': 'reuse-1' });
    const before = await stored();
    const again = await post('/commands/bank.deposit', JSON.stringify({ accountId: 'acc-t', amount: 999 }), { 'idempotency-key': 'reuse-1' });
    expect(again).toMatchObject({ status: 409, body: { error: 'IdempotencyConflictError' } });
    expect(await stored()).toBe(before);
  });

  it('answers unknown and malformed ids, and replays in the wrong state, with 4xx', async () => {
    expect((await fetch(`${base}/commands/not-a-uuid`)).status).toBe(400);
    expect((await fetch(`${base}/commands/00000000-0000-4000-8000-000000000000`)).status).toBe(404);
    expect((await post('/commands/00000000-0000-4000-8000-000000000000/replay', '{}')).status).toBe(404);
    // An entry that completed cannot be replayed.
    const opened = await post('/commands/bank.open-account', JSON.stringify({ accountId: 'acc-w', owner: 'W' }), { 'idempotency-key': 'open-w' });
    await waitFor(async () => ((await (await fetch(`${base}/commands/${opened.body.id as string}`)).json()) as { status: string }).status === 'completed', 'it to complete');
    expect(await post(`/commands/${opened.body.id as string}/replay`, '{}')).toMatchObject({ status: 409, body: { error: 'InvalidEntryStateError' } });
    // A correction the server cannot take is refused, never replayed as the original.
    expect(await post(`/commands/${opened.body.id as string}/replay`, '{"paylod":{"amount":7}}')).toMatchObject({ status: 400, body: { error: 'InboxArgumentError' } });
    expect(await post(`/commands/${opened.body.id as string}/replay`, '{"payload":"x"}')).toMatchObject({ status: 400, body: { error: 'InboxArgumentError' } });
    expect(await post(`/commands/${opened.body.id as string}/replay`, '[1]')).toMatchObject({ status: 400, body: { error: 'InboxArgumentError' } });
    expect((await fetch(`${base}/commands?status=bogus`)).status).toBe(400);
  });

  it('stores keys and values crafted as SQL verbatim', async () => {
    const key = `k');DELETE/**/FROM/**/inbox_entries;--`;
    const owner = `O'Brien'); DROP TABLE account_events; --`;
    const before = await stored();
    const response = await post('/commands/bank.open-account', JSON.stringify({ accountId: 'acc-sql', owner }), { 'idempotency-key': key });
    expect(response.status).toBe(202);
    const [row] = await sql(db.url, 'SELECT message_id, payload FROM inbox_entries WHERE id = $1', [response.body.id]);
    expect(row).toEqual({ message_id: key, payload: { accountId: 'acc-sql', owner } });
    // The statement stored one entry and deleted nothing.
    expect(await stored()).toBe(before + 1);
  });
});
