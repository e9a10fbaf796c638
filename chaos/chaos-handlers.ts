// The chaos handlers of the two worker releases: the old one handles chaos.apply, the new one
// chaos.apply and chaos.apply-v2, both with the same payload class and behaviour.
import { writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Inject, Injectable, type Type } from '@nestjs/common';
import { InboxHandler, PermanentError, type InboxCommandHandler, type InboxContext } from '../lib';
import { CHAOS_COMMAND_V2, ChaosCommand, PERMANENT_MESSAGE, POISON_MARKER, RUN_MARKER, TRANSIENT_MESSAGE, type Release } from './chaos-commands';

/** The handler classes each release registers. */
export function handlersOf(release: Release): Array<Type<unknown>> {
  return release === 'old' ? [ChaosHandler] : [ChaosHandler, ChaosV2Handler];
}

/** Nest token of the worker's id (`<slot>-<pid>`, also its inbox workerId), which effect rows name. */
export const WORKER_ID = 'CHAOS_WORKER_ID';

/** What one handler run does, whichever type it came as. */
async function apply(command: ChaosCommand, { manager, entry }: InboxContext, workerId: string): Promise<void> {
  // Synchronous, so the run is on record even if the process dies in the next instant.
  writeSync(1, `${RUN_MARKER} ${entry.messageId} ${entry.attempt}\n`);
  // Every kind writes its effect first: failures must roll it back, only completions keep it.
  await manager.query('INSERT INTO chaos_effects (message_id, amount, attempt, worker) VALUES ($1, $2, $3, $4)', [
    entry.messageId,
    command.amount,
    entry.attempt,
    workerId,
  ]);
  if (command.kind === 'poison') {
    // Synchronous, so the orchestrator finds the marker in the log when it sees the SIGKILL exit.
    writeSync(1, `${POISON_MARKER} ${entry.messageId} attempt ${entry.attempt}\n`);
    process.kill(process.pid, 'SIGKILL');
  }
  if (command.kind === 'permanent') throw new PermanentError(PERMANENT_MESSAGE);
  if (command.kind === 'transient' && entry.attempt <= command.failAttempts) {
    throw new Error(`${TRANSIENT_MESSAGE} (attempt ${entry.attempt} of ${command.failAttempts})`);
  }
  if (command.kind === 'swallow') {
    try {
      await manager.query(`INSERT INTO chaos_taken_keys (key) VALUES ('taken')`);
    } catch {
      // "already there, fine": the mistake under test. PostgreSQL has aborted the transaction.
    }
    return;
  }
  // A few ms inside the transaction, so that kills and the outage land mid-handler.
  await sleep(Math.random() * 4);
}

@Injectable()
@InboxHandler(ChaosCommand)
class ChaosHandler implements InboxCommandHandler<ChaosCommand> {
  constructor(@Inject(WORKER_ID) private readonly workerId: string) {}

  execute(command: ChaosCommand, context: InboxContext): Promise<void> {
    return apply(command, context, this.workerId);
  }
}

@Injectable()
@InboxHandler(CHAOS_COMMAND_V2, { payload: ChaosCommand })
class ChaosV2Handler implements InboxCommandHandler<ChaosCommand> {
  constructor(@Inject(WORKER_ID) private readonly workerId: string) {}

  execute(command: ChaosCommand, context: InboxContext): Promise<void> {
    return apply(command, context, this.workerId);
  }
}
