// Producer loops: send the planned commands through InboxService.receive at a steady rate, and
// retry a failed call with the same messageId and payload until it is stored. The retry is what
// a real caller does with an error; the inbox's deduplication makes it safe.
import { setTimeout as sleep } from 'node:timers/promises';
import type { PlannedCommand } from './chaos-commands';
import { IdempotencyConflictError, InboxArgumentError, type InboxService } from '../lib';

export interface ProducerStats {
  stored: number;
  /** receive() calls that threw, i.e. were reported to the caller as failed. */
  failedCalls: number;
  /** Commands that saw at least one failed call. */
  affected: Set<string>;
  /** Retries answered with duplicate: true: the failed call had stored the command after all. */
  storedByFailedCall: number;
  /** First calls answered with duplicate: true (cannot happen: every messageId is new). */
  unexpectedDuplicates: string[];
  /** Errors that retrying cannot fix (argument or idempotency errors): the command is given up. */
  rejected: string[];
  /** Commands still not stored when their retry deadline passed. */
  givenUp: string[];
  errorSamples: Map<string, number>;
  lastError?: string;
  firstFailureAt?: number;
  lastFailureAt?: number;
}

export interface ProducerOptions {
  loops: number;
  ratePerSecond: number;
  /** How long one command may keep failing before the producer gives up on it (a violation). */
  retryDeadlineMs: number;
  /** When the producers stop altogether; commands not stored by then count as given up. */
  stopAt: number;
}

export function newProducerStats(): ProducerStats {
  return { stored: 0, failedCalls: 0, affected: new Set(), storedByFailedCall: 0, unexpectedDuplicates: [], rejected: [], givenUp: [], errorSamples: new Map() };
}

/** Sends every command; `stats` fills up as it goes, so progress can be watched. */
export async function runProducers(inbox: InboxService, commands: PlannedCommand[], options: ProducerOptions, stats: ProducerStats): Promise<void> {
  const start = Date.now();
  let next = 0;
  const loop = async (): Promise<void> => {
    for (let i = next++; i < commands.length; i = next++) {
      // Paced, so that the faults land while commands are still arriving.
      const due = start + (i * 1000) / options.ratePerSecond;
      if (due > Date.now()) await sleep(due - Date.now());
      if (Date.now() > options.stopAt) stats.givenUp.push(commands[i]!.messageId);
      else await sendUntilStored(inbox, commands[i]!, stats, Math.min(Date.now() + options.retryDeadlineMs, options.stopAt));
    }
  };
  await Promise.all(Array.from({ length: options.loops }, loop));
}

async function sendUntilStored(inbox: InboxService, command: PlannedCommand, stats: ProducerStats, deadline: number): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      const { duplicate } = await inbox.receive({
        messageId: command.messageId,
        commandType: command.commandType,
        payload: command.payload,
        // The skip type's key comes with the command; the block type's handler derives it.
        orderingKey: command.ordering?.policy === 'skip' ? command.ordering.key : undefined,
      });
      if (duplicate && attempt === 1) stats.unexpectedDuplicates.push(command.messageId);
      if (duplicate && attempt > 1) stats.storedByFailedCall++;
      stats.stored++;
      return;
    } catch (error) {
      stats.failedCalls++;
      stats.affected.add(command.messageId);
      stats.firstFailureAt ??= Date.now();
      stats.lastFailureAt = Date.now();
      const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      stats.errorSamples.set(text, (stats.errorSamples.get(text) ?? 0) + 1);
      stats.lastError = text;
      // Retrying cannot fix a wrong argument or a reused key; anything else (outage, timeout) it can.
      if (error instanceof InboxArgumentError || error instanceof IdempotencyConflictError) {
        stats.rejected.push(`${command.messageId}: ${text}`);
        return;
      }
      if (Date.now() > deadline) {
        stats.givenUp.push(command.messageId);
        return;
      }
      await sleep(100 + Math.random() * 100);
    }
  }
}
