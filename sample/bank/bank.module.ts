import { Module } from '@nestjs/common';
import { AccountLedger } from './account-ledger.service';
import { BankController } from './bank.controller';
import { DepositHandler } from './deposit.handler';
import { OpenAccountHandler } from './open-account.handler';
import { WithdrawHandler } from './withdraw.handler';

@Module({
  controllers: [BankController],
  providers: [AccountLedger, OpenAccountHandler, DepositHandler, WithdrawHandler],
})
export class BankModule {}
