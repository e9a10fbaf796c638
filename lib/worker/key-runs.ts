import type { InboxRow } from '../store/schema';

/**
 * A claim brings, with each due entry that holds an ordering key, the entries waiting behind it
 * (see InboxStatements.claim): a key's run. These functions keep a run together and in its key's
 * order, and decide what becomes of it when it breaks. Rows of a run are told apart by their key:
 * one claim holds at most one run per key.
 */

/**
 * The claimed rows as units that run one after the other on one connection: an entry without a key
 * alone, a key's run in its order (its holder, then the waiting entries by their place); units in
 * the order their heads were due.
 */
export function runUnits(rows: InboxRow[]): InboxRow[][] {
  const units: InboxRow[][] = [];
  const byKey = new Map<string, InboxRow[]>();
  for (const row of rows) {
    if (row.ordering_key === null) {
      units.push([row]);
      continue;
    }
    let unit = byKey.get(row.ordering_key);
    if (!unit) {
      unit = [];
      byKey.set(row.ordering_key, unit);
      units.push(unit);
    }
    unit.push(row);
  }
  // The holder first (an entry replayed behind it may have an earlier place), then the waiting ones in their order.
  for (const unit of byKey.values()) unit.sort((a, b) => Number(a.waiting) - Number(b.waiting) || compareSeq(a.ordering_seq!, b.ordering_seq!));
  return units.sort((a, b) => dueTime(a[0]) - dueTime(b[0]));
}

/** `units` dealt into `count` groups in turn, each flattened: a run never spans two groups. */
export function dealUnits(units: InboxRow[][], count: number): InboxRow[][] {
  const groups: InboxRow[][] = Array.from({ length: count }, () => []);
  units.forEach((unit, index) => groups[index % count].push(...unit));
  return groups;
}

/**
 * What becomes of a batch's rows once its transactions are over. Within a key, the entries that
 * completed come first; the first one that did not ends the run: its failure (if it failed) is
 * recorded, as it would have been had it been claimed alone; every later entry of its key goes back
 * uncharged, still waiting (a failure of one of them does not count: an entry before it did not
 * complete, so it should not have run).
 */
export function settleRuns(rows: InboxRow[], completed: ReadonlySet<string>, failed: ReadonlySet<string>, released: ReadonlySet<string>): { dropFailures: Set<string>; release: InboxRow[] } {
  const dropFailures = new Set<string>();
  const release: InboxRow[] = [];
  for (const unit of runUnits(rows)) {
    if (unit.length < 2) continue;
    let broken = false;
    for (const row of unit) {
      if (!broken) {
        if (completed.has(row.id)) continue;
        broken = true;
        // The first entry that did not complete: failed, handed back already, or it never ran.
        if (!failed.has(row.id) && !released.has(row.id)) release.push(row);
        continue;
      }
      if (failed.has(row.id)) dropFailures.add(row.id);
      if (!released.has(row.id)) release.push(row);
    }
  }
  return { dropFailures, release };
}

function compareSeq(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

function dueTime(row: InboxRow): number {
  return (row.next_retry_at ?? row.received_at).getTime();
}
