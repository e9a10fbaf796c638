import { Injectable } from '@nestjs/common';

/**
 * How the receive side tells this process's worker that new entries are due, without knowing the
 * worker: `InboxService` raises it, the processor (if this instance runs one) listens.
 */
@Injectable()
export class WakeSignal {
  private listener?: () => void;

  /** The processor's listener; a receive-only instance has none. */
  listen(listener: () => void): void {
    this.listener = listener;
  }

  /** New entries are due (received, replayed). */
  raise(): void {
    this.listener?.();
  }
}
