import type { Type } from '@nestjs/common';
import type * as Swagger from '@nestjs/swagger';

/**
 * `@nestjs/swagger`, when the application has installed it (an optional peer): the console's API
 * then appears in the application's OpenAPI document; without it nothing is described and nothing
 * fails. Loaded with `require` so that a missing package is not an error, and only when a console
 * is registered, so that applications without one never load it.
 */
let swagger: typeof Swagger | undefined | null = null;

function loadOptional(): typeof Swagger | undefined {
  if (swagger === null) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      swagger = require('@nestjs/swagger') as typeof Swagger;
    } catch {
      swagger = undefined;
    }
  }
  return swagger;
}

const FILTER_QUERIES: Array<[string, string]> = [
  ['status', 'pending, processing, completed, failed or dead_letter'],
  ['commandType', 'the stored command type'],
  ['deadLetterReason', 'retries_exhausted, permanent_error, invalid_payload, no_handler, lease_expired or manual'],
  ['errorContains', 'case-insensitive part of the last error'],
  ['errorFingerprint', 'a dead-letter group: the last error with ids and numbers masked'],
  ['receivedAfter', 'ISO 8601 time'],
  ['receivedBefore', 'ISO 8601 time'],
  ['includeDiscarded', 'false: only dead letters not discarded'],
];

const FILTER_SCHEMA = {
  type: 'object',
  description: 'The list\'s filters (`payload.<path>` keys for values inside the payload)',
  additionalProperties: { type: 'string' },
};

/** What each route of the console's API is, for the OpenAPI document. */
const ROUTES: Record<string, { summary: string; queries?: Array<[string, string]>; body?: Record<string, unknown> }> = {
  meta: { summary: 'What the page needs to know: whether the console is read-only' },
  stats: { summary: 'Entries by status and by command type, the oldest due age, dead letters by reason' },
  list: {
    summary: 'Entries, newest first, filtered; `next` is the `after` of the following page',
    queries: [...FILTER_QUERIES, ['payload.<path>', 'a value inside the payload, compared as text'], ['limit', '1 to 1000, default 100'], ['after', 'the id that ended the page before']],
  },
  entry: { summary: 'One entry with its attempt timeline and operator actions' },
  replay: {
    summary: 'Sends a dead letter (or a failed entry) back to pending, optionally with a corrected payload',
    body: { type: 'object', properties: { reason: { type: 'string' }, payload: { type: 'object', description: "validated by the handler's class" } } },
  },
  discard: { summary: 'Closes a dead letter without running it', body: { type: 'object', properties: { reason: { type: 'string' } } } },
  deadLetter: { summary: 'Stops a pending or failed entry (reason manual)', body: { type: 'object', properties: { reason: { type: 'string' } } } },
  deadLetterGroups: { summary: 'Dead letters not discarded, grouped by command type and error fingerprint', queries: [['commandType', 'only this type'], ['limit', '1 to 1000']] },
  blockedKeys: { summary: 'Ordering keys held by a dead letter, with how many entries wait behind it', queries: [['commandType', 'only this type'], ['limit', '1 to 1000']] },
  bulkReplay: { summary: 'Replays what a filter matches: `dryRun: true` counts, then `expectedCount` confirms (409 when it changed)', body: bulkBody() },
  bulkDiscard: { summary: 'Discards the dead letters a filter matches, as bulk replay does', body: bulkBody() },
};

function bulkBody(): Record<string, unknown> {
  return {
    type: 'object',
    properties: { filter: FILTER_SCHEMA, dryRun: { type: 'boolean' }, expectedCount: { type: 'integer', minimum: 0 }, reason: { type: 'string' } },
  };
}

/** Describes the API controller's routes (tag, summaries, parameters, bodies, errors) when Swagger is installed. */
export function describeAdminApi(controller: Type<unknown>): void {
  const swagger = loadOptional();
  if (!swagger) return;
  swagger.ApiTags('inbox-admin')(controller);
  for (const [method, doc] of Object.entries(ROUTES)) {
    const descriptor = Object.getOwnPropertyDescriptor(controller.prototype, method);
    if (!descriptor) throw new Error(`nestjs-inbox: the console has no route "${method}" to describe`);
    const decorators: MethodDecorator[] = [
      swagger.ApiOperation({ summary: doc.summary }),
      swagger.ApiOkResponse({ description: 'JSON, as the README describes it' }),
      swagger.ApiResponse({ status: 400, description: 'a bad argument, named in `argument`' }),
      swagger.ApiResponse({ status: 403, description: "refused by the application's guards, or a change on a read-only console" }),
      ...(doc.queries ?? []).map(([name, description]) => swagger.ApiQuery({ name, description, required: false, type: String })),
      ...(doc.body ? [swagger.ApiBody({ schema: doc.body })] : []),
    ];
    for (const decorate of decorators) decorate(controller.prototype, method, descriptor);
    Object.defineProperty(controller.prototype, method, descriptor);
  }
}

/** The page and its files are not part of the API. */
export function excludeFromApi(controller: Type<unknown>): void {
  loadOptional()?.ApiExcludeController()(controller);
}
