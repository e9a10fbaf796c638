import { Injectable, type INestApplication } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { Test } from '@nestjs/testing';
import { InboxAdminModule, InboxArgumentError, InboxHandler, InboxModule, InboxService, InboxStatus, PermanentError, type InboxCommandHandler } from 'nestjs-inbox';
import { createTestApp, typeOrmForTests, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** Fails with an error whose message carries text from outside (here: a NUL byte). */
@Injectable()
@InboxHandler('checks.nul-error', { maxAttempts: 1 })
class NulErrorHandler implements InboxCommandHandler<{ permanent?: boolean }> {
  async execute(command: { permanent?: boolean }): Promise<void> {
    const external = 'bad\u0000bytes';
    if (command.permanent) throw new PermanentError(`upstream refused: ${external}`);
    throw new Error(`upstream refused: ${external}`);
  }
}

@Injectable()
@InboxHandler('checks.bulk', { maxAttempts: 1 })
class BulkHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(): Promise<void> {
    throw new PermanentError('nope');
  }
}

@Injectable()
@InboxHandler('checks.single', { maxAttempts: 1 })
class SingleHandler implements InboxCommandHandler<Record<string, unknown>> {
  async execute(): Promise<void> {
    throw new PermanentError('nope');
  }
}

describe('bad input that used to get through', () => {
  let db: TestDatabase;
  let app: TestApp;
  let admin: INestApplication;
  let base: string;
  let seq = 0;

  beforeAll(async () => {
    db = await createTestDatabase('argument_checks');
    app = await createTestApp({ url: db.url, handlers: [NulErrorHandler, BulkHandler, SingleHandler], inbox: { workerId: 'checks-worker', notify: false } });
    const module = await Test.createTestingModule({
      imports: [typeOrmForTests(db.url), ScheduleModule.forRoot(), InboxModule.forRoot({ pollIntervalMs: 60_000, notify: false, worker: false }), InboxAdminModule.register({ unprotected: true })],
    }).compile();
    admin = module.createNestApplication({ logger: false });
    await admin.listen(0, '127.0.0.1');
    base = `${await admin.getUrl()}/inbox-admin/api`;
  });

  afterAll(async () => {
    await admin?.close();
    await app?.close();
    await db?.drop();
  });

  it('a handler error with a NUL in its message is recorded (the entry leaves Processing)', async () => {
    for (const permanent of [false, true]) {
      const { entry } = await app.inbox.receive({ messageId: `nul-${++seq}`, commandType: 'checks.nul-error', payload: { permanent } });
      await app.processor.runOnce();
      const [row] = await sql<{ status: string; error: string | null }>(db.url, 'SELECT status, error FROM inbox_entries WHERE id = $1', [entry.id]);
      expect(row).toMatchObject({ status: InboxStatus.DeadLetter, error: expect.stringContaining('upstream refused: bad') });
    }
  });

  it('a misspelt dryRun in replayMany options is refused, not a real replay of every dead letter', async () => {
    for (let i = 0; i < 3; i++) await app.inbox.receive({ messageId: `bulk-${++seq}`, commandType: 'checks.bulk', payload: { i } });
    await app.processor.runOnce();
    expect(await app.inbox.count({ status: InboxStatus.DeadLetter, commandType: 'checks.bulk' })).toBe(3);
    // A JavaScript caller, or options built in a variable: TypeScript's excess property check does not apply.
    const options = JSON.parse('{"actor":"alice","dryrun":true}');
    await expect(app.inbox.replayMany({ commandType: 'checks.bulk' }, options)).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'options.dryrun' });
    expect(await app.inbox.count({ status: InboxStatus.DeadLetter, commandType: 'checks.bulk' })).toBe(3);
  });

  it('a misspelt payload in replay options is refused, not a replay of the uncorrected payload', async () => {
    const { entry } = await app.inbox.receive({ messageId: `single-${++seq}`, commandType: 'checks.single', payload: { amount: -1 } });
    await app.processor.runOnce();
    expect((await app.inbox.get(entry.id))!.status).toBe(InboxStatus.DeadLetter);
    const options = JSON.parse('{"actor":"alice","paylod":{"amount":1}}');
    await expect(app.inbox.replay(entry.id, options)).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'options.paylod' });
    expect((await app.inbox.get(entry.id))!.status).toBe(InboxStatus.DeadLetter);
  });

  it('an invalid Date inside a payload is refused, not stored as null', async () => {
    const messageId = `date-${++seq}`;
    await expect(app.inbox.receive({ messageId, commandType: 'checks.single', payload: { dueAt: new Date('not a date') } })).rejects.toMatchObject({
      name: 'InboxArgumentError',
      argument: 'command.payload.dueAt',
    });
    expect(await app.inbox.findByMessageId(messageId)).toBeNull();
  });

  it('the console refuses a calendar date that does not exist instead of rolling it over', async () => {
    // 2025-02-30 is not a date; JavaScript's Date makes it 2025-03-02 (the CLI refuses it, see parseDate).
    const response = await fetch(`${base}/entries?receivedBefore=2025-02-30`);
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ argument: 'query.receivedBefore' });
  });

  it('refuses a misspelt field of a blocked-keys or dead-letter-groups query, and a query that is an array', async () => {
    await expect(app.inbox.blockedKeys({ comandType: 'checks.bulk' } as never)).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'query.comandType' });
    await expect(app.inbox.deadLetterGroups({ limt: 5 } as never)).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'query.limt' });
    await expect(app.inbox.blockedKeys([] as never)).rejects.toMatchObject({ name: 'InboxArgumentError', argument: 'query' });
  });
});
