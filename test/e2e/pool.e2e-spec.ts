import { Injectable } from '@nestjs/common';
import {
  InboxHandler,
  InboxService,
  InboxStatus,
  InboxUnavailableError,
  type InboxCommandHandler,
  type InboxContext,
} from 'nestjs-inbox';
import { CaptureLogger } from '../support/capture-logger';
import { createTestApp, waitFor, type TestApp } from '../support/test-app';
import { createTestDatabase, type TestDatabase } from '../support/test-database';

/** Sends a follow-up command the wrong way: without its transaction's manager. */
@Injectable()
@InboxHandler('test.follow-up')
class FollowUpHandler implements InboxCommandHandler<Record<string, unknown>> {
  readonly errors: unknown[] = [];

  constructor(private readonly inbox: InboxService) {}

  async execute(_command: Record<string, unknown>, { entry }: InboxContext): Promise<void> {
    try {
      await this.inbox.receive({ messageId: `${entry.messageId}:next`, commandType: 'test.follow-up', payload: {} });
    } catch (error) {
      this.errors.push(error);
    }
  }
}

describe('a pool too small for the worker', () => {
  let db: TestDatabase;
  let app: TestApp | undefined;

  beforeAll(async () => {
    db = await createTestDatabase('pool');
  });

  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('is reported at boot with both numbers', async () => {
    const logger = new CaptureLogger();
    app = await createTestApp({ url: db.url, handlers: [FollowUpHandler], logger, typeorm: { extra: { max: 3 } }, inbox: { concurrency: 4 } });
    const [warning] = logger.find('warn', /pool/i);
    expect(warning?.message).toMatch(/\b3\b/);
    expect(warning?.message).toMatch(/concurrency \(4\)/);
  });

  it('is no warning when the pool is large enough', async () => {
    const logger = new CaptureLogger();
    app = await createTestApp({ url: db.url, handlers: [FollowUpHandler], logger, typeorm: { extra: { max: 6 } }, inbox: { concurrency: 4 } });
    expect(logger.find('warn', /pool/i)).toEqual([]);
  });

  it('gives a receive that cannot get a connection an error that says the pool is exhausted', async () => {
    app = await createTestApp({
      url: db.url,
      handlers: [FollowUpHandler],
      typeorm: { extra: { max: 1 } },
      inbox: { concurrency: 1, receiveTimeoutMs: 300 },
    });
    const { entry } = await app.inbox.receive({ messageId: 'first', commandType: 'test.follow-up', payload: {} });
    await waitFor(async () => (await app!.inbox.get(entry.id))?.status === InboxStatus.Completed, 'the handler to finish');
    const [error] = app.get(FollowUpHandler).errors as Error[];
    expect(error).toBeInstanceOf(InboxUnavailableError);
    expect(error.name).toBe('InboxPoolExhaustedError');
    expect(error.message).toMatch(/pool/);
    expect(error.message).toMatch(/exhausted/);
    expect(error.message).not.toMatch(/database is unavailable/);
    expect(error.message).toMatch(/context\.manager/);
  });
});
