// The operator of the run: keys blocked by a dead letter (policy block) wait for a person. This one
// looks at InboxService.blockedKeys() every half second and discards the dead letter that blocks a
// key once it has seen the key blocked for a while (so that entries pile up behind it), as an
// operator would after deciding the command is not to be applied. Discarding keeps the designed
// outcome of the command (DeadLetter) and lets the key move on.
import { setTimeout as sleep } from 'node:timers/promises';
import type { InboxService } from '../lib';

/** How long a key stays blocked, as seen by the operator, before its dead letter is discarded. */
const HOLD_MS = 1500;
const ROUND_MS = 500;
export const OPERATOR_ACTOR = 'chaos-operator';

/** One discarded blocking dead letter. */
export interface Release {
  key: string;
  messageId: string;
  /** Entries waiting behind it when it was discarded, as blockedKeys() counted them. */
  waitingBehind: number;
  /** How long the operator had seen the key blocked. */
  heldMs: number;
}

export class KeyOperator {
  readonly releases: Release[] = [];
  /** blockedKeys() or discard() calls that threw (during the outage they do); the next round retries. */
  failedCalls = 0;
  /** Their errors, by class and message, with how many times each was seen. */
  readonly errorSamples = new Map<string, number>();
  private readonly firstSeen = new Map<string, number>();
  private running = false;
  private loop?: Promise<void>;

  constructor(private readonly inbox: InboxService) {}

  start(): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        await this.round(HOLD_MS);
        await sleep(ROUND_MS);
      }
    })();
  }

  /** Stops the rounds, then releases what is still blocked at once (keys with nothing behind them). */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    await this.round(0);
  }

  private async round(holdMs: number): Promise<void> {
    try {
      const blocked = await this.inbox.blockedKeys({ limit: 1000 });
      const now = Date.now();
      for (const { orderingKey, blockedBy, waiting } of blocked) {
        const seen = this.firstSeen.get(blockedBy.id) ?? now;
        this.firstSeen.set(blockedBy.id, seen);
        if (now - seen < holdMs) continue;
        await this.inbox.discard(blockedBy.id, { actor: OPERATOR_ACTOR, reason: 'designed failure; the key may move on' });
        this.releases.push({ key: orderingKey, messageId: blockedBy.messageId, waitingBehind: waiting, heldMs: now - seen });
      }
    } catch (error) {
      this.failedCalls++;
      const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      this.errorSamples.set(text, (this.errorSamples.get(text) ?? 0) + 1);
    }
  }
}
