import type { Attributes } from '@opentelemetry/api';
import { AggregationTemporality, MetricReader, type DataPoint, type Histogram, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { TcpProxy } from './tcp-proxy';
import { waitFor } from './test-app';
import { sql } from './test-database';

/** Collects on demand (a reader with no schedule of its own). */
export class OnDemandReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

/** The data points of a metric whose attributes include `attributes`. */
export function pointsOf(metrics: ResourceMetrics, name: string, attributes: Attributes): Array<DataPoint<unknown>> {
  return metrics.scopeMetrics
    .flatMap((scope) => scope.metrics)
    .filter((metric) => metric.descriptor.name === name)
    .flatMap((metric) => metric.dataPoints as Array<DataPoint<unknown>>)
    .filter((point) => Object.entries(attributes).every(([key, value]) => point.attributes[key] === value));
}

/** A counter's sum, or a histogram's count, over the matching points. */
export function sumOf(metrics: ResourceMetrics, name: string, attributes: Attributes): number {
  return pointsOf(metrics, name, attributes).reduce((sum, point) => sum + (typeof point.value === 'number' ? point.value : (point.value as Histogram).count), 0);
}

/**
 * From a handler: takes the claim of another entry of its batch away (as a lease sweep would once
 * the lease ran out). The update waits for the batch's lock; the batch's next lock (its run again,
 * after the handler fails) is held at `proxy` until the update has committed, as the server could
 * let either go first. Resolves once the update is queued.
 */
export async function takeClaimAway(url: string, proxy: TcpProxy, victimMessageId: string): Promise<void> {
  const update = sql(url, `UPDATE inbox_entries SET lock_token = gen_random_uuid() WHERE message_id = $1`, [victimMessageId]);
  proxy.holdOnce('nestjs_inbox_lock_', update);
  await waitFor(
    async () =>
      (await sql(url, `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'UPDATE inbox_entries SET lock_token%'`)).length > 0,
    'the update queued',
  );
}
