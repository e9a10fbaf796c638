import { IsInt, IsNotEmpty, IsOptional, IsString, Matches, Max, MaxLength, Min } from 'class-validator';
import { InboxCommand } from 'nestjs-inbox';

/** Stored command type names: they outlive class renames, so they are spelled out once here. */
export const OPEN_ACCOUNT = 'bank.open-account';
export const DEPOSIT = 'bank.deposit';
export const WITHDRAW = 'bank.withdraw';

/** Amounts are whole minor units (cents), so balances never suffer rounding. */
const MAX_AMOUNT = 1_000_000_000;
const ACCOUNT_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const ACCOUNT_ID_MESSAGE = 'accountId must be 1-64 letters, digits, "-" or "_"';

@InboxCommand(OPEN_ACCOUNT)
export class OpenAccount {
  @IsString()
  @Matches(ACCOUNT_ID, { message: ACCOUNT_ID_MESSAGE })
  accountId!: string;

  @IsString()
  @IsNotEmpty()
  @MaxLength(200)
  owner!: string;
}

@InboxCommand(DEPOSIT)
export class Deposit {
  @IsString()
  @Matches(ACCOUNT_ID, { message: ACCOUNT_ID_MESSAGE })
  accountId!: string;

  @IsInt()
  @Min(1)
  @Max(MAX_AMOUNT)
  amount!: number;

  /** Demo switch: the payment network is "down" for this many attempts of this command. */
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(10)
  simulateOutage?: number;
}

@InboxCommand(WITHDRAW)
export class Withdraw {
  @IsString()
  @Matches(ACCOUNT_ID, { message: ACCOUNT_ID_MESSAGE })
  accountId!: string;

  @IsInt()
  @Min(1)
  @Max(MAX_AMOUNT)
  amount!: number;
}

/** The command classes the HTTP API accepts, by stored type. */
export const BANK_COMMANDS: ReadonlyMap<string, new () => object> = new Map<string, new () => object>([
  [OPEN_ACCOUNT, OpenAccount],
  [DEPOSIT, Deposit],
  [WITHDRAW, Withdraw],
]);
