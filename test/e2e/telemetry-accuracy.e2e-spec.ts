import { Injectable } from '@nestjs/common';
import type { Attributes } from '@opentelemetry/api';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { IsInt } from 'class-validator';
import { InboxHandler, InboxStatus, type InboxCommandHandler } from 'nestjs-inbox';
import { createTestApp, type TestApp } from '../support/test-app';
import { createTestDatabase, type TestDatabase } from '../support/test-database';
import { proxyFor, type TcpProxy } from '../support/tcp-proxy';
import { OnDemandReader, sumOf, takeClaimAway } from '../support/telemetry';

@Injectable()
@InboxHandler('telemetry.ok')
class OkHandler implements InboxCommandHandler<{ n: number }> {
  async execute(): Promise<void> {}
}

class Typed {
  @IsInt() n!: number;
}

const typedRuns = { count: 0 };
@Injectable()
@InboxHandler('telemetry.typed', { payload: Typed })
class TypedHandler implements InboxCommandHandler<Typed> {
  async execute(): Promise<void> {
    typedRuns.count++;
  }
}

const meddling: { url: string; proxy?: TcpProxy } = { url: '' };

/** Takes the claim of another entry of its batch away (as a lease sweep then a claim would), then fails. */
@Injectable()
@InboxHandler('telemetry.meddling')
class MeddlingHandler implements InboxCommandHandler<{ victim: string }> {
  async execute(command: { victim: string }): Promise<void> {
    await takeClaimAway(meddling.url, meddling.proxy!, command.victim);
    throw new Error('fails after taking a claim away');
  }
}

describe('telemetry: a keyed entry whose claim is lost between two runs of its batch', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let app: TestApp;
  let receiver: TestApp;
  const spans = new InMemorySpanExporter();
  /** The entries whose `process` span was started. */
  const started: Array<{ attributes: Attributes }> = [];
  const onStart = { onStart: (span: { attributes: Attributes }) => started.push(span), onEnd: () => undefined, forceFlush: async () => undefined, shutdown: async () => undefined };
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans), onStart as never] });

  beforeAll(async () => {
    db = await createTestDatabase('telemetry_keyed_claim');
    meddling.url = db.url;
    proxy = meddling.proxy = proxyFor(db.url);
    const url = await proxy.start(db.url);
    app = await createTestApp({ url, handlers: [OkHandler, MeddlingHandler], inbox: { notify: false, concurrency: 1, telemetry: { tracerProvider } } });
    receiver = await createTestApp({ url: db.url, inbox: { worker: false, notify: false } });
    await app.processor.runOnce();
  });

  afterAll(async () => {
    await receiver?.close();
    await app?.close();
    await proxy?.close();
    await tracerProvider.shutdown();
    await db?.drop();
  });

  it('ends its span (the entry has an ordering key, alone in its run)', async () => {
    const { entry: victim } = await receiver.inbox.receive({ messageId: 'keyed-victim', commandType: 'telemetry.ok', payload: { n: 1 }, orderingKey: 'acct-1' });
    await receiver.inbox.receive({ messageId: 'keyed-meddler', commandType: 'telemetry.meddling', payload: { victim: 'keyed-victim' } });
    await app.processor.runOnce();
    expect(proxy.heldRequests).toBe(1);
    // The victim's handler ran in the first run (its span opened); its claim was gone at the rerun.
    expect(started.filter((span) => span.attributes['nestjs_inbox.entry.id'] === victim.id)).toHaveLength(1);
    await tracerProvider.forceFlush();
    const ended = spans.getFinishedSpans().filter((span) => span.attributes['nestjs_inbox.entry.id'] === victim.id);
    expect(ended.map((span) => span.attributes['nestjs_inbox.outcome'])).toEqual(['not_recorded']);
  });
});

describe('telemetry: an attempt whose command cannot be made (invalid payload)', () => {
  let db: TestDatabase;
  let app: TestApp;
  let receiver: TestApp;
  const reader = new OnDemandReader();
  const meterProvider = new MeterProvider({ readers: [reader] });

  beforeAll(async () => {
    db = await createTestDatabase('telemetry_invalid');
    app = await createTestApp({ url: db.url, handlers: [TypedHandler], inbox: { notify: false, telemetry: { meterProvider } } });
    // Without the handler: the payload is not checked at the receive.
    receiver = await createTestApp({ url: db.url, inbox: { worker: false, notify: false } });
    await app.processor.runOnce();
  });

  afterAll(async () => {
    await receiver?.close();
    await app?.close();
    await meterProvider.shutdown();
    await db?.drop();
  });

  it('records no handler time: its handler never ran', async () => {
    const { entry } = await receiver.inbox.receive({ messageId: 'typed-bad', commandType: 'telemetry.typed', payload: { n: 'not a number' } });
    await app.processor.runOnce();
    expect((await app.inbox.get(entry.id))!.status).toBe(InboxStatus.DeadLetter);
    expect(typedRuns.count).toBe(0);
    const { resourceMetrics } = await reader.collect();
    const typed = { 'messaging.destination.name': 'telemetry.typed' };
    expect(sumOf(resourceMetrics, 'nestjs_inbox.commands.processed', { ...typed, 'nestjs_inbox.outcome': 'dead_letter' })).toBe(1);
    // messaging.process.duration is "how long handlers ran": none ran.
    expect(sumOf(resourceMetrics, 'messaging.process.duration', typed)).toBe(0);
  });
});

describe('telemetry: receiveMany, all or nothing, refused for one conflict', () => {
  let db: TestDatabase;
  let app: TestApp;
  const reader = new OnDemandReader();
  const meterProvider = new MeterProvider({ readers: [reader] });

  beforeAll(async () => {
    db = await createTestDatabase('telemetry_many');
    app = await createTestApp({ url: db.url, inbox: { worker: false, notify: false, telemetry: { meterProvider } } });
  });

  afterAll(async () => {
    await app?.close();
    await meterProvider.shutdown();
    await db?.drop();
  });

  it('counts one conflict, not every command of the batch', async () => {
    await app.inbox.receive({ messageId: 'many-taken', commandType: 'telemetry.ok', payload: { n: 1 } });
    const before = (await reader.collect()).resourceMetrics;
    const batch = Array.from({ length: 5 }, (_, n) => ({ messageId: `many-${n}`, commandType: 'telemetry.ok', payload: { n } }));
    batch.push({ messageId: 'many-taken', commandType: 'telemetry.ok', payload: { n: 999 } });
    await expect(app.inbox.receiveMany(batch, { allOrNothing: true })).rejects.toThrow();
    const after = (await reader.collect()).resourceMetrics;
    const delta = (result: string) =>
      sumOf(after, 'nestjs_inbox.commands.received', { 'nestjs_inbox.receive.result': result }) - sumOf(before, 'nestjs_inbox.commands.received', { 'nestjs_inbox.receive.result': result });
    // Nothing was stored.
    expect(await app.inbox.findByMessageId('many-0')).toBeNull();
    // One command conflicted; the five others were refused with it (not conflicts of their own).
    expect(delta('conflict')).toBe(1);
  });
});
