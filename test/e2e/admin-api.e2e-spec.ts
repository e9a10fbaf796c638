import { Injectable, type CanActivate, type ExecutionContext, type INestApplication } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { Test } from '@nestjs/testing';
import { IsInt, IsOptional, IsString, Min } from 'class-validator';
import {
  InboxAdminModule,
  InboxCommand,
  InboxConfigurationError,
  InboxHandler,
  InboxModule,
  InboxService,
  InboxStatus,
  PermanentError,
  type AdminRequest,
  type InboxAdminOptions,
  type InboxCommandHandler,
} from 'nestjs-inbox';
import { createTestApp, typeOrmForTests, type TestApp } from '../support/test-app';
import { createTestDatabase, type TestDatabase } from '../support/test-database';

@InboxCommand('admin.withdraw')
class Withdraw {
  @IsString() accountId!: string;
  @IsInt() @Min(1) amount!: number;
  @IsOptional() @IsString() secret?: string;
  @IsOptional() fixed?: boolean;
}

/**
 * Fails for good until replayed with `fixed`; the error names the account and the numbers. Its
 * dead letters let their account's later withdrawals run (skip), except where a test blocks.
 */
@Injectable()
@InboxHandler(Withdraw, { maxAttempts: 1, orderingKey: (command: Withdraw) => command.accountId, onDeadLetter: 'skip' })
class WithdrawHandler implements InboxCommandHandler<Withdraw> {
  async execute(command: Withdraw): Promise<void> {
    if (!command.fixed) throw new PermanentError(`Insufficient funds in ${command.accountId}: balance 0, withdrawal ${command.amount}`);
  }
}

@InboxCommand('admin.deposit')
class Deposit {
  @IsString() accountId!: string;
  @IsInt() @Min(1) amount!: number;
}

/** Its dead letters hold their account (the module's policy, block). */
@Injectable()
@InboxHandler(Deposit, { orderingKey: (command: Deposit) => command.accountId })
class DepositHandler implements InboxCommandHandler<Deposit> {
  async execute(): Promise<void> {}
}

/** The demo's guard: a bearer token; who it is comes from a header the guard trusts. */
@Injectable()
class TokenGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<AdminRequest>();
    return request.headers.authorization === 'Bearer demo';
  }
}

const AUTH = { authorization: 'Bearer demo', 'x-operator': 'alice' };

interface Console {
  app: INestApplication;
  base: string;
  inbox: InboxService;
}

describe("operator's console API", () => {
  let db: TestDatabase;
  let main: Console;
  let readOnly: Console;
  let worker: TestApp;
  let sequence = 0;

  /** The consoles run no worker: commands run only when the test drives `worker`. */
  async function open(admin: InboxAdminOptions & { path?: string }): Promise<Console> {
    const module = await Test.createTestingModule({
      imports: [typeOrmForTests(db.url), ScheduleModule.forRoot(), InboxModule.forRoot({ pollIntervalMs: 60_000, notify: false, worker: false }), InboxAdminModule.register(admin)],
      providers: [WithdrawHandler, DepositHandler, TokenGuard],
    }).compile();
    const app = module.createNestApplication({ logger: false });
    await app.listen(0, '127.0.0.1');
    return { app, base: `${await app.getUrl()}/${admin.path ?? 'inbox-admin'}/api`, inbox: app.get(InboxService) };
  }

  beforeAll(async () => {
    db = await createTestDatabase('admin_api');
    main = await open(
      {
        guards: [TokenGuard],
        actor: (request) => String(request.headers['x-operator'] ?? 'unknown'),
        // Edits what it is given: the console hands it a copy. Hides the payload's secret, and the
        // amounts in error texts (as an application might hide figures).
        redact: (entry) =>
          Object.assign(entry, {
            payload: entry.payload && hidePayload(entry.payload),
            error: entry.error?.replace(/withdrawal \d+/, 'withdrawal ***') ?? null,
          }),
      },
    );
    readOnly = await open({ path: 'ops/inbox', unprotected: true, readOnly: true });
    worker = await createTestApp({ url: db.url, handlers: [WithdrawHandler, DepositHandler], inbox: { notify: false } });
  });

  afterAll(async () => {
    await worker?.close();
    await readOnly?.app.close();
    await main?.app.close();
    await db?.drop();
  });

  async function call(method: string, url: string, body?: unknown, headers: Record<string, string> = AUTH): Promise<{ status: number; json: any }> {
    const response = await fetch(url, {
      method,
      headers: { ...(method === 'GET' ? {} : { 'content-type': 'application/json', 'x-inbox-console': '1' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, json: await response.json().catch(() => null) };
  }

  /** Dead letters of one account, each a withdrawal that failed for good. */
  async function deadLetters(accountId: string, amounts: number[], extra: Record<string, unknown> = {}): Promise<string[]> {
    const ids: string[] = [];
    for (const amount of amounts) {
      const { entry } = await main.inbox.receive({ messageId: `w-${++sequence}`, commandType: 'admin.withdraw', payload: { accountId, amount, ...extra } });
      ids.push(entry.id);
    }
    await worker.processor.runOnce();
    return ids;
  }

  const newAccount = () => `acc-${++sequence}`;

  it('refuses to boot without guards unless told the console is unprotected on purpose', () => {
    expect(() => InboxAdminModule.register({})).toThrow(InboxConfigurationError);
    expect(() => InboxAdminModule.register({ guards: [] })).toThrow(/no guards given/);
    expect(() => InboxAdminModule.register({ unprotected: true, path: 'bad path!' })).toThrow(InboxConfigurationError);
    expect(InboxAdminModule.register({ unprotected: true }).controllers).toHaveLength(2);
  });

  it('describes its API in the OpenAPI document (with @nestjs/swagger installed), and leaves its page out', () => {
    const document = SwaggerModule.createDocument(main.app, new DocumentBuilder().build());
    const list = document.paths['/inbox-admin/api/entries'].get!;
    expect((list.parameters as Array<{ name: string }>).map((parameter) => parameter.name)).toEqual(expect.arrayContaining(['status', 'payload.<path>', 'after', 'limit']));
    expect(document.paths['/inbox-admin/api/bulk/replay'].post!.requestBody).toBeDefined();
    expect(Object.keys(document.paths).filter((path) => !path.startsWith('/inbox-admin/api/'))).toEqual([]);
    expect(Object.keys(document.paths)).toHaveLength(11);
  });

  it('takes its options from a factory (registerAsync), and tells the page whether it is read-only', async () => {
    const module = await Test.createTestingModule({
      imports: [
        typeOrmForTests(db.url),
        ScheduleModule.forRoot(),
        InboxModule.forRoot({ pollIntervalMs: 60_000, notify: false, worker: false }),
        InboxAdminModule.registerAsync({ path: 'async-admin', useFactory: async () => ({ guards: [new TokenGuard()], readOnly: true }) }),
      ],
    }).compile();
    const app = module.createNestApplication({ logger: false });
    await app.listen(0, '127.0.0.1');
    try {
      const base = `${await app.getUrl()}/async-admin/api`;
      expect((await call('GET', `${base}/meta`)).json).toEqual({ readOnly: true });
      expect((await call('GET', `${base}/meta`, undefined, {})).status).toBe(403);
      expect((await call('GET', `${main.base}/meta`)).json).toEqual({ readOnly: false });
    } finally {
      await app.close();
    }
  });

  it('refuses a change that a cross-site page could send: no console header, or not JSON', async () => {
    const [id] = await deadLetters(newAccount(), [13]);
    const formPost = await fetch(`${main.base}/entries/${id}/discard`, {
      method: 'POST',
      headers: { ...AUTH, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'reason=csrf',
    });
    expect(formPost.status).toBe(403);
    const withoutHeader = await fetch(`${main.base}/entries/${id}/discard`, { method: 'POST', headers: { ...AUTH, 'content-type': 'application/json' }, body: '{}' });
    expect(withoutHeader.status).toBe(403);
    expect(((await withoutHeader.json()) as { message: string }).message).toContain('x-inbox-console');
    const textBody = await fetch(`${main.base}/entries/${id}/discard`, { method: 'POST', headers: { ...AUTH, 'x-inbox-console': '1', 'content-type': 'text/plain' }, body: '{}' });
    expect(textBody.status).toBe(403);
    expect((await main.inbox.get(id))!.discardedAt).toBeNull();
    expect((await call('POST', `${main.base}/entries/${id}/discard`, {})).status).toBe(200);
  });

  it("answers 403 to a request its guards refuse, on every route", async () => {
    for (const [method, path] of [
      ['GET', '/stats'],
      ['GET', '/entries'],
      ['POST', '/bulk/replay'],
    ]) {
      const { status } = await call(method, `${main.base}${path}`, method === 'POST' ? { dryRun: true } : undefined, { authorization: 'Bearer wrong' });
      expect(status).toBe(403);
    }
  });

  it('lists with filters (a value inside the payload among them), newest first, page by page', async () => {
    const account = newAccount();
    const ids = await deadLetters(account, [10, 20, 30]);
    await deadLetters(newAccount(), [40]);
    const first = await call('GET', `${main.base}/entries?status=dead_letter&payload.accountId=${account}&limit=2`);
    expect(first.status).toBe(200);
    expect(first.json.entries.map((entry: { id: string }) => entry.id)).toEqual([ids[2], ids[1]]);
    expect(first.json.next).toBe(ids[1]);
    const second = await call('GET', `${main.base}/entries?status=dead_letter&payload.accountId=${account}&limit=2&after=${first.json.next}`);
    expect(second.json.entries.map((entry: { id: string }) => entry.id)).toEqual([ids[0]]);
    expect(second.json.next).toBeNull();
    // A number inside the payload matches its digits.
    const byAmount = await call('GET', `${main.base}/entries?payload.accountId=${account}&payload.amount=20`);
    expect(byAmount.json.entries.map((entry: { id: string }) => entry.id)).toEqual([ids[1]]);
  });

  it('refuses an unknown filter or a malformed value with 400 and the argument named', async () => {
    const unknown = await call('GET', `${main.base}/entries?stauts=dead_letter`);
    expect(unknown.status).toBe(400);
    expect(unknown.json).toMatchObject({ error: 'InboxArgumentError', argument: 'query.stauts' });
    const badTime = await call('GET', `${main.base}/entries?receivedAfter=yesterday`);
    expect(badTime.json).toMatchObject({ argument: 'query.receivedAfter' });
    const badStatus = await call('GET', `${main.base}/entries?status=lost`);
    expect(badStatus.json).toMatchObject({ argument: 'query.status' });
    const badCursor = await call('GET', `${main.base}/entries?after=not-an-id`);
    expect(badCursor.json).toMatchObject({ argument: 'query.after' });
    // A cursor whose entry is gone is said to be, not answered with an empty page.
    const goneCursor = await call('GET', `${main.base}/entries?after=00000000-0000-4000-8000-000000000000`);
    expect(goneCursor).toMatchObject({ status: 400, json: { argument: 'query.after' } });
    const nul = await call('GET', `${main.base}/entries?payload.accountId=a%00b`);
    expect(nul).toMatchObject({ status: 400, json: { argument: 'query.payload["accountId"]' } });
    // The groups and the blocked keys take a command type and a limit, nothing else.
    expect(await call('GET', `${main.base}/dead-letter-groups?comandType=bank.deposit`)).toMatchObject({ status: 400, json: { argument: 'query.comandType' } });
    expect(await call('GET', `${main.base}/blocked-keys?limt=5`)).toMatchObject({ status: 400, json: { argument: 'query.limt' } });
  });

  it('refuses a misspelt field in the body of an action, and the entry stays as it was', async () => {
    const account = newAccount();
    const [id] = await deadLetters(account, [23]);
    // A correction under a misspelt name would replay the original payload as though corrected.
    const misspelt = await call('POST', `${main.base}/entries/${id}/replay`, { paylod: { accountId: account, amount: 7, fixed: true }, reason: 'fix amount' });
    expect(misspelt).toMatchObject({ status: 400, json: { error: 'InboxArgumentError', argument: 'body.paylod' } });
    // A payload means nothing to a discard: refused rather than ignored.
    expect(await call('POST', `${main.base}/entries/${id}/discard`, { reason: 'gone', payload: {} })).toMatchObject({ status: 400, json: { argument: 'body.payload' } });
    expect(await call('POST', `${main.base}/bulk/discard`, { filter: { 'payload.accountId': account }, dryrun: true })).toMatchObject({ status: 400, json: { argument: 'body.dryrun' } });
    expect(await main.inbox.get(id)).toMatchObject({ status: InboxStatus.DeadLetter, discardedAt: null, payload: { accountId: account, amount: 23 } });
  });

  it('takes a bulk filter on the payload flat or nested, and a path named __proto__ as a path', async () => {
    const account = newAccount();
    await deadLetters(account, [21, 22]);
    const dryRun = (filter: object) => call('POST', `${main.base}/bulk/discard`, { filter, dryRun: true });
    expect((await dryRun({ 'payload.accountId': account })).json.matched).toBe(2);
    expect((await dryRun({ payload: { accountId: account } })).json.matched).toBe(2);
    // Not swallowed by a setter, which would leave a filter on every dead letter.
    expect((await dryRun({ 'payload.__proto__': 'x' })).json.matched).toBe(0);
  });

  it('shows an entry with its attempt timeline, and 404 for one that does not exist', async () => {
    const [id] = await deadLetters(newAccount(), [5]);
    const { status, json } = await call('GET', `${main.base}/entries/${id}`);
    expect(status).toBe(200);
    expect(json.entry).toMatchObject({ id, status: InboxStatus.DeadLetter, deadLetterReason: 'permanent_error' });
    expect(json.history.map((record: { event: string; outcome: string | null }) => [record.event, record.outcome])).toEqual([['attempt', 'dead_letter']]);
    const missing = await call('GET', `${main.base}/entries/00000000-0000-4000-8000-000000000000`);
    expect(missing.status).toBe(404);
    expect(missing.json.error).toBe('InboxEntryNotFoundError');
  });

  it("replays with a corrected payload the handler's class validates, and records the actor", async () => {
    const account = newAccount();
    const [id] = await deadLetters(account, [5]);
    const invalid = await call('POST', `${main.base}/entries/${id}/replay`, { payload: { accountId: account, amount: 0, fixed: true }, reason: 'typo' });
    expect(invalid.status).toBe(400);
    expect(invalid.json.error).toBe('PayloadValidationError');
    expect((await main.inbox.get(id))!.status).toBe(InboxStatus.DeadLetter);
    const replayed = await call('POST', `${main.base}/entries/${id}/replay`, { payload: { accountId: account, amount: 5, fixed: true }, reason: 'ticket 42' });
    expect(replayed.status).toBe(200);
    expect(replayed.json.entry).toMatchObject({ id, status: InboxStatus.Pending, payload: { accountId: account, amount: 5, fixed: true } });
    await worker.processor.runOnce();
    expect((await main.inbox.get(id))!.status).toBe(InboxStatus.Completed);
    const { json } = await call('GET', `${main.base}/entries/${id}`);
    const replay = json.history.find((record: { event: string }) => record.event === 'replayed');
    expect(replay).toMatchObject({ actor: 'alice', reason: 'ticket 42', previousPayload: { accountId: account, amount: 5 } });
  });

  it('discards and dead-letters by hand, and answers 409 to an action the status does not allow', async () => {
    const [dead] = await deadLetters(newAccount(), [7]);
    const discarded = await call('POST', `${main.base}/entries/${dead}/discard`, { reason: 'duplicate order' });
    expect(discarded.status).toBe(200);
    expect(discarded.json.entry.discardedAt).not.toBeNull();
    const again = await call('POST', `${main.base}/entries/${dead}/discard`, {});
    expect(again.status).toBe(409);
    const { entry: pending } = await main.inbox.receive({ messageId: `w-${++sequence}`, commandType: 'admin.withdraw', payload: { accountId: newAccount(), amount: 1 } });
    const stopped = await call('POST', `${main.base}/entries/${pending.id}/dead-letter`, { reason: 'stop it' });
    expect(stopped.json.entry).toMatchObject({ status: InboxStatus.DeadLetter, deadLetterReason: 'manual' });
  });

  it('hides what redact hides, in the list, the entry and its earlier payloads', async () => {
    const account = newAccount();
    const [id] = await deadLetters(account, [9], { secret: 'hunter2' });
    const listed = await call('GET', `${main.base}/entries?payload.accountId=${account}`);
    expect(listed.json.entries[0].payload.secret).toBe('[redacted]');
    await call('POST', `${main.base}/entries/${id}/replay`, { payload: { accountId: account, amount: 9, secret: 'hunter3', fixed: true } });
    const { json } = await call('GET', `${main.base}/entries/${id}`);
    expect(json.entry.payload.secret).toBe('[redacted]');
    expect(JSON.stringify(json)).not.toContain('hunter');
    // The attempt's error in the timeline is shown as the entry's would be, its stack left out.
    const attempt = json.history.find((record: { event: string }) => record.event === 'attempt');
    expect(attempt).toMatchObject({ errorMessage: `Insufficient funds in ${account}: balance 0, withdrawal ***`, errorStack: null });
  });

  it('keeps a hidden field as stored when a corrected payload sends its mask back', async () => {
    const account = newAccount();
    const [id] = await deadLetters(account, [15], { secret: 'hunter2' });
    const shown = (await call('GET', `${main.base}/entries/${id}`)).json.entry.payload;
    expect(shown.secret).toBe('[redacted]');
    // The operator corrects the amount and leaves the masked field alone.
    const replayed = await call('POST', `${main.base}/entries/${id}/replay`, { payload: { ...shown, amount: 16, fixed: true } });
    expect(replayed.status).toBe(200);
    expect((await main.inbox.get(id))!.payload).toEqual({ accountId: account, amount: 16, secret: 'hunter2', fixed: true });
  });

  it("keeps the hidden fields of an array's elements as stored when it is edited in place, and refuses one that changed length", async () => {
    const account = newAccount();
    const [id] = await deadLetters(account, [17], { items: [{ sku: 'a', card: '4111-1' }, { sku: 'b', card: '5500-2' }] });
    const shown = (await call('GET', `${main.base}/entries/${id}`)).json.entry.payload;
    expect(shown.items).toEqual([{ sku: 'a', card: '[redacted]' }, { sku: 'b', card: '[redacted]' }]);
    // One element left out: which stored card goes with the one kept can no longer be told.
    const shrunk = await call('POST', `${main.base}/entries/${id}/replay`, { payload: { ...shown, items: [shown.items[1]], fixed: true } });
    expect(shrunk).toMatchObject({ status: 400, json: { error: 'InboxArgumentError', argument: 'body.payload.items' } });
    expect((await main.inbox.get(id))!.status).toBe(InboxStatus.DeadLetter);
    // The second element's sku corrected in place: both cards as stored, no mask.
    const replayed = await call('POST', `${main.base}/entries/${id}/replay`, { payload: { ...shown, items: [shown.items[0], { ...shown.items[1], sku: 'c' }], fixed: true } });
    expect(replayed.status).toBe(200);
    expect((await main.inbox.get(id))!.payload).toMatchObject({ items: [{ sku: 'a', card: '4111-1' }, { sku: 'c', card: '5500-2' }] });
  });

  it('shows the example error of a dead-letter group as its entry would show', async () => {
    const account = newAccount();
    await deadLetters(account, [777]);
    const { json } = await call('GET', `${main.base}/dead-letter-groups?commandType=admin.withdraw&limit=1000`);
    const group = json.groups.find((g: { fingerprint: string }) => g.fingerprint === 'Insufficient funds in acc-<n>: balance <n>, withdrawal <n>');
    expect(group.example.error).toMatch(/^Insufficient funds in acc-\d+: balance 0, withdrawal \*\*\*$/);
  });

  it('groups dead letters by command type and error fingerprint, and replays a group after its dry run', async () => {
    const first = newAccount();
    const second = newAccount();
    await deadLetters(first, [3000]);
    await deadLetters(second, [120]);
    const { json } = await call('GET', `${main.base}/dead-letter-groups?commandType=admin.withdraw`);
    const group = json.groups.find((g: { fingerprint: string }) => g.fingerprint === 'Insufficient funds in acc-<n>: balance <n>, withdrawal <n>');
    // Both accounts' failures are in it, whatever other dead letters of the same kind exist.
    const inGroup = (accountId: string) =>
      main.inbox.count({ status: InboxStatus.DeadLetter, includeDiscarded: false, commandType: 'admin.withdraw', errorFingerprint: group.fingerprint, payload: { accountId } });
    expect([await inGroup(first), await inGroup(second)]).toEqual([1, 1]);
    expect(group.count).toBe(await main.inbox.count({ status: InboxStatus.DeadLetter, includeDiscarded: false, commandType: 'admin.withdraw', errorFingerprint: group.fingerprint }));
    const filter = { commandType: 'admin.withdraw', errorFingerprint: group.fingerprint, 'payload.accountId': second };
    const dryRun = await call('POST', `${main.base}/bulk/replay`, { filter, dryRun: true });
    expect(dryRun.json).toEqual({ matched: 1, changed: 0, dryRun: true });
    const replayed = await call('POST', `${main.base}/bulk/replay`, { filter, expectedCount: 1, reason: 'funds arrived' });
    expect(replayed.json).toEqual({ matched: 1, changed: 1, dryRun: false });
    const after = await call('GET', `${main.base}/entries?payload.accountId=${second}`);
    expect(after.json.entries.map((entry: { status: string }) => entry.status)).toEqual([InboxStatus.Pending]);
  });

  it('refuses a bulk action whose confirmed count no longer matches, and one without a count, changing nothing', async () => {
    const account = newAccount();
    await deadLetters(account, [1, 2]);
    const filter = { 'payload.accountId': account };
    const dryRun = await call('POST', `${main.base}/bulk/discard`, { filter, dryRun: true });
    expect(dryRun.json.matched).toBe(2);
    // The filter grew after the dry run.
    await deadLetters(account, [3]);
    const refused = await call('POST', `${main.base}/bulk/discard`, { filter, expectedCount: 2 });
    expect(refused.status).toBe(409);
    expect(refused.json).toMatchObject({ error: 'BulkCountChangedError', expected: 2, matched: 3 });
    const unconfirmed = await call('POST', `${main.base}/bulk/discard`, { filter });
    expect(unconfirmed.status).toBe(400);
    expect(unconfirmed.json.argument).toBe('body.expectedCount');
    expect(await main.inbox.count({ payload: { accountId: account }, status: InboxStatus.DeadLetter, includeDiscarded: false })).toBe(3);
    const discarded = await call('POST', `${main.base}/bulk/discard`, { filter, expectedCount: 3 });
    expect(discarded.json).toEqual({ matched: 3, changed: 3, dryRun: false });
    expect(await main.inbox.count({ payload: { accountId: account }, includeDiscarded: false, status: InboxStatus.DeadLetter })).toBe(0);
  });

  it('shows the stats and the blocked keys', async () => {
    await deadLetters(newAccount(), [60]);
    const account = newAccount();
    // A holder dead-lettered by hand under the module's policy (block) keeps the entry behind it waiting.
    const { entry: blocking } = await main.inbox.receive({ messageId: `d-${++sequence}`, commandType: 'admin.deposit', payload: { accountId: account, amount: 50 } });
    await main.inbox.receive({ messageId: `d-${++sequence}`, commandType: 'admin.deposit', payload: { accountId: account, amount: 1 } });
    await call('POST', `${main.base}/entries/${blocking.id}/dead-letter`, { reason: 'hold the account' });
    const stats = await call('GET', `${main.base}/stats`);
    expect(stats.status).toBe(200);
    expect(stats.json.entries.dead_letter).toBe(await main.inbox.count({ status: InboxStatus.DeadLetter }));
    const withdraw = stats.json.byCommandType.find((type: { commandType: string }) => type.commandType === 'admin.withdraw');
    expect(withdraw.counts.dead_letter).toBe(await main.inbox.count({ status: InboxStatus.DeadLetter, commandType: 'admin.withdraw' }));
    expect(withdraw.counts.pending).toBe(await main.inbox.count({ status: InboxStatus.Pending, commandType: 'admin.withdraw' }));
    const deposit = stats.json.byCommandType.find((type: { commandType: string }) => type.commandType === 'admin.deposit');
    expect(deposit.counts).toMatchObject({ pending: 1, dead_letter: 1 });
    expect(stats.json.deadLettersByReason.permanent_error).toBe(await main.inbox.count({ status: InboxStatus.DeadLetter, deadLetterReason: 'permanent_error' as never, includeDiscarded: false }));
    const blocked = await call('GET', `${main.base}/blocked-keys`);
    const key = blocked.json.keys.find((k: { orderingKey: string }) => k.orderingKey === account);
    expect(key).toMatchObject({ waiting: 1, blockedBy: { id: blocking.id } });
  });

  it('answers 403 to every change when read-only, and reads all the same', async () => {
    const [id] = await deadLetters(newAccount(), [11]);
    expect((await call('GET', `${readOnly.base}/entries/${id}`, undefined, {})).status).toBe(200);
    for (const [path, body] of [
      [`/entries/${id}/replay`, {}],
      [`/entries/${id}/discard`, {}],
      [`/bulk/replay`, { dryRun: true }],
    ] as const) {
      const { status, json } = await call('POST', `${readOnly.base}${path}`, body, {});
      expect(status).toBe(403);
      expect(json.message).toContain('read-only');
    }
    expect((await main.inbox.get(id))!.status).toBe(InboxStatus.DeadLetter);
  });
});

/** What the console's redact hides: a `secret`, and the `card` of each of the `items`. */
function hidePayload(payload: Record<string, unknown>): Record<string, unknown> {
  const shown = { ...payload };
  if ('secret' in shown) shown.secret = '[redacted]';
  if (Array.isArray(shown.items)) shown.items = shown.items.map((item: Record<string, unknown>) => ('card' in item ? { ...item, card: '[redacted]' } : item));
  return shown;
}
