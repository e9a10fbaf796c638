import { Body, Controller, Get, HttpCode, Inject, Param, Post, Query, Req, UseFilters, UseGuards, type Type } from '@nestjs/common';
import { InboxArgumentError, InboxEntryNotFoundError } from '../errors/inbox.error';
import { InboxExceptionFilter } from '../http/inbox-exception.filter';
import { InboxService } from '../receive/inbox.service';
import type { InboxEntry } from '../store/inbox-entry.entity';
import { onlyFields } from '../receive/command-validation';
import { filterFrom, listQueryFrom, typeQueryFrom, type QueryString } from './admin-query';
import { InboxAdminGuard } from './inbox-admin.guard';
import { describeAdminApi } from './openapi';
import { Redaction } from './redaction';
import { INBOX_ADMIN_OPTIONS, type AdminRequest, type ResolvedAdminOptions } from './inbox-admin.options';

/** The body of a change to one entry. */
interface ActionBody {
  reason?: string;
  /** Replay only: the corrected payload, validated by the handler's class. */
  payload?: Record<string, unknown>;
}

/** The body of a bulk action: a dry run first, then the same filter with the count it showed. */
interface BulkBody {
  filter?: QueryString;
  dryRun?: boolean;
  expectedCount?: number;
  reason?: string;
}

/**
 * The console's JSON API, mounted under `path` (the routes are fixed when the module is defined,
 * hence a class per path). Every route runs InboxAdminGuard; the library's errors answer as
 * `toHttpError` maps them. Shapes are documented in the README ("Operator's console").
 */
export function adminController(path: string): Type<unknown> {
  @Controller(path)
  @UseGuards(InboxAdminGuard)
  @UseFilters(InboxExceptionFilter)
  class InboxAdminController {
    private readonly redaction: Redaction;

    constructor(
      private readonly inbox: InboxService,
      @Inject(INBOX_ADMIN_OPTIONS) private readonly options: ResolvedAdminOptions,
    ) {
      this.redaction = new Redaction(options.redact, options.redacts);
    }

    /** What the page needs to know about itself. */
    @Get('api/meta')
    meta() {
      return { readOnly: this.options.readOnly };
    }

    @Get('api/stats')
    stats() {
      return this.inbox.stats();
    }

    /** A page of entries, newest first; `next` is the `after` of the following page (null: the last page). */
    @Get('api/entries')
    async list(@Query() query: QueryString) {
      const listed = listQueryFrom(query);
      const entries = await this.inbox.list(listed);
      const limit = listed.limit ?? 100;
      return { entries: entries.map((entry) => this.redact(entry)), next: entries.length === limit ? entries[entries.length - 1].id : null };
    }

    @Get('api/entries/:id')
    async entry(@Param('id') id: string) {
      const entry = await this.inbox.get(id);
      if (!entry) throw new InboxEntryNotFoundError(id);
      const history = await this.inbox.history(id);
      return { entry: this.redact(entry), history: history.map((record) => this.redaction.record(entry, record)) };
    }

    @Post('api/entries/:id/replay')
    @HttpCode(200)
    async replay(@Param('id') id: string, @Body() body: ActionBody, @Req() request: AdminRequest) {
      const { reason, payload } = actionBody(body, ['reason', 'payload']);
      let corrected = payload;
      if (corrected !== undefined && this.redaction.active && typeof corrected === 'object' && corrected !== null && !Array.isArray(corrected)) {
        const stored = await this.inbox.get(id);
        if (stored) corrected = this.redaction.restoreHidden(corrected, stored);
      }
      return { entry: this.redact(await this.inbox.replay(id, { actor: this.actorOf(request), reason, payload: corrected })) };
    }

    @Post('api/entries/:id/discard')
    @HttpCode(200)
    async discard(@Param('id') id: string, @Body() body: ActionBody, @Req() request: AdminRequest) {
      return { entry: this.redact(await this.inbox.discard(id, { actor: this.actorOf(request), reason: actionBody(body).reason })) };
    }

    @Post('api/entries/:id/dead-letter')
    @HttpCode(200)
    async deadLetter(@Param('id') id: string, @Body() body: ActionBody, @Req() request: AdminRequest) {
      return { entry: this.redact(await this.inbox.deadLetter(id, { actor: this.actorOf(request), reason: actionBody(body).reason })) };
    }

    @Get('api/dead-letter-groups')
    async deadLetterGroups(@Query() query: QueryString) {
      const groups = await this.inbox.deadLetterGroups(typeQueryFrom(query));
      if (this.redaction.active) {
        // An example's error is shown as its entry's would be.
        for (const group of groups) {
          const example = await this.inbox.get(group.example.id);
          group.example.error = example ? this.redact(example).error : null;
        }
      }
      return { groups };
    }

    @Get('api/blocked-keys')
    async blockedKeys(@Query() query: QueryString) {
      const keys = await this.inbox.blockedKeys(typeQueryFrom(query));
      return {
        keys: keys.map((key) => {
          const blockedBy = this.redact(key.blockedBy);
          return { orderingKey: blockedBy.orderingKey, blockedBy, waiting: key.waiting };
        }),
      };
    }

    /** `{ filter, dryRun: true }` counts; `{ filter, expectedCount }` replays, refused (409) when the count changed. */
    @Post('api/bulk/replay')
    @HttpCode(200)
    async bulkReplay(@Body() body: BulkBody, @Req() request: AdminRequest) {
      const { filter, dryRun, expectedCount, reason } = bulkBody(body);
      const result = await this.inbox.replayMany(filter, { actor: this.actorOf(request), reason, dryRun, expectedCount });
      return { matched: result.matched, changed: result.replayed, dryRun: result.dryRun };
    }

    @Post('api/bulk/discard')
    @HttpCode(200)
    async bulkDiscard(@Body() body: BulkBody, @Req() request: AdminRequest) {
      const { filter, dryRun, expectedCount, reason } = bulkBody(body);
      const result = await this.inbox.discardMany(filter, { actor: this.actorOf(request), reason, dryRun, expectedCount });
      return { matched: result.matched, changed: result.discarded, dryRun: result.dryRun };
    }

    private actorOf(request: AdminRequest): string {
      return this.options.actor(request);
    }

    private redact(entry: InboxEntry): InboxEntry {
      return this.redaction.entry(entry);
    }
  }
  describeAdminApi(InboxAdminController);
  return InboxAdminController;
}

/** An action's body: `reason`, and for a replay `payload` (the correction). */
function actionBody(body: unknown, fields: readonly string[] = ['reason']): ActionBody {
  if (body === undefined || body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw new InboxArgumentError('body', 'expected a JSON object');
  onlyFields(body, 'body', fields);
  const { reason, payload } = body as ActionBody;
  return { reason: optionalText(reason, 'body.reason'), payload };
}

function bulkBody(body: unknown): { filter: ReturnType<typeof filterFrom>; dryRun: boolean; expectedCount?: number; reason?: string } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InboxArgumentError('body', 'expected a JSON object');
  onlyFields(body, 'body', ['filter', 'dryRun', 'expectedCount', 'reason']);
  const { filter, dryRun, expectedCount, reason } = body as BulkBody;
  if (dryRun !== undefined && typeof dryRun !== 'boolean') throw new InboxArgumentError('body.dryRun', 'expected true or false');
  if (dryRun !== true && expectedCount === undefined) {
    throw new InboxArgumentError('body.expectedCount', 'a bulk action needs the count its dry run showed: send { dryRun: true } first, then { expectedCount }');
  }
  return { filter: filterFrom(filter ?? {}, 'body.filter'), dryRun: dryRun === true, expectedCount, reason: optionalText(reason, 'body.reason') };
}

function optionalText(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new InboxArgumentError(name, 'expected a text');
  return value;
}

