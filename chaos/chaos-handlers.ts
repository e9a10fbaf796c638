// The chaos handlers of the two worker releases: the old one handles chaos.apply, the new one
// chaos.apply and chaos.apply-v2, both with the same payload class and behaviour. Both releases
// handle the two keyed types (one blocks its key on a dead letter, the other skips it).
import { writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Inject, Injectable, type Type } from '@nestjs/common';
import { InboxHandler, PermanentError, type InboxCommandHandler, type InboxContext } from '../lib';
import {
  CHAOS_COMMAND_V2,
  ChaosCommand,
  KEYED_BLOCK_COMMAND,
  KEYED_SKIP_COMMAND,
  KeyedChaosCommand,
  PERMANENT_MESSAGE,
  POISON_MARKER,
  RUN_MARKER,
  TRANSIENT_MESSAGE,
  type Release,
} from './chaos-commands';

/** The handler classes each release registers. */
export function handlersOf(release: Release): Array<Type<unknown>> {
  const keyed = [KeyedBlockHandler, KeyedSkipHandler];
  return release === 'old' ? [ChaosHandler, ...keyed] : [ChaosHandler, ChaosV2Handler, ...keyed];
}


/** Nest token of the worker's id (`<slot>-<pid>`, also its inbox workerId), which effect rows name. */
export const WORKER_ID = 'CHAOS_WORKER_ID';

/** What one handler run does, whichever type it came as. */
async function apply(command: ChaosCommand, { manager, entry }: InboxContext, workerId: string): Promise<void> {
  // Synchronous, so the run is on record even if the process dies in the next instant.
  writeSync(1, `${RUN_MARKER} ${entry.messageId} ${entry.attempt}\n`);
  // Every kind writes its effect first: failures must roll it back, only completions keep it. The
  // entry's key and place as this transaction sees them, and the database's clock at the start.
  await manager.query(
    `INSERT INTO chaos_effects (message_id, amount, attempt, worker, ordering_key, ordering_seq, started_at)
     SELECT $1, $2, $3, $4, ordering_key, ordering_seq, clock_timestamp() FROM inbox_entries WHERE id = $5`,
    [entry.messageId, command.amount, entry.attempt, workerId, entry.id],
  );
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
  // A few ms inside the transaction, so that kills and the outage land mid-handler, and runs of one
  // key that overlapped would show it.
  await sleep(Math.random() * 4);
  await manager.query('UPDATE chaos_effects SET finished_at = clock_timestamp() WHERE message_id = $1', [entry.messageId]);
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

/** Its key comes from the payload; a dead letter holds the key until an operator releases it. */
@Injectable()
@InboxHandler(KEYED_BLOCK_COMMAND, { payload: KeyedChaosCommand, orderingKey: (command: KeyedChaosCommand) => command.key, onDeadLetter: 'block' })
class KeyedBlockHandler implements InboxCommandHandler<KeyedChaosCommand> {
  constructor(@Inject(WORKER_ID) private readonly workerId: string) {}

  execute(command: KeyedChaosCommand, context: InboxContext): Promise<void> {
    return apply(command, context, this.workerId);
  }
}

/** Its key comes with the command (passed to receive); a dead letter lets the key move on. */
@Injectable()
@InboxHandler(KEYED_SKIP_COMMAND, { payload: KeyedChaosCommand, onDeadLetter: 'skip' })
class KeyedSkipHandler implements InboxCommandHandler<KeyedChaosCommand> {
  constructor(@Inject(WORKER_ID) private readonly workerId: string) {}

  execute(command: KeyedChaosCommand, context: InboxContext): Promise<void> {
    return apply(command, context, this.workerId);
  }
}

/**
 * The handlers a receive-only application needs to store commands as the workers expect: the
 * block type's key is derived from the payload by its handler, in every application that has it.
 */
export const RECEIVER_HANDLERS: Array<Type<unknown>> = [KeyedBlockHandler];
