import { Inject, Injectable, Logger } from '@nestjs/common';
import type { Attributes, Counter, Histogram, Meter } from '@opentelemetry/api';
import { INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import { INBOX_STATUSES } from '../state/inbox-state-machine';
import { CommandTypeCache } from './command-type-cache';
import { ATTR, MESSAGING_SYSTEM, METRIC, type AttemptOutcomeName, type ReceiveResultName } from './attributes';
import { InboxSnapshots } from './inbox-snapshot';
import { INSTRUMENTATION_SCOPE, openTelemetry } from './opentelemetry';

interface Instruments {
  received: Counter;
  processed: Counter;
  replayed: Counter;
  discarded: Counter;
  processDuration: Histogram;
  completionDuration: Histogram;
  waitDuration: Histogram;
}

/** Histogram buckets in seconds, from a fast handler (1 ms) to a long wait (an hour). */
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

/**
 * The library's metrics (OpenTelemetry metrics API): counters of what was received, processed,
 * replayed and discarded; histograms of handler time, receive-to-completion and receive-to-first
 * attempt; gauges of the entries by status, the oldest due entry's age, open dead letters and
 * expired leases, read from the fleet's shared snapshot when a reader collects them (so nothing is
 * counted unless someone reads the metrics). Without the API installed every method returns at once.
 */
@Injectable()
export class InboxMetrics {
  private readonly logger = new Logger('InboxMetrics');
  private warned = false;
  private instruments: Instruments | undefined;
  // One frozen attribute object per combination, so that no object is built per record.
  /** The received counter's, by command type and result. */
  private readonly receivedAttributes = new CommandTypeCache<Attributes>();
  /** The processed counter's, by command type and outcome (with its error and reason). */
  private readonly processedAttributes = new CommandTypeCache<Attributes>();
  /** The others', by command type and 'destination', or 'duration' (with the error). */
  private readonly attributes = new CommandTypeCache<Attributes>();

  constructor(@Inject(INBOX_RESOLVED_OPTIONS) options: ResolvedInboxOptions, snapshots: InboxSnapshots) {
    const provider = options.telemetry.meterProvider ?? openTelemetry?.metrics;
    if (!openTelemetry || !provider) return;
    try {
      const meter = provider.getMeter(INSTRUMENTATION_SCOPE.name, INSTRUMENTATION_SCOPE.version) as Meter;
      const seconds = (name: string, description: string) => meter.createHistogram(name, { unit: 's', description, advice: { explicitBucketBoundaries: DURATION_BUCKETS } });
      this.instruments = {
        received: meter.createCounter(METRIC.received, { unit: '{command}', description: 'Commands received, by result (new, duplicate, conflict, error).' }),
        processed: meter.createCounter(METRIC.processed, { unit: '{attempt}', description: 'Attempts recorded, by outcome (completed, failed, dead_letter with its reason).' }),
        replayed: meter.createCounter(METRIC.replayed, { unit: '{command}', description: 'Entries an operator replayed.' }),
        discarded: meter.createCounter(METRIC.discarded, { unit: '{command}', description: 'Dead letters an operator discarded.' }),
        processDuration: seconds(METRIC.processDuration, 'How long handlers ran.'),
        completionDuration: seconds(METRIC.completionDuration, 'From receive to completion.'),
        waitDuration: seconds(METRIC.waitDuration, 'From receive to the first attempt.'),
      };
      this.observeSnapshot(meter, snapshots);
    } catch (error) {
      // A meter provider that fails here leaves the inbox without metrics, not without its work.
      this.instruments = undefined;
      this.warn(error);
    }
  }

  received(commandType: string, result: ReceiveResultName): void {
    try {
      if (!this.instruments) return;
      this.instruments.received.add(1, this.receivedAttributes.get(commandType, result, () => ({ ...destination(commandType), [ATTR.receiveResult]: result })));
    } catch (error) {
      this.warn(error);
    }
  }

  /** An attempt whose outcome was recorded; `seconds`: its handler's time, when a handler ran. */
  processed(commandType: string, outcome: AttemptOutcomeName, seconds: number | null, errorType: string | null, deadLetterReason: string | null): void {
    try {
      if (!this.instruments) return;
      this.count(commandType, outcome, 1, errorType, deadLetterReason);
      if (seconds !== null) this.handlerTime(commandType, seconds, errorType);
    } catch (error) {
      this.warn(error);
    }
  }

  /**
   * A batch's completed attempts: each handler's time, and the count with one add per command type
   * (the SDK hashes the attributes on every add, whatever it adds).
   */
  completed<T>(attempts: readonly T[], commandTypeOf: (attempt: T) => string, secondsOf: (attempt: T) => number): void {
    try {
      if (!this.instruments) return;
      const counts = new Map<string, number>();
      for (const attempt of attempts) {
        const commandType = commandTypeOf(attempt);
        this.handlerTime(commandType, secondsOf(attempt), null);
        counts.set(commandType, (counts.get(commandType) ?? 0) + 1);
      }
      for (const [commandType, count] of counts) this.count(commandType, 'completed', count, null, null);
    } catch (error) {
      this.warn(error);
    }
  }

  private count(commandType: string, outcome: AttemptOutcomeName, count: number, errorType: string | null, deadLetterReason: string | null): void {
    // A completion (the usual record) builds no key string.
    const variant = errorType === null && deadLetterReason === null ? outcome : `${outcome}\u0000${errorType ?? ''}\u0000${deadLetterReason ?? ''}`;
    this.instruments!.processed.add(
      count,
      this.processedAttributes.get(commandType, variant, () => {
        const attributes: Attributes = { ...destination(commandType), [ATTR.outcome]: outcome };
        if (errorType) attributes[ATTR.errorType] = errorType;
        if (deadLetterReason) attributes[ATTR.deadLetterReason] = deadLetterReason;
        return attributes;
      }),
    );
  }

  private handlerTime(commandType: string, seconds: number, errorType: string | null): void {
    const attributes = this.attributes.get(commandType, errorType === null ? 'duration' : `duration\u0000${errorType}`, () => ({
      ...destination(commandType),
      [ATTR.operationName]: 'process',
      ...(errorType ? { [ATTR.errorType]: errorType } : {}),
    }));
    this.instruments!.processDuration.record(seconds, attributes);
  }

  /** From receive to completion, and (for a first attempt) to the attempt's start. */
  timings(commandType: string, completedAfterMs: number | null, waitedMs: number | null): void {
    try {
      if (!this.instruments) return;
      const attributes = this.destination(commandType);
      if (completedAfterMs !== null) this.instruments.completionDuration.record(Math.max(0, completedAfterMs) / 1000, attributes);
      if (waitedMs !== null) this.instruments.waitDuration.record(Math.max(0, waitedMs) / 1000, attributes);
    } catch (error) {
      this.warn(error);
    }
  }

  replayed(commandType: string): void {
    try {
      this.instruments?.replayed.add(1, this.destination(commandType));
    } catch (error) {
      this.warn(error);
    }
  }

  discarded(commandType: string): void {
    try {
      this.instruments?.discarded.add(1, this.destination(commandType));
    } catch (error) {
      this.warn(error);
    }
  }

  /** A meter that throws is reported once; the inbox's work goes on without the record. */
  private warn(error: unknown): void {
    if (this.warned) return;
    this.warned = true;
    this.logger.warn(`Metrics failed and are skipped where they fail (reported once): ${error instanceof Error ? error.message : String(error)}`);
  }

  private destination(commandType: string): Attributes {
    return this.attributes.get(commandType, 'destination', () => destination(commandType));
  }

  private observeSnapshot(meter: Meter, snapshots: InboxSnapshots): void {
    const entries = meter.createObservableGauge(METRIC.entries, { unit: '{entry}', description: 'Entries by status (Completed estimated from table statistics).' });
    const oldestDueAge = meter.createObservableGauge(METRIC.oldestDueAge, { unit: 's', description: 'How long the oldest due entry has waited.' });
    const openDeadLetters = meter.createObservableGauge(METRIC.openDeadLetters, { unit: '{entry}', description: 'Dead letters not discarded.' });
    const expiredLeases = meter.createObservableGauge(METRIC.expiredLeases, { unit: '{entry}', description: 'Claims whose lease ran out.' });
    meter.addBatchObservableCallback(
      async (result) => {
        const snapshot = await snapshots.read().catch((error: unknown) => {
          this.logger.warn(`Inbox gauges not read: ${(error as Error).message}`);
          return undefined;
        });
        if (!snapshot) return;
        const system = { [ATTR.messagingSystem]: MESSAGING_SYSTEM };
        for (const status of INBOX_STATUSES) result.observe(entries, snapshot.entries[status], { ...system, [ATTR.status]: status });
        result.observe(oldestDueAge, snapshot.oldestDueAgeMs / 1000, system);
        result.observe(openDeadLetters, snapshot.openDeadLetters, system);
        result.observe(expiredLeases, snapshot.expiredLeases, system);
      },
      [entries, oldestDueAge, openDeadLetters, expiredLeases],
    );
  }
}

function destination(commandType: string): Attributes {
  return { [ATTR.messagingSystem]: MESSAGING_SYSTEM, [ATTR.destinationName]: commandType };
}
