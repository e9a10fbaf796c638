import { Injectable } from '@nestjs/common';
import { InboxHandler, PermanentError, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { AccountEventType } from './account-event.entity';
import { AccountLedger } from './account-ledger.service';
import { Withdraw } from './commands';

@Injectable()
// One account's commands run one at a time, in the order received. A refused withdrawal is a final
// answer: the account's later commands go on (skip); a dead-lettered deposit holds them (block).
@InboxHandler(Withdraw, { orderingKey: (command) => command.accountId, onDeadLetter: 'skip' })
export class WithdrawHandler implements InboxCommandHandler<Withdraw> {
  constructor(private readonly ledger: AccountLedger) {}

  async execute(command: Withdraw, { manager, entry }: InboxContext): Promise<void> {
    // Locked before reading, so the balance cannot change between the check and the append.
    await this.ledger.lock(manager, command.accountId);
    const account = await this.ledger.load(manager, command.accountId);
    if (!account) throw new PermanentError(`Account ${command.accountId} does not exist.`);
    if (command.amount > account.balance) {
      throw new PermanentError(
        `Insufficient funds in ${command.accountId}: balance ${account.balance}, withdrawal ${command.amount}.`,
      );
    }
    await this.ledger.append(manager, account, {
      accountId: command.accountId,
      type: AccountEventType.Withdrawn,
      amount: command.amount,
      messageId: entry.messageId,
    });
  }
}
