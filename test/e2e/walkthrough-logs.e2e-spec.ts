import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { LoggerService } from '@nestjs/common';
import { DeadLetterReason } from 'nestjs-inbox';
import { EFFECTS_TABLE_SQL, ScriptedHandler } from '../fixtures/handlers';
import { createTestApp, ManualClock, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';

const WALKTHROUGH = path.join(__dirname, '..', '..', 'docs', 'sample-walkthrough.md');

/**
 * The processor's line for a recorded failure: a retry, or a dead letter with its reason. Ids,
 * times and messages vary; the walkthrough shortens some of them to `…`.
 */
const FAILURE_LINE = /^Inbox entry \S+ \((\S+)\) attempt (\d+)\/(\d+) (?:failed, retry at \S+|dead-lettered \(([a-z_]+)\)): .+$/;

class RecordingLogger implements LoggerService {
  readonly lines: string[] = [];
  log(): void {}
  warn(message: string): void {
    this.lines.push(message);
  }
  error(message: string): void {
    this.lines.push(message);
  }
}

/** Which log lines the docs show the processor writing: the ones that start with "Inbox entry". */
function documentedLines(): string[] {
  return readFileSync(WALKTHROUGH, 'utf8')
    .split('\n')
    .map((line) => /^(?:WARN|ERROR)\s+\[InboxProcessor\] (Inbox entry .*)$/.exec(line)?.[1])
    .filter((line): line is string => line !== undefined);
}

describe('the log lines shown in docs/sample-walkthrough.md', () => {
  let db: TestDatabase;
  let app: TestApp;
  const logger = new RecordingLogger();

  beforeAll(async () => {
    db = await createTestDatabase('walkthrough_logs');
    await sql(db.url, EFFECTS_TABLE_SQL);
    const clock = new ManualClock();
    app = await createTestApp({
      url: db.url,
      handlers: [ScriptedHandler],
      inbox: { clock, maxAttempts: 2, backoff: { initialDelayMs: 1000, maxDelayMs: 1000, jitter: 0 } },
    });
    app.module.useLogger(logger);
    await app.inbox.receive({ messageId: 'flaky', commandType: 'test.scripted', payload: { alwaysFail: true } });
    await app.inbox.receive({ messageId: 'rule', commandType: 'test.scripted', payload: { permanent: true } });
    await app.processor.runOnce();
    clock.advance(5_000);
    await app.processor.runOnce();
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('has the shape the processor really logs: a retry, and a dead letter with its reason', () => {
    const failures = logger.lines.filter((line) => line.startsWith('Inbox entry'));
    expect(failures.map((line) => FAILURE_LINE.exec(line)?.[4] ?? (FAILURE_LINE.test(line) ? 'retry' : line)).sort()).toEqual([
      DeadLetterReason.PermanentError,
      DeadLetterReason.RetriesExhausted,
      'retry',
    ]);
  });

  it('shows every processor line in that shape, dead letters with a real reason', () => {
    const lines = documentedLines();
    expect(lines.length).toBeGreaterThan(0);
    const reasons = new Set<string>(Object.values(DeadLetterReason));
    for (const line of lines) {
      const match = FAILURE_LINE.exec(line);
      expect({ line, shaped: match !== null }).toEqual({ line, shaped: true });
      if (match?.[4] !== undefined) expect({ line, reason: reasons.has(match[4]) }).toEqual({ line, reason: true });
    }
    expect(lines.some((line) => line.includes('dead-lettered'))).toBe(true);
  });
});
