import type { Attributes } from '@opentelemetry/api';
import { AggregationTemporality, MeterProvider, MetricReader, type DataPoint } from '@opentelemetry/sdk-metrics';
import { TalliedCounter } from '../../lib/telemetry/tallied-counter';

class OnDemandReader extends MetricReader {
  constructor(temporality: AggregationTemporality) {
    super({ aggregationTemporalitySelector: () => temporality });
  }
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

async function points(reader: MetricReader): Promise<Array<DataPoint<number>>> {
  const { resourceMetrics, errors } = await reader.collect();
  expect(errors).toEqual([]);
  const metric = resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics).find((candidate) => candidate.descriptor.name === 'test.counted');
  return (metric?.dataPoints ?? []) as Array<DataPoint<number>>;
}

function valueOf(found: Array<DataPoint<number>>, attributes: Attributes): number | undefined {
  return found.find((point) => JSON.stringify(point.attributes) === JSON.stringify(attributes))?.value;
}

describe('TalliedCounter', () => {
  it('reports running totals to a cumulative reader and increments to a delta reader', async () => {
    const cumulative = new OnDemandReader(AggregationTemporality.CUMULATIVE);
    const delta = new OnDemandReader(AggregationTemporality.DELTA);
    const provider = new MeterProvider({ readers: [cumulative, delta] });
    const counter = new TalliedCounter(provider.getMeter('test'), 'test.counted', { unit: '{thing}' });
    const a = { kind: 'a' };
    const b = { kind: 'b' };

    counter.add(1, 'type', 'a', () => a);
    counter.add(2, 'type', 'a', () => ({ kind: 'not used: the set is built once' }));
    counter.add(5, 'type', 'b', () => b);
    expect(valueOf(await points(cumulative), a)).toBe(3);
    expect(valueOf(await points(delta), b)).toBe(5);

    counter.add(4, 'type', 'a', () => a);
    const totals = await points(cumulative);
    expect(valueOf(totals, a)).toBe(7);
    expect(valueOf(totals, b)).toBe(5);
    const increments = await points(delta);
    expect(valueOf(increments, a)).toBe(4);
    expect(valueOf(increments, b)).toBe(0);
    await provider.shutdown();
  });

  it('sums attribute sets beyond its limit under the overflow set instead of growing without end', async () => {
    const reader = new OnDemandReader(AggregationTemporality.CUMULATIVE);
    const provider = new MeterProvider({ readers: [reader] });
    const counter = new TalliedCounter(provider.getMeter('test'), 'test.counted', {});
    for (let i = 0; i < 2_003; i++) counter.add(1, `type-${i}`, 'new', () => ({ type: `type-${i}` }));
    counter.add(1, 'type-0', 'new', () => ({ type: 'type-0' }));

    const found = await points(reader);
    expect(found).toHaveLength(2_000);
    expect(valueOf(found, { type: 'type-0' })).toBe(2);
    expect(valueOf(found, { type: 'type-1998' })).toBe(1);
    expect(valueOf(found, { type: 'type-1999' })).toBeUndefined();
    expect(valueOf(found, { 'otel.metric.overflow': true })).toBe(4);
    await provider.shutdown();
  });
});
