// Checks on ordering keys. Within each key, in the order the inbox numbered the entries at receive
// (ordering_seq), every entry must be over before the next one starts:
// - a Completed entry runs from its handler's start to its end (its effect row: only runs whose
//   transaction committed count; a killed or failed attempt leaves nothing);
// - a dead letter is over when it was dead-lettered under policy skip, and only when the operator
//   discarded it under policy block (until then it blocks its key);
// - an entry starts when its handler started (Completed) or, for a dead letter, no later than
//   when it was dead-lettered.
// Every pair of a key is compared, not only neighbours. All times are the database's clock.
import { InboxStatus } from '../lib';
import type { PlannedCommand } from './chaos-commands';
import type { KeyOperator } from './key-operator';
import type { EntryRow, KeyedEffectRow, RunData } from './run-data';
import { reporter } from './violations';

export interface KeyReport {
  violations: string[];
  keyedCommands: number;
  keys: { block: number; skip: number };
  /** Entries per key: fewest, most. */
  perKey: { min: number; max: number };
  completed: number;
  deadLetters: { block: number; skip: number };
  /** Entries received while an earlier entry of their key was not over yet: they had to wait. */
  queued: number;
  /** Blocking dead letters the operator discarded; how many entries waited behind them then, at most. */
  releases: number;
  releasesWithWaiting: number;
  maxWaitingBehind: number;
  /** Completed entries that ran after a dead letter of their key: after a skip, and after a release. */
  completedAfterSkip: number;
  completedAfterRelease: number;
  /** Pairs of entries of one key compared. */
  pairs: number;
  /** Two completed entries of a key that started in the opposite order of their place in it. */
  orderViolations: number;
  /** Two committed runs of a key that overlapped in time. */
  overlaps: number;
  /** Entries that ran (or were dead-lettered) before an earlier dead letter of their key was over. */
  ranBeforeRelease: number;
  ranBeforeSkippedDeadLetter: number;
  /** Dead letters that came before an earlier completed entry of their key had finished. */
  deadLetteredTooEarly: number;
}

/** One entry in its key's order, with the times the checks compare (microseconds, database clock). */
interface Turn {
  entry: EntryRow;
  seq: bigint;
  policy: 'block' | 'skip';
  effect?: KeyedEffectRow;
  start: number;
  /** When the entry stopped holding its key; Infinity for a blocking dead letter never released. */
  end: number;
}

export function checkKeys(commands: PlannedCommand[], data: RunData, operator: Pick<KeyOperator, 'releases'>): KeyReport {
  const violations: string[] = [];
  const report = reporter(violations);
  const planned = new Map(commands.map((c) => [c.messageId, c]));
  const effects = new Map(data.keyedEffects.map((e) => [e.message_id, e]));

  report(
    'entries whose stored ordering key differs from the planned one',
    data.entries
      .filter((e) => planned.has(e.message_id) && (planned.get(e.message_id)!.ordering?.key ?? null) !== e.ordering_key)
      .map((e) => `${e.message_id} (${e.ordering_key ?? 'no key'})`),
  );
  report('keyed entries without a place in their key', data.entries.filter((e) => e.ordering_key !== null && e.ordering_seq === null).map((e) => e.message_id));
  report('entries still waiting or blocking a key at the end', data.entries.filter((e) => e.waiting || e.blocks_key).map((e) => e.message_id));

  const mismatched: string[] = [];
  const unfinished: string[] = [];
  const keys = new Map<string, Turn[]>();
  for (const entry of data.entries) {
    const ordering = planned.get(entry.message_id)?.ordering;
    if (!ordering || entry.ordering_key !== ordering.key || entry.ordering_seq === null) continue;
    const effect = effects.get(entry.message_id);
    let turn: Turn;
    if (entry.status === InboxStatus.Completed) {
      if (!effect) continue; // reported by the effects = completions check
      if (effect.ordering_key !== entry.ordering_key || effect.ordering_seq !== entry.ordering_seq) {
        mismatched.push(`${entry.message_id} (ran as ${effect.ordering_key} #${effect.ordering_seq}, stored ${entry.ordering_key} #${entry.ordering_seq})`);
      }
      if (effect.finished_us === null) unfinished.push(entry.message_id);
      turn = { entry, seq: BigInt(entry.ordering_seq), policy: ordering.policy, effect, start: effect.started_us, end: effect.finished_us ?? Infinity };
    } else if (entry.status === InboxStatus.DeadLetter && entry.dead_lettered_us !== null) {
      const end = ordering.policy === 'skip' ? entry.dead_lettered_us : (entry.discarded_us ?? Infinity);
      turn = { entry, seq: BigInt(entry.ordering_seq), policy: ordering.policy, start: entry.dead_lettered_us, end };
    } else {
      continue; // reported by the checks on statuses
    }
    keys.set(ordering.key, [...(keys.get(ordering.key) ?? []), turn]);
  }
  report('keyed effects whose key or place differs from their entry', mismatched, 5);
  report('completed keyed runs without an end time', unfinished);

  const r: Omit<KeyReport, 'violations'> = {
    keyedCommands: commands.filter((c) => c.ordering).length,
    keys: { block: 0, skip: 0 },
    perKey: { min: Infinity, max: 0 },
    completed: 0,
    deadLetters: { block: 0, skip: 0 },
    queued: 0,
    releases: operator.releases.length,
    releasesWithWaiting: operator.releases.filter((release) => release.waitingBehind > 0).length,
    maxWaitingBehind: Math.max(0, ...operator.releases.map((release) => release.waitingBehind)),
    completedAfterSkip: 0,
    completedAfterRelease: 0,
    pairs: 0,
    orderViolations: 0,
    overlaps: 0,
    ranBeforeRelease: 0,
    ranBeforeSkippedDeadLetter: 0,
    deadLetteredTooEarly: 0,
  };
  const examples: Record<'order' | 'overlap' | 'release' | 'skip' | 'early' | 'seq' | 'unreleased' | 'wrongDiscard', string[]> = {
    order: [], overlap: [], release: [], skip: [], early: [], seq: [], unreleased: [], wrongDiscard: [],
  };
  const at = (us: number) => (Number.isFinite(us) ? new Date(us / 1000).toISOString().slice(11, 23) : 'never');

  for (const [key, turns] of keys) {
    turns.sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
    r.keys[turns[0]!.policy]++;
    r.perKey.min = Math.min(r.perKey.min, turns.length);
    r.perKey.max = Math.max(r.perKey.max, turns.length);
    for (const [i, y] of turns.entries()) {
      const dead = y.entry.status === InboxStatus.DeadLetter;
      if (dead) r.deadLetters[y.policy]++;
      else r.completed++;
      if (dead && y.policy === 'block' && y.entry.discarded_us === null) examples.unreleased.push(`${y.entry.message_id} (${key})`);
      if (dead && y.policy === 'skip' && y.entry.discarded_us !== null) examples.wrongDiscard.push(`${y.entry.message_id} (${key})`);
      if (i > 0 && turns[i - 1]!.seq === y.seq) examples.seq.push(`${key} #${y.seq}`);
      if (i > 0 && y.entry.received_us < turns[i - 1]!.end) r.queued++;
      if (!dead && turns.slice(0, i).some((x) => x.entry.status === InboxStatus.DeadLetter)) {
        if (turns.slice(0, i).some((x) => x.entry.status === InboxStatus.DeadLetter && x.policy === 'skip')) r.completedAfterSkip++;
        if (turns.slice(0, i).some((x) => x.entry.status === InboxStatus.DeadLetter && x.policy === 'block')) r.completedAfterRelease++;
      }
      for (const x of turns.slice(0, i)) {
        r.pairs++;
        const pair = `${key}: #${x.seq} ${x.entry.message_id} (${x.entry.status}, ${at(x.start)}-${at(x.end)}) before #${y.seq} ${y.entry.message_id} (${y.entry.status}, ${at(y.start)}-${at(y.end)})`;
        const xDead = x.entry.status === InboxStatus.DeadLetter;
        if (!xDead && !dead) {
          if (y.start < x.start) (r.orderViolations++, examples.order.push(pair));
          if (y.start < x.end && x.start < y.end) (r.overlaps++, examples.overlap.push(pair));
        } else if (xDead && y.start < x.end) {
          if (x.policy === 'block') (r.ranBeforeRelease++, examples.release.push(pair));
          else (r.ranBeforeSkippedDeadLetter++, examples.skip.push(pair));
        } else if (!xDead && dead && y.start < x.end) {
          r.deadLetteredTooEarly++;
          examples.early.push(pair);
        }
      }
    }
  }
  if (keys.size === 0) r.perKey.min = 0;

  report('pairs of completed entries of one key that started out of their receive order', examples.order, 3);
  report('pairs of committed runs of one key that overlapped in time', examples.overlap, 3);
  report('entries that ran before the blocking dead letter ahead of them was released', examples.release, 3);
  report('entries that ran before the skipped dead letter ahead of them was dead-lettered', examples.skip, 3);
  report('dead letters that came before an earlier entry of their key had finished', examples.early, 3);
  report('two entries with one place in their key', examples.seq);
  report('blocking dead letters never released', examples.unreleased);
  report('dead letters of a skip key discarded (only blocking ones should be)', examples.wrongDiscard);
  const discarded = data.entries.filter((e) => e.discarded_us !== null).length;
  if (discarded !== operator.releases.length) violations.push(`${discarded} entries discarded, but the operator made ${operator.releases.length} releases`);
  return { violations, ...r };
}
