import {
  BadRequestException,
  Body,
  Controller,
  Get,
  Headers,
  HttpCode,
  HttpStatus,
  NotFoundException,
  Param,
  Post,
  Query,
  Res,
} from '@nestjs/common';
import { plainToInstance } from 'class-transformer';
import { validate, type ValidationError } from 'class-validator';
import type { Response } from 'express';
import {
  InboxArgumentError,
  InboxEntryNotFoundError,
  InboxService,
  PayloadValidationError,
  type InboxEntry,
  type InboxStatus,
} from 'nestjs-inbox';
import { AccountLedger, type AccountHistory } from './account-ledger.service';
import { BANK_COMMANDS } from './commands';

/** What the inbox's messageId accepts, minus characters that are awkward in a header. */
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

export interface CommandAccepted {
  id: string;
  status: InboxStatus;
  duplicate: boolean;
}

@Controller()
export class BankController {
  constructor(
    private readonly inbox: InboxService,
    private readonly ledger: AccountLedger,
  ) {}

  /** Stores the command and answers at once; a worker executes it shortly after. */
  @Post('commands/:type')
  @HttpCode(HttpStatus.ACCEPTED)
  async submit(
    @Param('type') commandType: string,
    @Headers('idempotency-key') idempotencyKey: string | undefined,
    @Body() body: unknown,
    @Res({ passthrough: true }) response: Response,
  ): Promise<CommandAccepted> {
    const messageId = requireIdempotencyKey(idempotencyKey);
    const payload = await validatePayload(commandType, body);
    const { entry, duplicate } = await this.inbox.receive({ messageId, commandType, payload });
    response.location(`/commands/${entry.id}`);
    return { id: entry.id, status: entry.status, duplicate };
  }

  /** Newest first; `status` is one of pending, processing, completed, failed, dead_letter. */
  @Get('commands')
  async list(
    @Query('status') status?: string,
    @Query('type') commandType?: string,
    @Query('limit') limit?: string,
  ): Promise<{ entries: EntryView[] }> {
    const entries = await this.inbox.list({
      status: status as InboxStatus | undefined,
      commandType,
      limit: limit === undefined ? undefined : Number(limit),
    });
    return { entries: entries.map(toView) };
  }

  @Get('commands/:id')
  async get(@Param('id') id: string): Promise<EntryView> {
    const entry = await this.inbox.get(id);
    if (!entry) throw new InboxEntryNotFoundError(id);
    return toView(entry);
  }

  /**
   * Sends a dead-lettered (or failed) command back to the queue with a fresh attempt budget,
   * optionally with a corrected payload (`{ "payload": { … } }`), which must pass validation.
   */
  @Post('commands/:id/replay')
  @HttpCode(HttpStatus.OK)
  async replay(@Param('id') id: string, @Body() body: unknown): Promise<EntryView> {
    // Anything but `{}` or `{ "payload": … }` is refused: a correction the server did not
    // understand must not replay the original as though corrected. The inbox validates the payload.
    if (body !== undefined && !isObject(body)) throw new InboxArgumentError('body', 'expected a JSON object');
    const unknown = Object.keys(body ?? {}).find((field) => field !== 'payload');
    if (unknown !== undefined) throw new InboxArgumentError(`body.${unknown}`, 'unknown field; expected payload');
    return toView(await this.inbox.replay(id, { actor: 'bank-api', payload: body?.payload as Record<string, unknown> | undefined }));
  }

  /** Accounts whose commands wait behind a dead letter: replay or discard it to let them run. */
  @Get('blocked-accounts')
  async blocked(): Promise<{ accounts: Array<{ accountId: string; waiting: number; blockedBy: EntryView }> }> {
    const keys = await this.inbox.blockedKeys();
    return { accounts: keys.map((key) => ({ accountId: key.orderingKey, waiting: key.waiting, blockedBy: toView(key.blockedBy) })) };
  }

  @Get('accounts/:id')
  async account(@Param('id') accountId: string): Promise<AccountHistory> {
    const account = await this.ledger.history(accountId);
    if (!account) {
      throw new NotFoundException({ error: 'AccountNotFound', message: `No account ${accountId}.` });
    }
    return account;
  }
}

export interface EntryView {
  id: string;
  messageId: string;
  commandType: string;
  status: InboxStatus;
  payload: Record<string, unknown>;
  retryCount: number;
  error: string | null;
  nextRetryAt: Date | null;
  receivedAt: Date;
  processedAt: Date | null;
  /** The account whose commands run one at a time, and this one's place among them. */
  orderingKey: string | null;
  orderingSeq: string | null;
  /** Waits behind an earlier command of its account. */
  waiting: boolean;
}

function toView(entry: InboxEntry): EntryView {
  return {
    id: entry.id,
    messageId: entry.messageId,
    commandType: entry.commandType,
    status: entry.status,
    payload: entry.payload ?? {},
    retryCount: entry.retryCount,
    error: entry.error,
    nextRetryAt: entry.nextRetryAt,
    receivedAt: entry.receivedAt,
    processedAt: entry.processedAt,
    orderingKey: entry.orderingKey,
    orderingSeq: entry.orderingSeq,
    waiting: entry.waiting,
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function requireIdempotencyKey(value: string | undefined): string {
  if (value === undefined || value === '') {
    throw new BadRequestException({
      error: 'MissingIdempotencyKey',
      message: 'Send an Idempotency-Key header (1-255 visible ASCII characters, e.g. a UUID); retries reuse the same key.',
    });
  }
  if (!IDEMPOTENCY_KEY.test(value)) {
    throw new BadRequestException({
      error: 'InvalidIdempotencyKey',
      message: 'The Idempotency-Key header must be sent once, as 1-255 visible ASCII characters without spaces.',
    });
  }
  return value;
}

/**
 * Checks the body against the command class before it is stored, so a client gets a 400 now
 * rather than a dead letter later. The worker validates again with the same rules.
 */
async function validatePayload(commandType: string, body: unknown): Promise<Record<string, unknown>> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadRequestException({
      error: 'InvalidBody',
      message: 'The body must be a JSON object sent with Content-Type: application/json.',
    });
  }
  const payload = body as Record<string, unknown>;
  const commandClass = BANK_COMMANDS.get(commandType);
  // Unknown types go on to receive(), which rejects them with UnknownCommandTypeError.
  if (!commandClass) return payload;
  const errors = await validate(plainToInstance(commandClass, payload), {
    whitelist: true,
    forbidNonWhitelisted: true,
    forbidUnknownValues: true,
  });
  if (errors.length > 0) throw new PayloadValidationError(commandType, describe(errors));
  return payload;
}

function describe(errors: ValidationError[], path = ''): string[] {
  return errors.flatMap((error) => {
    const property = path ? `${path}.${error.property}` : error.property;
    const own = error.constraints ? [`${property}: ${Object.values(error.constraints).join(', ')}`] : [];
    return [...own, ...describe(error.children ?? [], property)];
  });
}
