import { Injectable } from '@nestjs/common';
import { context, trace, SpanKind, type Attributes } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { MeterProvider, type Histogram, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { InboxHandler, InboxRetention, InboxSnapshots, InboxStatus, PermanentError, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { createTestApp, ManualClock, type TestApp } from '../support/test-app';
import { createTestDatabase, sql, type TestDatabase } from '../support/test-database';
import { proxyFor, type TcpProxy } from '../support/tcp-proxy';
import { OnDemandReader, pointsOf, sumOf, takeClaimAway } from '../support/telemetry';

/** What the traced handler does next: fail (transient), fail for good, or succeed. */
const script = { mode: 'ok' as 'ok' | 'fail' | 'permanent' };
const SECRET = 'hunter2-payload-secret';
const METADATA_SECRET = 'metadata-secret-token';

/** Starts a span of its own inside the attempt (as a handler's own instrumentation would) and queries. */
@Injectable()
@InboxHandler('obs.traced')
class TracedHandler implements InboxCommandHandler<{ secret: string }> {
  async execute(_command: { secret: string }, ctx: InboxContext): Promise<void> {
    await trace.getTracer('handler').startActiveSpan('handler work', async (span) => {
      await ctx.manager.query('SELECT 1');
      span.end();
    });
    if (script.mode === 'fail') throw new Error('dependency down');
    if (script.mode === 'permanent') throw new PermanentError('business rule violated');
  }
}

/** Fails for good when asked to, succeeds otherwise. */
@Injectable()
@InboxHandler('obs.counted')
class CountedHandler implements InboxCommandHandler<{ fail?: boolean; n: number }> {
  async execute(command: { fail?: boolean }): Promise<void> {
    if (command.fail) throw new PermanentError('refused');
  }
}

/** Fails (transiently) on the given run of its command, succeeds on every other. */
const runsOf = new Map<string, number>();
@Injectable()
@InboxHandler('obs.flaky')
class FlakyHandler implements InboxCommandHandler<{ id: string; failOnRun?: number }> {
  async execute(command: { id: string; failOnRun?: number }): Promise<void> {
    const run = (runsOf.get(command.id) ?? 0) + 1;
    runsOf.set(command.id, run);
    if (run === command.failOnRun) throw new Error('flaky on this run');
  }
}

describe('telemetry: traces and metrics through OpenTelemetry', () => {
  let db: TestDatabase;
  /** Receives and acts as operator; the worker app runs only when a test drives it. */
  let receiver: TestApp;
  let app: TestApp;
  const clock = new ManualClock();
  const spans = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  const reader = new OnDemandReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const contextManager = new AsyncLocalStorageContextManager().enable();
  let seq = 0;

  beforeAll(async () => {
    // As an application's SDK would: the context manager and the tracer provider go global (a
    // handler's own spans use the global tracer); the library is given both providers explicitly.
    context.setGlobalContextManager(contextManager);
    trace.setGlobalTracerProvider(tracerProvider);
    db = await createTestDatabase('telemetry');
    const telemetry = { tracerProvider, meterProvider, snapshotMaxAgeMs: 0 };
    app = await createTestApp({
      url: db.url,
      handlers: [TracedHandler, CountedHandler, FlakyHandler],
      inbox: { clock, telemetry, notify: false, backoff: { initialDelayMs: 1000, jitter: 0 } },
    });
    receiver = await createTestApp({ url: db.url, handlers: [TracedHandler, CountedHandler, FlakyHandler], inbox: { clock, telemetry, worker: false } });
  });

  afterAll(async () => {
    await receiver?.close();
    await app?.close();
    await meterProvider.shutdown();
    await tracerProvider.shutdown();
    trace.disable();
    context.disable();
    await db?.drop();
  });

  beforeEach(() => {
    spans.reset();
    script.mode = 'ok';
  });

  const messageId = (name: string) => `${name}-${++seq}-${Date.now()}`;
  const finished = () => spans.getFinishedSpans();
  const named = (name: string) => finished().filter((span) => span.name === name);
  const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

  it('receive, a failed attempt, its retry, the dead letter, the replay and the completion form one trace', async () => {
    const id = messageId('traced');
    const tracer = tracerProvider.getTracer('test');
    // The caller's request: the receive's `send` span is its child.
    const request = tracer.startSpan('POST /commands');
    const { entry } = await context.with(trace.setSpan(context.active(), request), () =>
      receiver.inbox.receive({ messageId: id, commandType: 'obs.traced', payload: { secret: SECRET }, correlationId: 'conversation-1', metadata: { token: METADATA_SECRET } }),
    );
    request.end();
    expect(entry.traceParent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);

    script.mode = 'fail';
    await app.processor.runOnce();
    clock.advance(5_000);
    script.mode = 'permanent';
    await app.processor.runOnce();
    expect((await receiver.inbox.get(entry.id))!.status).toBe(InboxStatus.DeadLetter);

    // The operator acts inside a request of their own.
    const operator = tracer.startSpan('POST /admin/replay');
    await context.with(trace.setSpan(context.active(), operator), () => receiver.inbox.replay(entry.id, { actor: 'alice', reason: 'fixed the rule' }));
    operator.end();
    script.mode = 'ok';
    await app.processor.runOnce();
    expect((await receiver.inbox.get(entry.id))!.status).toBe(InboxStatus.Completed);

    const [send] = named('send obs.traced');
    const attempts = named('process obs.traced');
    const [replay] = named('replay obs.traced');
    const handlerSpans = named('handler work');
    expect(attempts).toHaveLength(3);
    expect(handlerSpans).toHaveLength(3);
    // One trace, from the caller's request to the completion.
    const traceId = request.spanContext().traceId;
    for (const span of [send, ...attempts, replay, ...handlerSpans]) expect(span.spanContext().traceId).toBe(traceId);
    expect(parentOf(send)).toBe(request.spanContext().spanId);
    expect(entry.traceParent).toContain(send.spanContext().spanId);
    expect(send.kind).toBe(SpanKind.PRODUCER);
    expect(send.attributes).toMatchObject({
      'messaging.system': 'nestjs_inbox',
      'messaging.operation.type': 'send',
      'messaging.destination.name': 'obs.traced',
      'messaging.message.id': id,
      'messaging.message.conversation_id': 'conversation-1',
      'nestjs_inbox.receive.result': 'new',
    });
    // Every attempt, the retry and the replayed one too, is a child of the receive.
    for (const attempt of attempts) {
      expect(attempt.kind).toBe(SpanKind.CONSUMER);
      expect(parentOf(attempt)).toBe(send.spanContext().spanId);
    }
    expect(attempts.map((span) => [span.attributes['nestjs_inbox.attempt'], span.attributes['nestjs_inbox.outcome'], span.attributes['error.type']])).toEqual([
      [1, 'failed', 'Error'],
      [2, 'dead_letter', 'PermanentError'],
      [1, 'completed', undefined],
    ]);
    expect(attempts[1].attributes['nestjs_inbox.dead_letter.reason']).toBe('permanent_error');
    expect(attempts[0].attributes).toMatchObject({
      'messaging.system': 'nestjs_inbox',
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': 'obs.traced',
      'messaging.message.id': id,
      'messaging.message.conversation_id': 'conversation-1',
      'nestjs_inbox.entry.id': entry.id,
    });
    // The handler's own span nests under its attempt.
    for (const [index, span] of handlerSpans.entries()) expect(parentOf(span)).toBe(attempts[index].spanContext().spanId);
    // The replay: in the entry's trace, naming the operator, linked to the operator's request.
    expect(parentOf(replay)).toBe(send.spanContext().spanId);
    expect(replay.attributes['nestjs_inbox.actor']).toBe('alice');
    expect(replay.links.map((link) => link.context.spanId)).toEqual([operator.spanContext().spanId]);
  });

  it('spans a duplicate and a conflicting receive, and keeps the first receive\'s context', async () => {
    const id = messageId('dup');
    const first = await receiver.inbox.receive({ messageId: id, commandType: 'obs.counted', payload: { n: 1 } });
    const again = await receiver.inbox.receive({ messageId: id, commandType: 'obs.counted', payload: { n: 1 } });
    await expect(receiver.inbox.receive({ messageId: id, commandType: 'obs.counted', payload: { n: 2 } })).rejects.toThrow('already');
    expect(again.duplicate).toBe(true);
    expect(again.entry.traceParent).toBe(first.entry.traceParent);
    expect(named('send obs.counted').map((span) => span.attributes['nestjs_inbox.receive.result'])).toEqual(['new', 'duplicate', 'conflict']);
    expect(named('send obs.counted')[2].attributes['error.type']).toBe('IdempotencyConflictError');
    // Leaves nothing due for the tests that count what a pass did.
    await app.processor.runOnce();
  });

  it('counts what was received, processed, replayed and discarded, and times it', async () => {
    const before = await collect();
    const ok = messageId('count-ok');
    const bad = messageId('count-bad');
    await receiver.inbox.receive({ messageId: ok, commandType: 'obs.counted', payload: { n: 1 } });
    await receiver.inbox.receive({ messageId: ok, commandType: 'obs.counted', payload: { n: 1 } });
    await expect(receiver.inbox.receive({ messageId: ok, commandType: 'obs.counted', payload: { n: 9 } })).rejects.toThrow();
    const { entry } = await receiver.inbox.receive({ messageId: bad, commandType: 'obs.counted', payload: { n: 2, fail: true } });
    clock.advance(2_000); // both waited two seconds on the database's (test) clock
    await app.processor.runOnce();
    await receiver.inbox.replay(entry.id, { actor: 'bob' });
    await app.processor.runOnce();
    await receiver.inbox.discard(entry.id, { actor: 'bob', reason: 'obsolete' });
    const after = await collect();

    const counted = { 'messaging.destination.name': 'obs.counted' };
    const delta = (name: string, attributes: Attributes) => sumOf(after, name, attributes) - sumOf(before, name, attributes);
    expect(delta('nestjs_inbox.commands.received', { ...counted, 'nestjs_inbox.receive.result': 'new' })).toBe(2);
    expect(delta('nestjs_inbox.commands.received', { ...counted, 'nestjs_inbox.receive.result': 'duplicate' })).toBe(1);
    expect(delta('nestjs_inbox.commands.received', { ...counted, 'nestjs_inbox.receive.result': 'conflict' })).toBe(1);
    expect(delta('nestjs_inbox.commands.processed', { ...counted, 'nestjs_inbox.outcome': 'completed' })).toBe(1);
    expect(delta('nestjs_inbox.commands.processed', { ...counted, 'nestjs_inbox.outcome': 'dead_letter', 'nestjs_inbox.dead_letter.reason': 'permanent_error', 'error.type': 'PermanentError' })).toBe(2);
    expect(delta('nestjs_inbox.commands.replayed', counted)).toBe(1);
    expect(delta('nestjs_inbox.commands.discarded', counted)).toBe(1);
    // One handler run per attempt; the wait of both first attempts; one completion.
    expect(delta('messaging.process.duration', counted)).toBe(3);
    expect(delta('nestjs_inbox.command.wait.duration', counted)).toBe(2);
    expect(delta('nestjs_inbox.command.completion.duration', counted)).toBe(1);
    // Two first attempts, each claimed two seconds after its receive by the database's (test) clock.
    const waitSum = histogramSum(after, 'nestjs_inbox.command.wait.duration', counted) - histogramSum(before, 'nestjs_inbox.command.wait.duration', counted);
    expect(waitSum).toBeCloseTo(4, 2);
  });

  it('times the wait of an entry once, though its batch handed it back after it had run', async () => {
    const before = await collect();
    const key = messageId('key');
    // One key's run, in one batch. The third entry fails: the batch rolls back and its run goes
    // again without it; now the first fails, and the second and third, which had run already, go
    // back uncharged, still waiting behind it.
    const receive = (n: number, failOnRun: number | undefined) =>
      receiver.inbox.receive({ messageId: messageId(`flaky-${n}`), commandType: 'obs.flaky', payload: { id: `${key}-${n}`, failOnRun }, orderingKey: key });
    await receive(1, 2);
    const { entry: second } = await receive(2, undefined);
    const { entry: third } = await receive(3, 1);
    await app.processor.runOnce();
    expect([1, 2, 3].map((n) => runsOf.get(`${key}-${n}`))).toEqual([2, 1, 1]);
    for (const { id } of [second, third]) expect((await receiver.inbox.history(id)).map((record) => record.event)).toContain('released');
    clock.advance(2_000);
    await app.processor.runOnce();
    expect((await receiver.inbox.get(third.id))!.status).toBe(InboxStatus.Completed);
    expect([1, 2, 3].map((n) => runsOf.get(`${key}-${n}`))).toEqual([3, 2, 2]);
    const after = await collect();
    const flaky = { 'messaging.destination.name': 'obs.flaky' };
    // Three entries, each with one first attempt.
    expect(sumOf(after, 'nestjs_inbox.command.wait.duration', flaky) - sumOf(before, 'nestjs_inbox.command.wait.duration', flaky)).toBe(3);
  });

  it('counts every completion of a batch that holds two command types, and times each handler', async () => {
    script.mode = 'ok';
    const before = await collect();
    for (let n = 0; n < 3; n++) await receiver.inbox.receive({ messageId: messageId(`batch-counted-${n}`), commandType: 'obs.counted', payload: { n } });
    for (let n = 0; n < 2; n++) await receiver.inbox.receive({ messageId: messageId(`batch-traced-${n}`), commandType: 'obs.traced', payload: { secret: 'none' } });
    // One pass, one claim: the five entries complete in one batch.
    expect(await app.processor.runOnce()).toBe(5);
    const after = await collect();
    const delta = (name: string, attributes: Attributes) => sumOf(after, name, attributes) - sumOf(before, name, attributes);
    const completed = { 'nestjs_inbox.outcome': 'completed' };
    expect(delta('nestjs_inbox.commands.processed', { 'messaging.destination.name': 'obs.counted', ...completed })).toBe(3);
    expect(delta('nestjs_inbox.commands.processed', { 'messaging.destination.name': 'obs.traced', ...completed })).toBe(2);
    expect(delta('messaging.process.duration', { 'messaging.destination.name': 'obs.counted' })).toBe(3);
    expect(delta('messaging.process.duration', { 'messaging.destination.name': 'obs.traced' })).toBe(2);
  });

  it('reports the gauges from the shared snapshot, as the table holds them', async () => {
    await receiver.inbox.receive({ messageId: messageId('gauge'), commandType: 'obs.counted', payload: { n: 1 } });
    await receiver.inbox.receive({ messageId: messageId('gauge'), commandType: 'obs.counted', payload: { n: 1, fail: true } });
    clock.advance(60_000);
    const metrics = await collect();
    const counts = await sql<{ status: string; n: number }>(db.url, `SELECT status::text, count(*)::int AS n FROM inbox_entries GROUP BY 1`);
    const byStatus = Object.fromEntries(counts.map((row) => [row.status, row.n]));
    for (const status of [InboxStatus.Pending, InboxStatus.Failed, InboxStatus.Processing, InboxStatus.DeadLetter]) {
      expect([status, gaugeOf(metrics, 'nestjs_inbox.entries', { 'nestjs_inbox.status': status })]).toEqual([status, byStatus[status] ?? 0]);
    }
    expect(byStatus[InboxStatus.Pending]).toBeGreaterThan(1);
    const [{ open }] = await sql<{ open: number }>(db.url, `SELECT count(*)::int AS open FROM inbox_entries WHERE status = 'dead_letter' AND discarded_at IS NULL`);
    expect(gaugeOf(metrics, 'nestjs_inbox.dead_letters', {})).toBe(open);
    const [{ oldest }] = await sql<{ oldest: Date }>(db.url, `SELECT min(COALESCE(next_retry_at, received_at)) AS oldest FROM inbox_entries WHERE status IN ('pending', 'failed') AND NOT waiting`);
    expect(gaugeOf(metrics, 'nestjs_inbox.oldest_due.age', {})).toBeCloseTo((clock.now().getTime() - oldest.getTime()) / 1000, 3);
    expect(gaugeOf(metrics, 'nestjs_inbox.leases.expired', {})).toBe(0);
    await app.processor.runOnce();
  });

  it('counts the completed entries of a table the planner has no statistics for yet', async () => {
    await receiver.inbox.receive({ messageId: messageId('unanalyzed'), commandType: 'obs.counted', payload: { n: 1 } });
    await app.processor.runOnce();
    // As after a fresh install: autovacuum analyzes a table only past 50 changed rows.
    await sql(db.url, `UPDATE pg_class SET reltuples = -1 WHERE oid = 'inbox_entries'::regclass`);
    clock.advance(60_000);
    const metrics = await collect();
    const [{ completed }] = await sql<{ completed: number }>(db.url, `SELECT count(*)::int AS completed FROM inbox_entries WHERE status = 'completed'`);
    expect(completed).toBeGreaterThan(0);
    expect(gaugeOf(metrics, 'nestjs_inbox.entries', { 'nestjs_inbox.status': InboxStatus.Completed })).toBe(completed);
  });

  it('never puts a payload or metadata value in a span or a metric', async () => {
    const id = messageId('secret');
    await receiver.inbox.receive({ messageId: id, commandType: 'obs.traced', payload: { secret: SECRET }, metadata: { token: METADATA_SECRET } });
    script.mode = 'permanent';
    await app.processor.runOnce();
    const exported = JSON.stringify(
      finished().map((span) => ({ name: span.name, attributes: span.attributes, events: span.events, links: span.links, status: span.status, resource: span.resource.attributes })),
    );
    expect(exported).toContain(id); // what was exported is the attempt's
    expect(exported).not.toContain(SECRET);
    expect(exported).not.toContain(METADATA_SECRET);
    const metrics = JSON.stringify((await collect()).scopeMetrics);
    expect(metrics).toContain('obs.traced');
    expect(metrics).not.toContain(SECRET);
    expect(metrics).not.toContain(METADATA_SECRET);
  });

  it('answers a read that wants fresher figures than the read in flight with figures of its own', async () => {
    const snapshots = receiver.get(InboxSnapshots);
    const first = await snapshots.read(0);
    await receiver.inbox.receive({ messageId: messageId('fresher'), commandType: 'obs.counted', payload: { n: 1 } });
    // Both at once: the first may keep the figures from before the receive; the second wants them fresh.
    const [, fresh] = await Promise.all([snapshots.read(3_600_000), snapshots.read(0)]);
    expect(fresh.entries.pending).toBe(first.entries.pending + 1);
    await app.processor.runOnce();
  });

  it('shares one snapshot across instances: a second app reads the first one\'s figures until they are stale', async () => {
    const other = await createTestApp({ url: db.url, handlers: [CountedHandler], inbox: { worker: false, clock } });
    try {
      const mine = await receiver.get(InboxSnapshots).read(0);
      await receiver.inbox.receive({ messageId: messageId('fleet'), commandType: 'obs.counted', payload: { n: 1 } });
      const theirs = await other.get(InboxSnapshots).read(60_000);
      expect(theirs.refreshedAt).toEqual(mine.refreshedAt);
      expect(theirs.entries.pending).toBe(mine.entries.pending);
      const recounted = await other.get(InboxSnapshots).read(0);
      expect(recounted.refreshedAt.getTime()).toBeGreaterThan(mine.refreshedAt.getTime());
      expect(recounted.entries.pending).toBe(mine.entries.pending + 1);
    } finally {
      await other.close();
      await app.processor.runOnce();
    }
  });

  async function collect(): Promise<ResourceMetrics> {
    const { resourceMetrics, errors } = await reader.collect();
    expect(errors).toEqual([]);
    return resourceMetrics;
  }
});

function histogramSum(metrics: ResourceMetrics, name: string, attributes: Attributes): number {
  return pointsOf(metrics, name, attributes).reduce((sum, point) => sum + (point.value as Histogram).sum!, 0);
}

function gaugeOf(metrics: ResourceMetrics, name: string, attributes: Attributes): number {
  const points = pointsOf(metrics, name, attributes);
  expect(points).toHaveLength(1);
  return points[0].value as number;
}

describe('telemetry: a tracer and a meter that throw', () => {
  let db: TestDatabase;
  let app: TestApp;
  const exploded = () => {
    throw new Error('exporter exploded');
  };
  const tracerProvider = { getTracer: () => ({ startSpan: exploded, startActiveSpan: exploded }) };
  const meter = {
    createCounter: () => ({ add: exploded }),
    createHistogram: () => ({ record: exploded }),
    createObservableGauge: () => ({}),
    addBatchObservableCallback: () => undefined,
  };

  beforeAll(async () => {
    db = await createTestDatabase('telemetry_broken');
    app = await createTestApp({
      url: db.url,
      handlers: [CountedHandler],
      inbox: { notify: false, telemetry: { tracerProvider, meterProvider: { getMeter: () => meter } } },
    });
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('never keeps a command from being received, processed, dead-lettered, replayed or cleaned up', async () => {
    const ok = await app.inbox.receive({ messageId: 'broken-ok', commandType: 'obs.counted', payload: { n: 1 } });
    const bad = await app.inbox.receive({ messageId: 'broken-bad', commandType: 'obs.counted', payload: { n: 2, fail: true } });
    await app.processor.runOnce();
    expect((await app.inbox.get(ok.entry.id))!.status).toBe(InboxStatus.Completed);
    expect((await app.inbox.get(bad.entry.id))!.status).toBe(InboxStatus.DeadLetter);
    expect((await app.inbox.replay(bad.entry.id, { actor: 'ops' })).status).toBe(InboxStatus.Pending);
    expect(await app.inbox.replayMany({ commandType: 'obs.counted' }, { actor: 'ops', dryRun: true })).toMatchObject({ dryRun: true });
    await expect(app.get(InboxRetention).runOnce()).resolves.toMatchObject({ deleted: 0 });
  });
});

describe('telemetry: spans that throw when given attributes', () => {
  let db: TestDatabase;
  let app: TestApp;
  const exploded = () => {
    throw new Error('exporter exploded');
  };
  const context = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 };
  const span = { setAttribute: exploded, setAttributes: exploded, setStatus: exploded, isRecording: () => true, spanContext: () => context, end: () => undefined };
  const tracer = { startSpan: () => span, startActiveSpan: (_name: string, _options: unknown, work: (started: typeof span) => unknown) => work(span) };

  beforeAll(async () => {
    db = await createTestDatabase('telemetry_attributes');
    app = await createTestApp({ url: db.url, handlers: [CountedHandler], inbox: { notify: false, telemetry: { tracerProvider: { getTracer: () => tracer } as never } } });
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('still sweeps expired leases, replays in bulk and cleans up', async () => {
    const { entry } = await app.inbox.receive({ messageId: 'attributes-lease', commandType: 'obs.counted', payload: { n: 1 } });
    // A claim whose worker vanished: its lease ran out a minute ago.
    await sql(db.url, `UPDATE inbox_entries SET status = 'processing', locked_by = 'gone', lock_token = gen_random_uuid(), locked_until = now() - interval '1 minute' WHERE id = $1`, [entry.id]);
    await app.processor.runOnce();
    // Handed back by the sweep, it ran in the same pass.
    expect(await app.inbox.get(entry.id)).toMatchObject({ status: InboxStatus.Completed });
    const bad = await app.inbox.receive({ messageId: 'attributes-bad', commandType: 'obs.counted', payload: { n: 2, fail: true } });
    await app.processor.runOnce();
    expect(await app.inbox.replayMany({ commandType: 'obs.counted' }, { actor: 'ops' })).toMatchObject({ matched: 1, replayed: 1 });
    // Replayed (the worker may already be running it again): its history says so.
    expect((await app.inbox.history(bad.entry.id)).map((record) => record.event)).toContain('replayed');
    await expect(app.get(InboxRetention).runOnce()).resolves.toMatchObject({ deleted: 0 });
  });
});

/** Where MeddlingHandler reaches the database from outside its batch, and the proxy its worker talks through. */
const meddling: { url: string; proxy?: TcpProxy } = { url: '' };

/**
 * Takes the claim of another entry of its batch away (as a lease sweep would once the lease ran
 * out): the update waits for the batch's lock, and the handler fails once it is queued. The
 * batch's next lock (its run again, after the rollback) waits for that update to commit: the
 * server would let either go first.
 */
@Injectable()
@InboxHandler('obs.meddling')
class MeddlingHandler implements InboxCommandHandler<{ victim: string }> {
  async execute(command: { victim: string }): Promise<void> {
    await takeClaimAway(meddling.url, meddling.proxy!, command.victim);
    throw new Error('fails after taking a claim away');
  }
}

describe('telemetry: a completion committed before its batch could record a failure', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let app: TestApp;
  const spans = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  const reader = new OnDemandReader();
  const meterProvider = new MeterProvider({ readers: [reader] });

  beforeAll(async () => {
    db = await createTestDatabase('telemetry_lost_answer');
    proxy = proxyFor(db.url);
    const url = await proxy.start(db.url);
    // One batch at a time: both commands run in the same batch.
    app = await createTestApp({ url, handlers: [CountedHandler], inbox: { notify: false, concurrency: 1, telemetry: { tracerProvider, meterProvider } } });
  });

  afterAll(async () => {
    await app?.close();
    await proxy?.close();
    await meterProvider.shutdown();
    await tracerProvider.shutdown();
    await db?.drop();
  });

  it('is counted and its span ended when the answer to the failure record is lost', async () => {
    // The batch commits the completion, then records the failure: that answer never arrives.
    proxy.dropAnswerOnce('nestjs_inbox_fail_');
    // Stored in one statement: the worker's wake-up finds both, and runs them in one batch.
    await app.inbox.receiveMany([
      { messageId: 'lost-answer-ok', commandType: 'obs.counted', payload: { n: 1 } },
      { messageId: 'lost-answer-refused', commandType: 'obs.counted', payload: { n: 2, fail: true } },
    ]);
    const doneId = (await app.inbox.findByMessageId('lost-answer-ok'))!.id;
    await app.processor.runOnce();
    expect(proxy.droppedAnswers).toBe(1);
    expect((await app.inbox.get(doneId))!.status).toBe(InboxStatus.Completed);
    const { resourceMetrics } = await reader.collect();
    expect(sumOf(resourceMetrics, 'nestjs_inbox.commands.processed', { 'nestjs_inbox.outcome': 'completed' })).toBe(1);
    const ended = spans.getFinishedSpans().filter((span) => span.attributes['nestjs_inbox.entry.id'] === doneId);
    expect(ended.map((span) => span.attributes['nestjs_inbox.outcome'])).toEqual(['completed']);
  });
});

describe('telemetry: an entry whose claim is lost between two runs of its batch', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let app: TestApp;
  let receiver: TestApp;
  const spans = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });

  beforeAll(async () => {
    db = await createTestDatabase('telemetry_lost_claim');
    meddling.url = db.url;
    proxy = meddling.proxy = proxyFor(db.url);
    const url = await proxy.start(db.url);
    // One batch at a time: both commands run in the same batch.
    app = await createTestApp({ url, handlers: [CountedHandler, MeddlingHandler], inbox: { notify: false, concurrency: 1, telemetry: { tracerProvider } } });
    receiver = await createTestApp({ url: db.url, inbox: { worker: false, notify: false } });
    // The pass every worker starts at boot is over before the first command arrives.
    await app.processor.runOnce();
  });

  afterAll(async () => {
    await receiver?.close();
    await app?.close();
    await proxy?.close();
    await tracerProvider.shutdown();
    await db?.drop();
  });

  it('ends its span', async () => {
    // Received by an application without a worker: nothing runs until the pass below, which finds
    // both and runs them in one batch, in the order received.
    const { entry: victim } = await receiver.inbox.receive({ messageId: 'lost-claim-victim', commandType: 'obs.counted', payload: { n: 3 } });
    await receiver.inbox.receive({ messageId: 'lost-claim-meddler', commandType: 'obs.meddling', payload: { victim: 'lost-claim-victim' } });
    const victimId = victim.id;
    await app.processor.runOnce();
    expect(proxy.heldRequests).toBe(1);
    const ran = spans.getFinishedSpans().filter((span) => span.attributes['nestjs_inbox.entry.id'] === victimId);
    expect(ran.map((span) => span.attributes['nestjs_inbox.outcome'])).toEqual(['not_recorded']);
  });
});
