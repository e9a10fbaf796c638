import { Injectable } from '@nestjs/common';
import { InboxHandler, PermanentError, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { AccountEventType } from './account-event.entity';
import { AccountLedger } from './account-ledger.service';
import { OpenAccount } from './commands';

@Injectable()
// One account's commands run one at a time, in the order received.
@InboxHandler(OpenAccount, { orderingKey: (command) => command.accountId })
export class OpenAccountHandler implements InboxCommandHandler<OpenAccount> {
  constructor(private readonly ledger: AccountLedger) {}

  async execute(command: OpenAccount, { manager, entry }: InboxContext): Promise<void> {
    await this.ledger.lock(manager, command.accountId);
    const existing = await this.ledger.load(manager, command.accountId);
    if (existing) {
      throw new PermanentError(`Account ${command.accountId} already exists (owner: ${existing.owner}).`);
    }
    await this.ledger.append(manager, null, {
      accountId: command.accountId,
      type: AccountEventType.Opened,
      amount: 0,
      messageId: entry.messageId,
      data: { owner: command.owner },
    });
  }
}
