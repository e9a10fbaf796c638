import { Injectable } from '@nestjs/common';
import { InboxHandler, PermanentError, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { AccountEventType } from './account-event.entity';
import { AccountLedger } from './account-ledger.service';
import { Deposit } from './commands';

@Injectable()
// One account's commands run one at a time, in the order received.
@InboxHandler(Deposit, { orderingKey: (command) => command.accountId })
export class DepositHandler implements InboxCommandHandler<Deposit> {
  constructor(private readonly ledger: AccountLedger) {}

  async execute(command: Deposit, { manager, entry }: InboxContext): Promise<void> {
    await this.ledger.lock(manager, command.accountId);
    const account = await this.ledger.load(manager, command.accountId);
    if (!account) throw new PermanentError(`Account ${command.accountId} does not exist.`);
    await this.ledger.append(manager, account, {
      accountId: command.accountId,
      type: AccountEventType.Deposited,
      amount: command.amount,
      messageId: entry.messageId,
    });
    // The outage strikes after the event is written on purpose: the failed attempt's
    // transaction rolls back, so only the successful retry's event remains.
    const outage = command.simulateOutage ?? 0;
    if (entry.attempt <= outage) {
      throw new Error(`Payment network unavailable (simulated outage, attempt ${entry.attempt} of ${outage}).`);
    }
  }
}
