import type { Attributes, BatchObservableResult, Observable } from '@opentelemetry/api';
import { Tally } from '../../lib/telemetry/tally';

/** Collects what a tally reports, as a reader's batch callback would be given it. */
function reported(tally: Tally): Array<[number, Attributes]> {
  const seen: Array<[number, Attributes]> = [];
  const result = { observe: (_instrument: Observable, value: number, attributes: Attributes) => seen.push([value, attributes]) } as unknown as BatchObservableResult;
  tally.observe(result, {} as Observable);
  return seen;
}

describe('Tally', () => {
  it('counts by attribute set and reports cumulative values, building each set once', () => {
    const tally = new Tally({ system: 'x' });
    let built = 0;
    const build = (type: string) => () => (built++, { type });
    tally.add('a', build('a'));
    tally.add('a', build('a'), 2);
    tally.add('b', build('b'));
    expect(reported(tally)).toEqual([
      [3, { type: 'a' }],
      [1, { type: 'b' }],
    ]);
    expect(built).toBe(2);
    tally.add('b', build('b'));
    expect(reported(tally)).toEqual([
      [3, { type: 'a' }],
      [2, { type: 'b' }],
    ]);
  });

  it('counts sets beyond its limit together instead of growing without end', () => {
    const tally = new Tally({ system: 'x' });
    for (let i = 0; i < 5_003; i++) tally.add(`k${i}`, () => ({ key: `k${i}` }));
    const all = reported(tally);
    expect(all).toHaveLength(5_001);
    expect(all.at(-1)).toEqual([3, { system: 'x' }]);
  });
});
