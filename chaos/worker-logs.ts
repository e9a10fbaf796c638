// What the worker logs say: every handler run (the RAN lines the handlers write), and the library's
// log lines the checks count or forbid.
import { readFileSync } from 'node:fs';
import { RUN_MARKER } from './chaos-commands';

export interface WorkerLogs {
  /** Attempt numbers of the handler runs, per messageId (a rerun with savepoints repeats one). */
  runs: Map<string, Set<number>>;
  /** Lines reporting a second application of an effect (its primary key). */
  duplicateEffectLines: string[];
  /** Crash suspects' claims the lease sweep handed back uncharged because their attempt never started. */
  handedBackUncharged: number;
  /** Entries of a batch whose worker died or lost its connection, handed back uncharged as crash suspects. */
  handedBackAsSuspects: number;
  /** Claims a worker handed back for want of a handler: workers must only claim the types they handle. */
  noHandlerHandBacks: string[];
  /** Boot warnings about a pool smaller than concurrency + 2, per log file. */
  poolWarnings: Map<string, number>;
}

// The library's wording of these lines; a hand-back for want of a handler is matched by its cause
// alone, as its ending differs between library versions.
const PATTERNS = {
  duplicateEffect: 'chaos_effects_pkey',
  handedBackUncharged: 'expired before its attempt started; handed back uncharged',
  handedBackAsSuspects: 'handed back uncharged, to run alone',
  noHandler: /no handler for .* in this worker/,
  poolWarning: 'The connection pool holds',
};

export function readWorkerLogs(files: string[]): WorkerLogs {
  const logs: WorkerLogs = { runs: new Map(), duplicateEffectLines: [], handedBackUncharged: 0, handedBackAsSuspects: 0, noHandlerHandBacks: [], poolWarnings: new Map() };
  for (const file of files) {
    let poolWarnings = 0;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line.startsWith(`${RUN_MARKER} `)) {
        const [, messageId, attempt] = line.split(' ');
        const attempts = logs.runs.get(messageId!) ?? new Set<number>();
        attempts.add(Number(attempt));
        logs.runs.set(messageId!, attempts);
      } else if (line.includes(PATTERNS.duplicateEffect)) {
        logs.duplicateEffectLines.push(`${file}: ${line.slice(0, 160)}`);
      } else if (line.includes(PATTERNS.handedBackUncharged)) {
        logs.handedBackUncharged++;
      } else if (line.includes(PATTERNS.handedBackAsSuspects)) {
        logs.handedBackAsSuspects++;
      } else if (PATTERNS.noHandler.test(line)) {
        logs.noHandlerHandBacks.push(`${file}: ${line.slice(0, 160)}`);
      } else if (line.includes(PATTERNS.poolWarning)) {
        poolWarnings++;
      }
    }
    logs.poolWarnings.set(file, poolWarnings);
  }
  return logs;
}
