import { randomUUID } from 'node:crypto';
import { InboxStatements } from '../../lib/store/statements';
import { createTestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

/**
 * The claim shares its places in due order, each holder with the run behind it. However the
 * entries of a key are numbered, a claim never takes more entries than its limit.
 */
describe('the room of a claim', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase('claim_room');
    // The application's migration creates the tables.
    const app = await createTestApp({ url: db.url, inbox: { worker: false, notify: false } });
    await app.close();
  });

  afterAll(async () => {
    await db?.drop();
  });

  async function claim(limit: number): Promise<string[]> {
    const rows = await sql<{ message_id: string }>(db.url, new InboxStatements('inbox_entries', limit).claim.text, [
      null,
      'room-worker',
      '60000 milliseconds',
      randomUUID(),
      ['room.step'],
    ]);
    return rows.map((row) => row.message_id).sort();
  }

  it('takes no more than its limit when an entry waits behind its holder with an earlier place', async () => {
    // Key k: its holder has place 5 (the last given); a dead letter passed over under policy skip
    // and replayed later waits behind it with place 1. An entry without a key is due after the holder.
    await sql(db.url, `INSERT INTO inbox_entries_keys ("ordering_key", "last_seq", "busy") VALUES ('k', 5, true)`);
    await sql(
      db.url,
      `INSERT INTO inbox_entries ("message_id", "command_type", "payload", "metadata", "received_at", "ordering_key", "ordering_seq", "waiting") VALUES
         ('k-5', 'room.step', '{}', '{}', now() - interval '1 hour', 'k', 5, false),
         ('k-1', 'room.step', '{}', '{}', now() - interval '2 hours', 'k', 1, true)`,
    );
    await sql(db.url, `INSERT INTO inbox_entries ("message_id", "command_type", "payload", "metadata", "received_at") VALUES ('free', 'room.step', '{}', '{}', now() - interval '30 minutes')`);

    expect(await claim(2)).toEqual(['free', 'k-5']);
    // The replayed entry still waits: the holder runs first, the hand-over brings it next.
    const [waiting] = await sql<{ status: string; waiting: boolean }>(db.url, `SELECT "status", "waiting" FROM inbox_entries WHERE "message_id" = 'k-1'`);
    expect(waiting).toEqual({ status: 'pending', waiting: true });
  });

  it('refuses a limit that is not a positive whole number', () => {
    expect(() => new InboxStatements('inbox_entries', 0)).toThrow(RangeError);
    expect(() => new InboxStatements('inbox_entries', 2.5)).toThrow(RangeError);
  });
});
