import type { SpanContext } from '@opentelemetry/api';
import { openTelemetry } from './opentelemetry';

/** A trace context as stored on an entry: W3C `traceparent` and `tracestate`. */
export interface StoredTraceContext {
  traceParent: string;
  traceState: string | null;
}

const TRACE_PARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const INVALID_TRACE_ID = '0'.repeat(32);
const INVALID_SPAN_ID = '0'.repeat(16);
/** The column's width; a longer `tracestate` is dropped rather than cut (a cut one is invalid). */
const MAX_TRACE_STATE_LENGTH = 512;

/**
 * The W3C form of a span context, written by hand rather than through the global propagator: the
 * stored columns are W3C's whatever propagator the application configured, and no SDK package is
 * needed to write them.
 */
export function toStoredContext(spanContext: SpanContext): StoredTraceContext | null {
  const { traceId, spanId, traceFlags } = spanContext;
  if (traceId === INVALID_TRACE_ID || spanId === INVALID_SPAN_ID || !/^[0-9a-f]{32}$/.test(traceId) || !/^[0-9a-f]{16}$/.test(spanId)) return null;
  const state = spanContext.traceState?.serialize() ?? '';
  return {
    traceParent: `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, '0')}`,
    traceState: state.length > 0 && state.length <= MAX_TRACE_STATE_LENGTH ? state : null,
  };
}

/** The span context stored on an entry, as a remote parent; null when none (or not a valid one) was stored. */
export function fromStoredContext(traceParent: string | null, traceState: string | null): SpanContext | null {
  if (!traceParent || !openTelemetry) return null;
  const match = TRACE_PARENT.exec(traceParent);
  if (!match || match[1] === INVALID_TRACE_ID || match[2] === INVALID_SPAN_ID) return null;
  return {
    traceId: match[1],
    spanId: match[2],
    traceFlags: parseInt(match[3], 16),
    isRemote: true,
    traceState: traceState ? openTelemetry.createTraceState(traceState) : undefined,
  };
}
