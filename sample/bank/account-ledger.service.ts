import { Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { AccountEvent, AccountEventType, type AccountEventData } from './account-event.entity';

export interface AccountState {
  accountId: string;
  owner: string;
  balance: number;
  /** Sequence of the last event; the next event gets version + 1. */
  version: number;
}

export interface AccountHistory extends AccountState {
  events: Array<{
    sequence: number;
    type: AccountEventType;
    amount: number;
    balanceAfter: number;
    messageId: string;
    createdAt: Date;
  }>;
}

/** Reads and appends account events. Handlers pass their inbox transaction's manager. */
@Injectable()
export class AccountLedger {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Serialises every writer of one account until the caller's transaction ends, so a
   * withdrawal's balance check cannot interleave with another command on the same account.
   */
  async lock(manager: EntityManager, accountId: string): Promise<void> {
    await manager.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`bank.account:${accountId}`]);
  }

  async load(manager: EntityManager, accountId: string): Promise<AccountState | null> {
    const history = fold(accountId, await this.events(manager, accountId));
    if (!history) return null;
    const { events: _events, ...state } = history;
    return state;
  }

  async append(
    manager: EntityManager,
    previous: AccountState | null,
    event: { accountId: string; type: AccountEventType; amount: number; messageId: string; data?: AccountEventData },
  ): Promise<void> {
    await manager.insert(AccountEvent, {
      accountId: event.accountId,
      sequence: (previous?.version ?? 0) + 1,
      type: event.type,
      amount: event.amount,
      data: event.data ?? {},
      messageId: event.messageId,
    });
  }

  /** Committed state only: what the HTTP API shows. */
  async history(accountId: string): Promise<AccountHistory | null> {
    return fold(accountId, await this.events(this.dataSource.manager, accountId));
  }

  private events(manager: EntityManager, accountId: string): Promise<AccountEvent[]> {
    return manager.find(AccountEvent, { where: { accountId }, order: { sequence: 'ASC' } });
  }
}

function fold(accountId: string, events: AccountEvent[]): AccountHistory | null {
  if (events.length === 0) return null;
  const history: AccountHistory = { accountId, owner: '', balance: 0, version: 0, events: [] };
  for (const event of events) {
    switch (event.type) {
      case AccountEventType.Opened:
        history.owner = String(event.data.owner ?? '');
        break;
      case AccountEventType.Deposited:
        history.balance += event.amount;
        break;
      case AccountEventType.Withdrawn:
        history.balance -= event.amount;
        break;
    }
    history.version = event.sequence;
    history.events.push({
      sequence: event.sequence,
      type: event.type,
      amount: event.amount,
      balanceAfter: history.balance,
      messageId: event.messageId,
      createdAt: event.createdAt,
    });
  }
  return history;
}
