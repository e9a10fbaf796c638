// The commands of one run: which kind each is, which type it is sent as, which ordering key it
// carries, in sending order.
import type { DeadLetterPolicy } from '../lib';
import { CHAOS_COMMAND, CHAOS_COMMAND_V2, KEYED_COMMAND_OF, MAX_TRANSIENT_FAILURES, type Kind, type PlannedCommand } from './chaos-commands';

/** Share of each designed failure among the non-poison commands. */
const MIX: Array<[Kind, number]> = [
  ['transient', 0.12],
  ['permanent', 0.05],
  ['invalid', 0.05],
  ['swallow', 0.025],
];

/** Share of the non-poison commands sent as the type only the new release handles. */
export const V2_SHARE = 0.1;

/** Share of the non-poison commands that carry an ordering key (a keyed type). */
export const KEYED_SHARE = 0.25;
/**
 * Keys are used a few at a time, like aggregates that are busy for a while: the stream falls into
 * equal stretches, each with ACTIVE_KEYS keys of its own, and a keyed command goes to one of its
 * stretch's keys at random (the less used of two random picks, so that keys get about
 * ENTRIES_PER_KEY each, none only one or two). Entries of a key then arrive close
 * together (several per second), so they queue behind each other and behind a failing or blocked
 * holder.
 */
const ACTIVE_KEYS = 8;
const ENTRIES_PER_KEY = 12;

/** Poison commands go into this leading share of the stream (see planCommands). */
const POISON_SHARE = 0.15;

/**
 * Poison commands come early: their crash-and-expire cycles then overlap the traffic instead of
 * stretching the drain, and are mostly over before the database restarts, so the workers followed
 * through a restart are not cut down by poison. They keep the old type, which every release
 * handles. New-type commands are spread over the whole stream, from the first one on: until the
 * first worker runs the new release they wait.
 */
export function planCommands(runId: string, total: number, poison: number, random: () => number = Math.random): PlannedCommand[] {
  // One poison command per equal stretch, so that two of them rarely share a batch.
  const poisonAt = new Set(Array.from({ length: poison }, (_, i) => Math.floor(((i + random()) / poison) * total * POISON_SHARE)));
  const generations = Math.max(1, Math.round((total * KEYED_SHARE) / (ACTIVE_KEYS * ENTRIES_PER_KEY)));
  const used = new Map<number, number>();
  return Array.from({ length: total }, (_, i): PlannedCommand => {
    const messageId = `${runId}-${String(i).padStart(6, '0')}`;
    const amount = 1 + Math.floor(random() * 1000);
    const kind: Kind = poisonAt.has(i) ? 'poison' : pick(random());
    const failAttempts = kind === 'transient' ? 1 + Math.floor(random() * MAX_TRANSIENT_FAILURES) : 0;
    // An amount of "lots" fails @IsInt, so the entry dead-letters before the handler runs.
    const payload = { kind, failAttempts, amount: kind === 'invalid' ? 'lots' : amount };
    // Poison stays unkeyed: its crash cycles would hold a key for maxAttempts leases.
    if (kind !== 'poison' && random() < KEYED_SHARE) {
      const generation = Math.floor((i * generations) / total);
      const [a, b] = [0, 1].map(() => generation * ACTIVE_KEYS + Math.floor(random() * ACTIVE_KEYS)) as [number, number];
      const index = (used.get(a) ?? 0) <= (used.get(b) ?? 0) ? a : b;
      used.set(index, (used.get(index) ?? 0) + 1);
      // Half the keys under each policy; a key's entries are all of one type.
      const policy: DeadLetterPolicy = index % 2 === 0 ? 'block' : 'skip';
      const key = `${runId}-${policy}-${String(index).padStart(4, '0')}`;
      return { messageId, commandType: KEYED_COMMAND_OF[policy], kind, payload: { ...payload, key }, ordering: { key, policy } };
    }
    const commandType = kind !== 'poison' && random() < V2_SHARE ? CHAOS_COMMAND_V2 : CHAOS_COMMAND;
    return { messageId, commandType, kind, payload };
  });
}

function pick(roll: number): Kind {
  let bound = 0;
  for (const [kind, share] of MIX) {
    bound += share;
    if (roll < bound) return kind;
  }
  return 'ok';
}
