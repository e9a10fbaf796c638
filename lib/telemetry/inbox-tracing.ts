import { Inject, Injectable, Logger } from '@nestjs/common';
import type { Attributes, Context, Link, Span, Tracer } from '@opentelemetry/api';
import { IdempotencyConflictError } from '../errors/inbox.error';
import { INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import type { ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import type { InboxRow } from '../store/schema';
import { CommandTypeCache } from './command-type-cache';
import { ATTR, MESSAGING_SYSTEM, type AttemptOutcomeName, type ReceiveResultName } from './attributes';
import { INSTRUMENTATION_SCOPE, openTelemetry } from './opentelemetry';
import { fromStoredContext, toStoredContext, type StoredTraceContext } from './trace-context';

// Numeric values of the API's enums, so that this file needs the API only when it is installed.
const SPAN_KIND = { internal: 0, producer: 3, consumer: 4 } as const;
const STATUS_ERROR = 2;

/** Adds attributes to a span of internal work (see InboxTracing.internal). */
export type RecordAttributes = (attributes: Attributes) => void;

const IGNORE_ATTRIBUTES: RecordAttributes = () => undefined;

/** An attempt's span and the context its handler runs in. */
export interface AttemptSpan {
  span: Span;
  context: Context;
}

/** What the receive stored, for the `send` span. */
export interface SendFacts {
  commandType: string;
  messageId: string;
  correlationId: string | null;
}

/**
 * The library's spans (OpenTelemetry messaging conventions): `send <type>` around a receive, whose
 * context is stored on the entry; `process <type>` for every attempt, a child of that stored
 * context, so retries and replays stay in the receive's trace; operator actions and the
 * background sweeps. Without the OpenTelemetry API installed every method only runs its work.
 */
@Injectable()
export class InboxTracing {
  private readonly logger = new Logger('InboxTelemetry');
  private warned = false;
  private readonly tracer: Tracer | undefined;
  /** What a sampler may look at (system, operation, command type): one object per type and operation. */
  private readonly base = new CommandTypeCache<Attributes>();
  /** `send <type>`, `process <type>`: one string per type and operation. */
  private readonly names = new CommandTypeCache<string>();

  constructor(@Inject(INBOX_RESOLVED_OPTIONS) options: ResolvedInboxOptions) {
    const provider = options.telemetry.tracerProvider ?? openTelemetry?.trace;
    this.tracer = openTelemetry && provider ? this.guard(undefined, () => provider.getTracer(INSTRUMENTATION_SCOPE.name, INSTRUMENTATION_SCOPE.version) as Tracer) : undefined;
  }

  /**
   * Runs a receive in its `send` span, a child of the caller's active context; `store` is given the
   * span's context to store with the entry (a duplicate keeps the one stored first).
   */
  async send<T extends { duplicate: boolean }>(facts: SendFacts, store: (context: StoredTraceContext | null) => Promise<T>): Promise<T> {
    if (!this.tracer) return store(null);
    const span = this.guard(undefined, () => {
      const started = this.tracer!.startSpan(this.spanName('send', facts.commandType), { kind: SPAN_KIND.producer, attributes: this.baseAttributes('send', facts.commandType) });
      // The message's own attributes only on a span that keeps them.
      if (started.isRecording()) started.setAttributes(messageAttributes(facts.messageId, facts.correlationId));
      return started;
    });
    if (!span) return store(null);
    try {
      const result = await store(this.guard(null, () => toStoredContext(span.spanContext())));
      this.guard(undefined, () => span.isRecording() && span.setAttribute(ATTR.receiveResult, (result.duplicate ? 'duplicate' : 'new') satisfies ReceiveResultName));
      return result;
    } catch (error) {
      this.guard(undefined, () => {
        if (!span.isRecording()) return;
        span.setAttribute(ATTR.receiveResult, (error instanceof IdempotencyConflictError ? 'conflict' : 'error') satisfies ReceiveResultName);
        markFailed(span, error);
      });
      throw error;
    } finally {
      this.guard(undefined, () => span.end());
    }
  }

  /**
   * Runs a batch receive in one `send` span (named after the batch's command type, or `send batch`
   * when it holds several), whose context every new entry of the batch stores.
   */
  async sendBatch<T>(commandType: string | null, count: number, store: (context: StoredTraceContext | null) => Promise<T>): Promise<T> {
    if (!this.tracer) return store(null);
    const span = this.guard(undefined, () => {
      const started = this.tracer!.startSpan(commandType === null ? 'send batch' : `send ${commandType}`, {
        kind: SPAN_KIND.producer,
        attributes: commandType === null ? { [ATTR.messagingSystem]: MESSAGING_SYSTEM, [ATTR.operationType]: 'send', [ATTR.operationName]: 'send' } : this.baseAttributes('send', commandType),
      });
      if (started.isRecording()) started.setAttribute(ATTR.batchMessageCount, count);
      return started;
    });
    if (!span) return store(null);
    try {
      return await store(this.guard(null, () => toStoredContext(span.spanContext())));
    } catch (error) {
      this.guard(undefined, () => span.isRecording() && markFailed(span, error));
      throw error;
    } finally {
      this.guard(undefined, () => span.end());
    }
  }

  /** Opens an attempt's `process` span, a child of the context its receive stored. */
  startAttempt(row: InboxRow): AttemptSpan | undefined {
    if (!this.tracer) return undefined;
    return this.guard(undefined, (): AttemptSpan | undefined => {
      const api = openTelemetry!;
      const parent = parentContextOf(row);
      const span = this.tracer!.startSpan(this.spanName('process', row.command_type), { kind: SPAN_KIND.consumer, attributes: this.baseAttributes('process', row.command_type) }, parent);
      if (span.isRecording()) {
        const attributes = messageAttributes(row.message_id, row.correlation_id);
        attributes[ATTR.entryId] = row.id;
        attributes[ATTR.attempt] = row.retry_count + 1;
        span.setAttributes(attributes);
      } else if (!api.trace.isSpanContextValid(span.spanContext())) {
        // A no-op span with no trace to continue: nothing would read its context.
        return undefined;
      }
      return { span, context: api.trace.setSpan(parent, span) };
    });
  }

  /** Runs a handler in its attempt's context: the spans it starts are the attempt's children. */
  runInAttempt<T>(attempt: AttemptSpan | undefined, work: () => T): T {
    return attempt ? openTelemetry!.context.with(attempt.context, work) : work();
  }

  /** Ends an attempt's span with its outcome (and, for a failure, its error's class). */
  endAttempt(attempt: AttemptSpan | undefined, outcome: AttemptOutcomeName, error?: unknown, deadLetterReason?: string | null): void {
    if (!attempt) return;
    this.guard(undefined, () => {
      if (attempt.span.isRecording()) {
        attempt.span.setAttribute(ATTR.outcome, outcome);
        if (deadLetterReason) attempt.span.setAttribute(ATTR.deadLetterReason, deadLetterReason);
        if (error !== undefined) markFailed(attempt.span, error);
      }
      attempt.span.end();
    });
  }

  /**
   * Records an operator's action on an entry (`replay`, `discard`, `dead_letter`) as a span in the
   * entry's trace, linked to the operator's own active context (its parent when the entry has no
   * trace), from `startTime` until now.
   */
  operatorAction(action: string, row: InboxRow, actor: string | null, startTime: number): void {
    if (!this.tracer) return;
    this.guard(undefined, () => this.recordOperatorAction(action, row, actor, startTime));
  }

  private recordOperatorAction(action: string, row: InboxRow, actor: string | null, startTime: number): void {
    const api = openTelemetry!;
    const operator = api.trace.getSpanContext(api.context.active());
    const links: Link[] = operator && api.trace.isSpanContextValid(operator) ? [{ context: operator }] : [];
    const span = this.tracer!.startSpan(
      `${action} ${row.command_type}`,
      {
        kind: SPAN_KIND.internal,
        startTime,
        links,
        attributes: {
          ...this.baseAttributes(action, row.command_type),
          ...messageAttributes(row.message_id, row.correlation_id),
          [ATTR.entryId]: row.id,
          ...(actor ? { [ATTR.actor]: actor } : {}),
        },
      },
      row.trace_parent ? parentContextOf(row) : api.context.active(),
    );
    span.end();
  }

  /** Runs telemetry work; a tracer that throws is reported once and never fails the inbox's work. */
  private guard<R>(fallback: R, work: () => R): R {
    try {
      return work();
    } catch (error) {
      this.warn(error);
      return fallback;
    }
  }

  private warn(error: unknown): void {
    if (this.warned) return;
    this.warned = true;
    this.logger.warn(`Tracing failed and is skipped where it fails (reported once): ${error instanceof Error ? error.message : String(error)}`);
  }

  /** System, operation and command type: the same frozen object for every message of a type. */
  private baseAttributes(operation: string, commandType: string): Attributes {
    return this.base.get(commandType, operation, () => ({
      [ATTR.messagingSystem]: MESSAGING_SYSTEM,
      [ATTR.operationType]: operation === 'send' || operation === 'process' ? operation : 'settle',
      [ATTR.operationName]: operation,
      [ATTR.destinationName]: commandType,
    }));
  }

  private spanName(operation: 'send' | 'process', commandType: string): string {
    return this.names.get(commandType, operation, () => `${operation} ${commandType}`);
  }

  /**
   * Runs background or bulk work (the lease sweep, retention, a bulk replay) in a span of its own.
   * `record` adds attributes to it as the work learns them; a span that throws is skipped there too.
   */
  async internal<T>(name: string, attributes: Attributes, work: (record: RecordAttributes) => Promise<T>): Promise<T> {
    if (!this.tracer) return work(IGNORE_ATTRIBUTES);
    let started = false;
    try {
      return await this.tracer.startActiveSpan(name, { kind: SPAN_KIND.internal, attributes: { [ATTR.messagingSystem]: MESSAGING_SYSTEM, ...attributes } }, async (span) => {
        started = true;
        try {
          return await work((added) => this.guard(undefined, () => span.setAttributes(added)));
        } catch (error) {
          this.guard(undefined, () => markFailed(span, error));
          throw error;
        } finally {
          this.guard(undefined, () => span.end());
        }
      });
    } catch (error) {
      if (started) throw error;
      this.warn(error);
      // A tracer that fails before the work starts does not keep the work from running.
      return work(IGNORE_ATTRIBUTES);
    }
  }

}

function messageAttributes(messageId: string, correlationId: string | null): Attributes {
  return correlationId === null ? { [ATTR.messageId]: messageId } : { [ATTR.messageId]: messageId, [ATTR.conversationId]: correlationId };
}

/** The stored context as a remote parent; the root context when the entry has none. */
function parentContextOf(row: InboxRow): Context {
  const api = openTelemetry!;
  const stored = fromStoredContext(row.trace_parent, row.trace_state);
  return stored ? api.trace.setSpanContext(api.ROOT_CONTEXT, stored) : api.ROOT_CONTEXT;
}

/** Error status with the error's class as `error.type`; the message, which a handler wrote, as the status text. */
function markFailed(span: Span, error: unknown): void {
  span.setAttribute(ATTR.errorType, error instanceof Error ? error.name : typeof error);
  span.setStatus({ code: STATUS_ERROR, message: error instanceof Error ? error.message.slice(0, 500) : undefined });
}
