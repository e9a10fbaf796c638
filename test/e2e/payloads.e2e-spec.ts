import { Injectable } from '@nestjs/common';
import { Allow, IsInt, IsString } from 'class-validator';
import {
  DeadLetterReason,
  InboxArgumentError,
  InboxCommand,
  InboxHandler,
  InboxStatus,
  type InboxCommandHandler,
  type InboxContext,
} from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, ScriptedHandler } from '../fixtures/handlers';
import { createTestApp, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

@InboxCommand('test.tree')
class TreeCommand {
  @Allow()
  node?: unknown;
}

@Injectable()
@InboxHandler(TreeCommand)
class TreeHandler implements InboxCommandHandler<TreeCommand> {
  runs = 0;
  async execute(): Promise<void> {
    this.runs++;
  }
}

@InboxCommand('test.order')
class OrderCommand {
  @IsString() sku!: string;
  @IsInt() quantity!: number;
}

/** Keeps the command instance it was given, to see which properties reached it. */
@Injectable()
@InboxHandler(OrderCommand)
class OrderHandler implements InboxCommandHandler<OrderCommand> {
  readonly received: OrderCommand[] = [];
  async execute(command: OrderCommand): Promise<void> {
    this.received.push(command);
  }
}

/** The same command under a type only the spec's second application handles. */
@Injectable()
@InboxHandler('test.loose-order', { payload: OrderCommand })
class LooseOrderHandler extends OrderHandler {}

@Injectable()
@InboxHandler('test.strict-order', { payload: OrderCommand, payloadValidation: { forbidNonWhitelisted: true } })
class StrictOrderHandler implements InboxCommandHandler<OrderCommand> {
  async execute(): Promise<void> {}
}

/** A payload nested `depth` levels deep. */
function nested(depth: number): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  let current = root;
  for (let i = 0; i < depth; i++) {
    const child: Record<string, unknown> = {};
    current.node = child;
    current = child;
  }
  return root;
}

describe('payloads and strings', () => {
  let db: TestDatabase;
  let app: TestApp;
  let seq = 0;
  const id = () => `p-${++seq}`;

  beforeAll(async () => {
    db = await createTestDatabase('payloads');
    await sql(db.url, EFFECTS_TABLE_SQL);
    app = await createTestApp({ url: db.url, handlers: [ScriptedHandler, TreeHandler, OrderHandler, StrictOrderHandler] });
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  const rejection = async (call: Promise<unknown>) => {
    const error = await call.then(() => undefined, (e: unknown) => e);
    return error instanceof InboxArgumentError ? error.argument : error;
  };

  describe('well-formed Unicode', () => {
    it('refuses a messageId with a lone surrogate instead of storing it as U+FFFD', async () => {
      const before = await app.inbox.count({});
      expect(await rejection(app.inbox.receive({ messageId: 'k\uD800', commandType: 'test.scripted', payload: {} }))).toBe('command.messageId');
      expect(await rejection(app.inbox.receive({ messageId: 'k\uDBFF', commandType: 'test.scripted', payload: {} }))).toBe('command.messageId');
      expect(await app.inbox.count({})).toBe(before);
    });

    it('refuses lone surrogates in every other stored string, keys included', async () => {
      const before = await app.inbox.count({});
      const base = { messageId: id(), commandType: 'test.scripted', payload: {} };
      expect(await rejection(app.inbox.receive({ ...base, commandType: 'test.\uDC00' }))).toBe('command.commandType');
      expect(await rejection(app.inbox.receive({ ...base, payload: { note: 'a\uD83Db' } }))).toBe('command.payload');
      expect(await rejection(app.inbox.receive({ ...base, payload: { ['k\uDFFF']: 1 } }))).toBe('command.payload');
      expect(await rejection(app.inbox.receive({ ...base, payload: { deep: [{ x: '\uDC00' }] } }))).toBe('command.payload');
      expect(await rejection(app.inbox.receive({ ...base, metadata: { header: '\uD800' } }))).toBe('command.metadata');
      expect(await rejection(app.inbox.receive({ ...base, correlationId: '\uD800x' }))).toBe('command.correlationId');
      expect(await rejection(app.inbox.receive({ ...base, causationId: 'x\uDBFF' }))).toBe('command.causationId');
      expect(await rejection(app.inbox.list({ commandType: 'a\uD800' }))).toBe('query.commandType');
      expect(await app.inbox.count({})).toBe(before);
    });

    it('stores paired surrogates (emoji) and counts a messageId in characters, as the column does', async () => {
      const emoji = '😀'.repeat(255); // 255 characters, 510 UTF-16 code units
      const { entry } = await app.inbox.receive({ messageId: emoji, commandType: 'test.scripted', payload: { note: '👍' } });
      expect((await app.inbox.get(entry.id))!).toMatchObject({ messageId: emoji, payload: { note: '👍' } });
      expect(await rejection(app.inbox.receive({ messageId: `${emoji}x`, commandType: 'test.scripted', payload: {} }))).toBe('command.messageId');
    });
  });

  it('accepts a payload whose text contains a backslash followed by u0000 (no NUL in it)', async () => {
    const payload = { path: 'C:\\u0000dir', escaped: '\\\\u0000' };
    const { entry } = await app.inbox.receive({ messageId: id(), commandType: 'test.scripted', payload });
    expect((await app.inbox.get(entry.id))!.payload).toEqual(payload);
    // A real NUL is still refused, also behind an escaped backslash.
    expect(await rejection(app.inbox.receive({ messageId: id(), commandType: 'test.scripted', payload: { path: 'C:\\\u0000' } }))).toBe('command.payload');
  });

  it('dead-letters a payload too deep to materialise on its first attempt, as invalid', async () => {
    const { entry } = await app.inbox.receive({ messageId: id(), commandType: 'test.tree', payload: nested(3000) });
    await app.processor.runOnce();
    const stored = (await app.inbox.get(entry.id))!;
    expect(stored).toMatchObject({ status: InboxStatus.DeadLetter, retryCount: 1, deadLetterReason: DeadLetterReason.InvalidPayload });
    expect(app.get(TreeHandler).runs).toBe(0);
  });

  it('dead-letters an invalid payload of a crash suspect too (it runs alone; its start is not stamped yet)', async () => {
    const [{ id: entryId }] = await sql<{ id: string }>(
      db.url,
      `INSERT INTO inbox_entries (message_id, command_type, payload, last_outcome, received_at)
       VALUES ($1, 'test.order', '{"sku": 7}', 'lease_expired', now() - interval '1 s') RETURNING id`,
      [id()],
    );
    await app.processor.runOnce();
    expect(await app.inbox.get(entryId)).toMatchObject({ status: InboxStatus.DeadLetter, deadLetterReason: DeadLetterReason.InvalidPayload, retryCount: 1 });
    const [attempt] = await app.inbox.history(entryId);
    expect(attempt).toMatchObject({ attempt: 1, outcome: 'dead_letter', errorClass: 'PayloadValidationError' });
    expect(attempt.startedAt).toBeInstanceOf(Date);
    expect(attempt.finishedAt).toBeInstanceOf(Date);
  });

  describe('undeclared properties', () => {
    it('strips them by default, so the handler sees only what its class declares', async () => {
      await app.inbox.receive({ messageId: id(), commandType: 'test.order', payload: { sku: 'A-1', quantity: 2, isAdmin: true } });
      await app.processor.runOnce();
      const [command] = app.get(OrderHandler).received.slice(-1);
      expect(command).toBeInstanceOf(OrderCommand);
      expect({ ...command }).toEqual({ sku: 'A-1', quantity: 2 });
    });

    it('dead-letters them as an invalid payload with forbidNonWhitelisted', async () => {
      const { entry } = await app.inbox.receive({ messageId: id(), commandType: 'test.strict-order', payload: { sku: 'A-1', quantity: 2, isAdmin: true } });
      await app.processor.runOnce();
      const stored = (await app.inbox.get(entry.id))!;
      expect(stored).toMatchObject({ status: InboxStatus.DeadLetter, deadLetterReason: DeadLetterReason.InvalidPayload });
      expect(stored.error).toMatch(/isAdmin/);
    });

    it('keeps them with payloadValidation: { whitelist: false } on the module', async () => {
      const loose = await createTestApp({ url: db.url, handlers: [LooseOrderHandler], inbox: { payloadValidation: { whitelist: false } } });
      try {
        await loose.inbox.receive({ messageId: id(), commandType: 'test.loose-order', payload: { sku: 'B-2', quantity: 1, note: 'kept' } });
        await loose.processor.runOnce();
        const [command] = loose.get(LooseOrderHandler).received.slice(-1);
        expect({ ...command }).toEqual({ sku: 'B-2', quantity: 1, note: 'kept' });
      } finally {
        await loose.close();
      }
    });
  });
});
