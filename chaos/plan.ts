// The commands of one run: which kind each is, which type it is sent as, in sending order.
import { CHAOS_COMMAND, CHAOS_COMMAND_V2, MAX_TRANSIENT_FAILURES, type Kind, type PlannedCommand } from './chaos-commands';

/** Share of each designed failure among the non-poison commands. */
const MIX: Array<[Kind, number]> = [
  ['transient', 0.12],
  ['permanent', 0.05],
  ['invalid', 0.05],
  ['swallow', 0.025],
];

/** Share of the non-poison commands sent as the type only the new release handles. */
export const V2_SHARE = 0.1;

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
  return Array.from({ length: total }, (_, i) => {
    const messageId = `${runId}-${String(i).padStart(6, '0')}`;
    const amount = 1 + Math.floor(random() * 1000);
    const kind: Kind = poisonAt.has(i) ? 'poison' : pick(random());
    const commandType = kind !== 'poison' && random() < V2_SHARE ? CHAOS_COMMAND_V2 : CHAOS_COMMAND;
    const failAttempts = kind === 'transient' ? 1 + Math.floor(random() * MAX_TRANSIENT_FAILURES) : 0;
    // An amount of "lots" fails @IsInt, so the entry dead-letters before the handler runs.
    const payload = { kind, failAttempts, amount: kind === 'invalid' ? 'lots' : amount };
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
