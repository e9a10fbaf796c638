import { dealUnits, runUnits, settleRuns } from '../../lib/worker/key-runs';
import type { InboxRow } from '../../lib/store/schema';

/** Just what key runs look at: id, key, place, whether it waits, due time. */
function row(id: string, key: string | null, seq: number | null, dueSecond: number, waiting = false): InboxRow {
  return { id, ordering_key: key, ordering_seq: seq === null ? null : String(seq), waiting, received_at: new Date(dueSecond * 1000), next_retry_at: null } as InboxRow;
}

describe('key runs', () => {
  // Key a: head 9 (seq 9) with 10 and 11 behind it; key b: head at seq 2; two entries without a key.
  const rows = [
    row('a11', 'a', 11, 7, true),
    row('free1', null, null, 3),
    row('a9', 'a', 9, 1),
    row('b2', 'b', 2, 2),
    row('a10', 'a', 10, 6, true),
    row('free2', null, null, 4),
  ];

  it('keeps a run together in its order (sequence numbers compared as numbers), units by their heads\' due time', () => {
    expect(runUnits(rows).map((unit) => unit.map((r) => r.id))).toEqual([['a9', 'a10', 'a11'], ['b2'], ['free1'], ['free2']]);
    expect(runUnits([row('k100', 'k', 100, 1, true), row('k99', 'k', 99, 1)]).map((unit) => unit.map((r) => r.id))).toEqual([['k99', 'k100']]);
  });

  it('puts the holder first, before an entry replayed behind it with an earlier place', () => {
    const units = runUnits([row('k5', 'k', 5, 1), row('k2', 'k', 2, 1, true), row('k6', 'k', 6, 1, true)]);
    expect(units.map((unit) => unit.map((r) => r.id))).toEqual([['k5', 'k2', 'k6']]);
  });

  it('deals whole runs to groups', () => {
    expect(dealUnits(runUnits(rows), 2).map((group) => group.map((r) => r.id))).toEqual([
      ['a9', 'a10', 'a11', 'free1'],
      ['b2', 'free2'],
    ]);
  });

  it('records the failure of the first entry that did not complete and hands back the rest of its run', () => {
    const settled = settleRuns(rows, new Set(['a9', 'b2']), new Set(['a10', 'a11', 'free1']), new Set());
    expect([...settled.dropFailures]).toEqual(['a11']);
    expect(settled.release.map((r) => r.id)).toEqual(['a11']);
  });

  it('hands back a run whose head failed, and one that never ran behind a head that was handed back', () => {
    expect(settleRuns(rows, new Set(), new Set(['a9']), new Set()).release.map((r) => r.id)).toEqual(['a10', 'a11']);
    const settled = settleRuns(rows, new Set(), new Set(['a11']), new Set(['a9']));
    expect(settled.release.map((r) => r.id)).toEqual(['a10', 'a11']);
    expect([...settled.dropFailures]).toEqual(['a11']);
  });

  it('hands back an entry that never ran although those before it completed', () => {
    expect(settleRuns(rows, new Set(['a9']), new Set(), new Set()).release.map((r) => r.id)).toEqual(['a10', 'a11']);
    expect(settleRuns(rows, new Set(['a9', 'a10', 'a11']), new Set(), new Set()).release).toEqual([]);
  });
});
