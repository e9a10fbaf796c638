import { Injectable } from '@nestjs/common';
import { Client } from 'pg';
import { InboxHandler, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

interface Step {
  account: string;
  n: number;
}

/** The first entry's handler waits for this: the test opens it once a claim is held at the gate. */
let firstMayFinish: Promise<void> = Promise.resolve();

@Injectable()
@InboxHandler('pass.step', { orderingKey: (step: Step) => step.account })
class StepHandler implements InboxCommandHandler<Step> {
  async execute(step: Step, { manager }: InboxContext): Promise<void> {
    if (step.n === 1) await firstMayFinish;
    await manager.query('INSERT INTO pass_effects (account, n) VALUES ($1, $2)', [step.account, step.n]);
  }
}

const GATE = 4242;

/**
 * A batch that completes a key's holder makes the key's next entry due. When it ends while a claim
 * that found nothing due is still out (its snapshot taken before that commit), the pass must look
 * again rather than end with the entry due and nothing running.
 */
describe('a pass and the hand-overs of the batches it ran', () => {
  let db: TestDatabase;
  let producer: TestApp;
  let app: TestApp;
  let gate: Client;

  beforeAll(async () => {
    db = await createTestDatabase('pass_hand_over');
    await sql(db.url, 'CREATE TABLE pass_effects (id bigserial PRIMARY KEY, account text NOT NULL, n int NOT NULL)');
    // batchSize 1: each entry is a batch of its own; concurrency 2: a claim goes out while a batch runs.
    // Commands arrive through an application that runs none; the worker runs only when driven.
    producer = await createTestApp({ url: db.url, handlers: [StepHandler], inbox: { notify: false, worker: false } });
    app = await createTestApp({ url: db.url, handlers: [StepHandler], inbox: { notify: false, batchSize: 1, concurrency: 2, workerId: 'pass-worker' } });
    await app.processor.runOnce();
    // Holds back a claim that took nothing (an update of no row), while the gate is armed: its
    // snapshot is taken, and the running batch commits behind it.
    await sql(db.url, 'CREATE TABLE pass_gate (armed boolean NOT NULL)');
    await sql(db.url, 'INSERT INTO pass_gate VALUES (false)');
    await sql(
      db.url,
      `CREATE FUNCTION hold_empty_claim() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NOT EXISTS (SELECT FROM changed) AND current_query() LIKE 'WITH due AS%' AND (SELECT armed FROM pass_gate) THEN PERFORM pg_advisory_xact_lock_shared(${GATE}); END IF;
         RETURN NULL;
       END $$`,
    );
    await sql(db.url, 'CREATE TRIGGER hold_empty_claim AFTER UPDATE ON inbox_entries REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION hold_empty_claim()');
    gate = new Client({ connectionString: db.url });
    await gate.connect();
  });

  afterAll(async () => {
    await gate?.end();
    await app?.close();
    await producer?.close();
    await db?.drop();
  });

  it("runs a key's next entry that became due while a claim that found nothing was out", async () => {
    const account = 'acct-1';
    for (const n of [1, 2]) await producer.inbox.receive({ messageId: `${account}-${n}`, commandType: 'pass.step', payload: { account, n } });
    await gate.query('SELECT pg_advisory_lock($1)', [GATE]);
    await gate.query('UPDATE pass_gate SET armed = true');
    let openFirst!: () => void;
    firstMayFinish = new Promise((resolve) => (openFirst = resolve));
    const pass = app.processor.runOnce();
    try {
      // The claim that went out beside the first entry's batch found nothing and waits at the
      // gate; then that batch commits (handing the key to the second entry) and ends.
      await waitFor(async () => (await sql(db.url, `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND datname = current_database()`)).length > 0, 'a claim held at the gate');
      openFirst();
      await waitFor(async () => (await sql(db.url, `SELECT 1 FROM inbox_entries WHERE message_id = $1 AND status = 'completed'`, [`${account}-1`])).length > 0, 'the first entry completed');
    } finally {
      openFirst();
      await gate.query('UPDATE pass_gate SET armed = false');
      await gate.query('SELECT pg_advisory_unlock($1)', [GATE]);
    }
    await pass;
    const effects = await sql<{ n: number }>(db.url, 'SELECT n FROM pass_effects WHERE account = $1 ORDER BY id', [account]);
    expect(effects.map((row) => row.n)).toEqual([1, 2]);
  });
});
