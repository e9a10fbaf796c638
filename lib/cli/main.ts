#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Presets, SingleBar } from 'cli-progress';
import { Argument, Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { isConnectionError } from '../store/database-errors';
import {
  InboxArgumentError,
  InboxConfigurationError,
  InboxEntryNotFoundError,
  InboxUnavailableError,
  InvalidEntryStateError,
} from '../errors/inbox.error';
import { DEFAULT_LIST_LIMIT, DEFAULT_TABLE_NAME, MAX_LIST_LIMIT } from '../inbox.constants';
import { DEAD_LETTER_REASONS, type DeadLetterReason } from '../state/inbox-state-machine';
import { INBOX_STATUSES, InboxStatus } from '../state/inbox-state-machine';
import type { InboxService } from '../receive/inbox.service';
import type { BulkReplayResult } from '../interfaces/inbox-command.interface';
import type { EntryFilter } from '../store/entry-filter';
import type { CliApp } from './cli-app';
import { formatBlockedKeys, formatEntry, formatEntryTable, formatStats, toJson, type Stats } from './cli-format';

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_UNREACHABLE = 3;

/** Wrong invocation: exit 2. */
class UsageError extends Error {}
/** The database could not be reached: exit 3. */
class UnreachableError extends Error {}

interface GlobalOptions {
  databaseUrl?: string;
  table: string;
  json?: boolean;
}

interface FilterOptions {
  status?: InboxStatus;
  type?: string;
  deadLetterReason?: DeadLetterReason;
  errorContains?: string;
  receivedAfter?: Date;
  receivedBefore?: Date;
}

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ISO_DATE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$/i;

function parseUuid(value: string): string {
  if (!UUID_PATTERN.test(value)) throw new InvalidArgumentError('expected an entry id (a UUID).');
  return value;
}

function parseDate(value: string): Date {
  const date = new Date(value);
  // Date rolls 2025-02-30 over into March; an operator mistyped it.
  const [year, month, day] = value.slice(0, 10).split('-').map(Number);
  const realDay = new Date(Date.UTC(year, month - 1, day)).getUTCDate() === day;
  if (!ISO_DATE.test(value) || Number.isNaN(date.getTime()) || !realDay) {
    throw new InvalidArgumentError('expected an ISO 8601 date or time, e.g. 2025-01-31 or 2025-01-31T08:00:00Z.');
  }
  return date;
}

function integerFrom(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`expected an integer from ${min} to ${max}.`);
    return n;
  };
}

/** Hides the password of a connection URL (also in URLs that do not parse). */
export function maskUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return url.replace(/(\/\/[^/:@]*:)[^@/]*@/, '$1***@');
  }
}

/** pg reports a refused localhost connection as an AggregateError with an empty message. */
function describe(error: unknown): string {
  const e = error as { message?: string; code?: string; errors?: unknown[]; cause?: unknown };
  if (error instanceof InboxUnavailableError && e.cause) return describe(e.cause);
  if (e?.message) return e.message;
  if (Array.isArray(e?.errors) && e.errors.length > 0) return [...new Set(e.errors.map(describe))].join('; ');
  return e?.code ?? String(error);
}

/** The filter options of list and replay --all, in a help group of their own. */
function filterOptions(command: Command, statuses: readonly InboxStatus[], statusHelp: string): Command {
  return command
    .optionsGroup('Filters:')
    .addOption(new Option('--status <status>', statusHelp).choices(statuses))
    .option('--type <commandType>', 'command type')
    .addOption(new Option('--dead-letter-reason <reason>', 'why it was dead-lettered').choices(DEAD_LETTER_REASONS))
    .option('--error-contains <text>', 'case-insensitive text in the last error')
    .option('--received-after <iso>', 'received at or after this time (ISO 8601; no offset = local time)', parseDate)
    .option('--received-before <iso>', 'received before this time (ISO 8601)', parseDate)
    .optionsGroup('Options:');
}

function toFilter(options: FilterOptions): EntryFilter {
  const filter: EntryFilter = {
    status: options.status,
    commandType: options.type,
    deadLetterReason: options.deadLetterReason,
    errorContains: options.errorContains,
    receivedAfter: options.receivedAfter,
    receivedBefore: options.receivedBefore,
  };
  return Object.fromEntries(Object.entries(filter).filter(([, value]) => value !== undefined));
}

/** Boots the library against the database, runs `work`, and always closes the pool. */
async function withInbox(command: Command, work: (inbox: InboxService, json: boolean) => Promise<void>): Promise<void> {
  const { databaseUrl, table, json } = command.optsWithGlobals<GlobalOptions>();
  if (!databaseUrl) throw new UsageError('no database URL: pass --database-url or set DATABASE_URL.');
  if (!/^postgres(ql)?:\/\//i.test(databaseUrl)) throw new UsageError(`the database URL must start with postgres:// or postgresql:// (got ${maskUrl(databaseUrl)}).`);
  // Loaded on demand, so that --help and argument errors answer without loading Nest and TypeORM.
  const { createCliApp } = require('./cli-app') as typeof import('./cli-app');
  let app: CliApp;
  try {
    app = await createCliApp(databaseUrl, table);
  } catch (error) {
    if (error instanceof InboxConfigurationError) throw new UsageError(error.message);
    // Refused, timed out, DNS, the server said no (authentication, no such database: a SQLSTATE),
    // or the connection's TLS could not be set up as the URL asks (sslmode).
    if (isConnectionError(error) || typeof (error as { code?: unknown })?.code === 'string' || /\bSSL\b/.test((error as Error)?.message ?? '')) {
      throw new UnreachableError(`cannot reach the database at ${maskUrl(databaseUrl)}: ${describe(error)}`);
    }
    throw error;
  }
  try {
    await work(app.inbox, json === true);
  } catch (error) {
    if (error instanceof InboxUnavailableError || isConnectionError(error)) {
      throw new UnreachableError(`cannot reach the database at ${maskUrl(databaseUrl)}: ${describe(error)}`);
    }
    throw error;
  } finally {
    await app.close().catch(() => undefined);
  }
}

const out = (text: string): void => void process.stdout.write(`${text}\n`);

async function stats(inbox: InboxService, json: boolean): Promise<void> {
  const byStatus = await inbox.countByStatus();
  const deadLetters = {} as Stats['deadLetters'];
  for (const reason of DEAD_LETTER_REASONS) {
    const filter: EntryFilter = { status: InboxStatus.DeadLetter, deadLetterReason: reason };
    const [all, open] = await Promise.all([inbox.count(filter), inbox.count({ ...filter, includeDiscarded: false })]);
    deadLetters[reason] = { open, discarded: all - open };
  }
  const result: Stats = { byStatus, deadLetters, due: await inbox.dueByCommandType() };
  out(json ? toJson({ ...result, total: Object.values(byStatus).reduce((a, b) => a + b, 0) }) : formatStats(result));
}

async function blocked(inbox: InboxService, json: boolean, options: { type?: string; limit: number }): Promise<void> {
  const keys = await inbox.blockedKeys({ commandType: options.type, limit: options.limit });
  out(json ? toJson(keys) : formatBlockedKeys(keys));
}

async function list(inbox: InboxService, json: boolean, options: FilterOptions & { limit: number }): Promise<void> {
  const filter = toFilter(options);
  const entries = await inbox.list({ ...filter, limit: options.limit });
  if (json) return out(toJson(entries));
  out(formatEntryTable(entries));
  if (entries.length === options.limit) {
    const total = await inbox.count(filter);
    if (total > entries.length) out(`(newest ${entries.length} of ${total} matching entries; raise --limit, up to ${MAX_LIST_LIMIT}, or narrow the filter)`);
  }
}

async function show(inbox: InboxService, json: boolean, id: string): Promise<void> {
  const entry = await inbox.get(id);
  if (!entry) throw new InboxEntryNotFoundError(id);
  const history = await inbox.history(id);
  out(json ? toJson({ entry, history }) : formatEntry(entry, history));
}

interface ReplayOptions extends FilterOptions {
  all?: boolean;
  actor: string;
  reason?: string;
  dryRun?: boolean;
  batchSize?: number;
  progress?: boolean;
}

/** One entry or --all with filters; checked before anything connects. */
function checkReplayArguments(id: string | undefined, options: ReplayOptions): void {
  if (id && options.all) throw new UsageError('give either an entry id or --all, not both.');
  if (!id && !options.all) throw new UsageError('give an entry id, or --all with filters to replay in bulk.');
  const bulkOnly = (['status', 'type', 'deadLetterReason', 'errorContains', 'receivedAfter', 'receivedBefore', 'dryRun', 'batchSize', 'progress'] as const)
    .filter((key) => options[key] !== undefined)
    .map((key) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
  if (id && bulkOnly.length > 0) throw new UsageError(`${bulkOnly.join(', ')} apply only with --all, not to a single entry.`);
}

async function replay(inbox: InboxService, json: boolean, id: string | undefined, options: ReplayOptions): Promise<void> {
  const filter = toFilter(options);
  if (id) {
    const entry = await inbox.replay(id, { actor: options.actor, reason: options.reason });
    return out(json ? toJson(entry) : `Replayed ${entry.id}: it is pending again, and a worker will run it on its next poll.`);
  }

  // A bar only where someone watches it (or asked for it); logs and pipes get the summary line.
  const withBar = !options.dryRun && (process.stderr.isTTY === true || options.progress === true);
  let bar: SingleBar | undefined;
  const onProgress = (replayed: number, matched: number) => {
    if (matched === 0) return;
    if (!bar) {
      bar = new SingleBar(
        { stream: process.stderr, noTTYOutput: true, notTTYSchedule: 1000, format: 'replaying [{bar}] {value}/{total} entries | {duration_formatted}' },
        Presets.shades_classic,
      );
      bar.start(matched, 0);
    }
    bar.setTotal(Math.max(matched, replayed)); // entries dead-lettered meanwhile may join a batch
    bar.update(replayed);
  };
  let result: BulkReplayResult;
  try {
    result = await inbox.replayMany(filter, {
      actor: options.actor,
      reason: options.reason,
      dryRun: options.dryRun,
      batchSize: options.batchSize,
      onProgress: withBar ? onProgress : undefined,
    });
  } finally {
    bar?.stop();
  }
  const summary = { matched: result.matched, replayed: result.replayed, dryRun: result.dryRun };
  if (json) return out(toJson(summary));
  const status = filter.status ?? InboxStatus.DeadLetter;
  if (result.dryRun) return out(`Dry run: ${result.matched} ${status} entries match; nothing was changed.`);
  const skipped = result.matched - result.replayed;
  out(
    `Replayed ${result.replayed} of ${result.matched} matching ${status} entries.` +
      (skipped > 0 ? ` ${skipped} were skipped: held by another session or changed meanwhile; run it again to retry them.` : ''),
  );
}

async function discard(inbox: InboxService, json: boolean, id: string, options: { actor: string; reason?: string }): Promise<void> {
  const entry = await inbox.discard(id, options);
  out(json ? toJson(entry) : `Discarded ${entry.id}: it stays a dead letter (${entry.deadLetterReason ?? 'no reason'}) and will not run unless replayed.`);
}

async function deadLetter(inbox: InboxService, json: boolean, id: string, options: { actor: string; reason?: string }): Promise<void> {
  const entry = await inbox.deadLetter(id, options);
  out(json ? toJson(entry) : `Dead-lettered ${entry.id} (reason manual): it will not run until replayed.`);
}

/** The version in package.json, two folders up from lib/cli (source) and dist/cli (installed). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
}

export function buildProgram(): Command {
  const program = new Command('nestjs-inbox')
    .description('Inspect and operate a nestjs-inbox table: counts, listings, history, replay, discard.')
    .version(packageVersion(), '-V, --version', 'print the version of nestjs-inbox')
    .addOption(new Option('--database-url <url>', 'PostgreSQL connection URL').env('DATABASE_URL'))
    .option('--table <name>', 'inbox table, optionally schema.table', DEFAULT_TABLE_NAME)
    .option('--json', 'print JSON on stdout instead of text')
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ showGlobalOptions: true })
    .addHelpText('after', '\nExit codes: 0 done, 1 entry not found or in the wrong state, 2 invalid arguments, 3 database unreachable.');
  const idArgument = () => new Argument('<id>', 'entry id (UUID)').argParser(parseUuid);
  const audit = (command: Command) =>
    command.requiredOption('--actor <name>', 'who asks (recorded in the history)').option('--reason <text>', 'why (recorded in the history)');

  program
    .command('stats')
    .description('count entries by status, and dead letters by reason')
    .action((_options, command: Command) => withInbox(command, (inbox, json) => stats(inbox, json)));

  filterOptions(program.command('list').description('list entries, newest first'), INBOX_STATUSES, 'entry status')
    .option('--limit <n>', `at most n entries (1-${MAX_LIST_LIMIT})`, integerFrom(1, MAX_LIST_LIMIT), DEFAULT_LIST_LIMIT)
    .action((options: FilterOptions & { limit: number }, command: Command) => withInbox(command, (inbox, json) => list(inbox, json, options)));

  program
    .command('blocked')
    .description('ordering keys held by a dead letter: nothing later of the key runs until it is replayed or discarded')
    .option('--type <commandType>', 'only keys blocked by an entry of this command type')
    .option('--limit <n>', `at most n keys (1-${MAX_LIST_LIMIT})`, integerFrom(1, MAX_LIST_LIMIT), DEFAULT_LIST_LIMIT)
    .addHelpText('after', '\nReplay the blocking entry (nestjs-inbox replay <id>) to run it again first, or discard it to let the key move on.')
    .action((options: { type?: string; limit: number }, command: Command) => withInbox(command, (inbox, json) => blocked(inbox, json, options)));

  program
    .command('show')
    .description('an entry and its history: every attempt and operator action')
    .addArgument(idArgument())
    .action((id: string, _options, command: Command) => withInbox(command, (inbox, json) => show(inbox, json, id)));

  const replayCommand = audit(
    program
      .command('replay')
      .description('send a dead-letter or failed entry back to pending, or every matching one with --all')
      .addArgument(new Argument('[id]', 'entry id (UUID)').argParser(parseUuid))
      .option('--all', 'replay every entry matching the filters (never discarded ones)'),
  )
    .option('--dry-run', 'with --all: count the matching entries, change nothing')
    .option('--batch-size <n>', 'with --all: entries per statement (1-10000, default 500)', integerFrom(1, 10_000))
    .option('--progress', 'with --all: show the progress bar even when stderr is not a terminal');
  filterOptions(replayCommand, [InboxStatus.DeadLetter, InboxStatus.Failed], 'which entries (default dead_letter)')
    .addHelpText(
      'after',
      '\nFilters apply with --all only. The entries go back to pending with a retry count of 0 and\n' +
        'run on a worker\'s next poll; each replay is recorded in the entry\'s history.\n\n' +
        'Replaying with a corrected payload is not offered here: the payload must pass the handler\'s\n' +
        'validation, and only an application that has the handler can do that. Use\n' +
        'InboxService.replay(id, { payload, actor, reason }) in that application.\n\n' +
        'Examples:\n' +
        '  nestjs-inbox replay <id> --actor alice --reason "customer fixed"\n' +
        '  nestjs-inbox replay --all --dead-letter-reason retries_exhausted --type mail.send --actor alice --dry-run',
    )
    .action(async (id: string | undefined, options: ReplayOptions, command: Command) => {
      checkReplayArguments(id, options);
      await withInbox(command, (inbox, json) => replay(inbox, json, id, options));
    });

  audit(program.command('discard').description('close a dead letter without running it; it stays for deduplication and audit').addArgument(idArgument()))
    .action((id: string, options: { actor: string; reason?: string }, command: Command) => withInbox(command, (inbox, json) => discard(inbox, json, id, options)));

  audit(program.command('dead-letter').description('dead-letter a pending or failed entry by hand (reason manual)').addArgument(idArgument()))
    .action((id: string, options: { actor: string; reason?: string }, command: Command) => withInbox(command, (inbox, json) => deadLetter(inbox, json, id, options)));

  return program;
}

/** Maps an error to its exit code, printing one line (no stack) for every expected error. */
function report(error: unknown): number {
  // Commander already printed its message (or the help).
  if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : EXIT_USAGE;
  const fail = (code: number, message: string) => {
    process.stderr.write(`error: ${message}\n`);
    return code;
  };
  if (error instanceof UsageError || error instanceof InboxArgumentError) return fail(EXIT_USAGE, error.message);
  if (error instanceof UnreachableError) return fail(EXIT_UNREACHABLE, error.message);
  if (error instanceof InboxEntryNotFoundError || error instanceof InvalidEntryStateError) return fail(EXIT_FAILED, error.message);
  const code = (error as { driverError?: { code?: string } })?.driverError?.code;
  if (code === '42P01') return fail(EXIT_FAILED, `${(error as Error).message} (wrong --table, or the inbox migration has not run on this database)`);
  if (code) return fail(EXIT_FAILED, (error as Error).message); // a database error: its message says it all
  // A bug, in the CLI or the library: the stack helps whoever reports it.
  return fail(EXIT_FAILED, error instanceof Error ? (error.stack ?? error.message) : String(error));
}

export async function main(argv: string[] = process.argv): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (error) {
    return report(error);
  }
}

if (require.main === module) {
  // `nestjs-inbox list | head` closes the pipe early: stop quietly, as other Unix tools do.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(0);
  });
  void main().then((code) => {
    process.exitCode = code;
    // Every pool is closed by now; should a stray handle remain, do not hang the shell.
    setTimeout(() => process.exit(code), 2000).unref();
  });
}
