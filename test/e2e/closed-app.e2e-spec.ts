import { Injectable, type BeforeApplicationShutdown } from '@nestjs/common';
import { InboxService, InboxUnavailableError, type InboxService as Inbox } from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, ScriptedHandler } from '../fixtures/handlers';
import { createTestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/** Receives one last command while the application shuts down (a flush of a local buffer, say). */
@Injectable()
class LastWords implements BeforeApplicationShutdown {
  result?: unknown;

  constructor(private readonly inbox: InboxService) {}

  async beforeApplicationShutdown(): Promise<void> {
    this.result = await this.inbox.receive({ messageId: 'last-words', commandType: 'test.scripted', payload: {} }).catch((error: unknown) => error);
  }
}

const ENTRY_ID = '00000000-0000-4000-8000-000000000000';

/** Every public method of InboxService, called with valid arguments. */
const CALLS: Array<[string, (inbox: Inbox) => Promise<unknown>]> = [
  ['receive', (inbox) => inbox.receive({ messageId: 'after-close', commandType: 'test.scripted', payload: {} })],
  ['get', (inbox) => inbox.get(ENTRY_ID)],
  ['findByMessageId', (inbox) => inbox.findByMessageId('after-close')],
  ['list', (inbox) => inbox.list({})],
  ['count', (inbox) => inbox.count({})],
  ['countByStatus', (inbox) => inbox.countByStatus()],
  ['dueByCommandType', (inbox) => inbox.dueByCommandType()],
  ['history', (inbox) => inbox.history(ENTRY_ID)],
  ['replay', (inbox) => inbox.replay(ENTRY_ID, { actor: 'ops' })],
  ['replayMany', (inbox) => inbox.replayMany({}, { actor: 'ops' })],
  ['discard', (inbox) => inbox.discard(ENTRY_ID, { actor: 'ops' })],
  ['deadLetter', (inbox) => inbox.deadLetter(ENTRY_ID, { actor: 'ops' })],
];

describe('InboxService around shutdown', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase('closed');
    await sql(db.url, EFFECTS_TABLE_SQL);
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('still stores a command received while the application shuts down', async () => {
    const app = await createTestApp({ url: db.url, handlers: [ScriptedHandler, LastWords] });
    const lastWords = app.get(LastWords);
    await app.close();
    expect(lastWords.result).toMatchObject({ duplicate: false, entry: { messageId: 'last-words' } });
    // Stored (and perhaps already run by the draining worker).
    expect(await sql(db.url, `SELECT count(*)::int AS n FROM inbox_entries WHERE message_id = 'last-words'`)).toEqual([{ n: 1 }]);
  });

  it.each(CALLS)('%s after close throws InboxUnavailableError saying the inbox is shut down', async (_name, call) => {
    const app = await createTestApp({ url: db.url, handlers: [ScriptedHandler] });
    const inbox = app.inbox;
    await app.close();
    const error = await call(inbox).then(
      () => new Error('resolved'),
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InboxUnavailableError);
    expect((error as Error).message).toMatch(/shut down/);
    expect(await sql(db.url, `SELECT 1 FROM inbox_entries WHERE message_id = 'after-close'`)).toEqual([]);
  });
});
