// npm run bench [-- --smoke | --long] [--repeat N] [--only receive,drain,drain-noop,latency,dedup,failure,scale,keys,telemetry] [--profile] [--no-enforce]
//                [--systems nestjs-inbox,graphile-worker,pg-boss,raw-pg] [--entrant <text in an entrant's label>]
//
// Compares nestjs-inbox with pg-boss, graphile-worker and raw-pg floors on identical workloads.
// Every measurement runs in a fresh database (created here, dropped after) and in child processes;
// systems alternate within each repetition (rotated order). Prints one table of medians with
// min–max and the target ratios. Exit code: 0 ok, 1 a run broke, 2 a target was missed (not in --smoke).
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import path from 'node:path';
import { FULL_SIZES, loadAverage, localPostmasterPid, LONG_SIZES, SMOKE_SIZES, withClient, type Sizes } from './common';
import { evaluateRatio, renderRatios, renderResults, Results, type RatioDef, type RatioRow } from './stats';
import { loadAdapter } from './systems';
import { TELEMETRY_SETUP } from './telemetry-workload';
import { buildScaleTemplate, ENTRANTS, runEntrant, WORKLOADS, type WorkloadName } from './workloads';

interface Flags {
  smoke: boolean;
  repeat: number;
  only: WorkloadName[];
  profile: boolean;
  enforce: boolean;
  /** Only these systems (tuning runs); default all. */
  systems?: string[];
  /** Longer receives and drains, after a longer warm-up (LONG_SIZES). */
  long: boolean;
  /** Only the entrants whose label contains this text (tuning runs). */
  entrant?: string;
}

function parseFlags(argv: string[]): Flags {
  const flags: Flags = { smoke: false, repeat: 3, only: [...WORKLOADS], profile: false, enforce: true, long: false };
  let repeatGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const inline = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : undefined;
      if (inline !== undefined) return inline;
      const next = argv[++i];
      if (next === undefined) throw new Error(`${arg} needs a value`);
      return next;
    };
    if (arg === '--smoke') flags.smoke = true;
    else if (arg === '--long') flags.long = true;
    else if (arg === '--profile') flags.profile = true;
    else if (arg === '--no-enforce') flags.enforce = false;
    else if (arg.startsWith('--repeat')) {
      flags.repeat = Number.parseInt(value(), 10);
      repeatGiven = true;
      if (!Number.isInteger(flags.repeat) || flags.repeat < 1) throw new Error('--repeat expects a positive integer');
    } else if (arg.startsWith('--only')) {
      const names = value().split(',').map((s) => s.trim()).filter(Boolean);
      for (const name of names) if (!WORKLOADS.includes(name as WorkloadName)) throw new Error(`unknown workload "${name}" (${WORKLOADS.join(', ')})`);
      flags.only = WORKLOADS.filter((w) => names.includes(w));
    } else if (arg.startsWith('--systems')) {
      flags.systems = value().split(',').map((s) => s.trim()).filter(Boolean);
    } else if (arg.startsWith('--entrant')) {
      flags.entrant = value();
    } else if (arg === '--help' || arg === '-h') {
      const lines = readFileSync(__filename, 'utf8').split('\n');
      process.stdout.write(`${lines.slice(0, lines.findIndex((line) => !line.startsWith('//'))).join('\n')}\n`);
      process.exit(0);
    } else throw new Error(`unknown flag "${arg}"`);
  }
  if (flags.smoke && flags.long) throw new Error('--smoke and --long exclude each other');
  if (flags.smoke) {
    if (!repeatGiven) flags.repeat = 1;
    flags.enforce = false;
  }
  return flags;
}

function versionOf(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(path.join(__dirname, '..', 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

function ratioDefs(sizes: Sizes): RatioDef[] {
  const k = (workload: string, system: string, metric: string) => `${workload}|${system}|${metric}`;
  const count = (n: number) => n.toLocaleString('en-US');
  const history = sizes.scaleHistory >= 1_000_000 ? `${sizes.scaleHistory / 1_000_000}M` : sizes.scaleHistory.toLocaleString('en-US');
  return [
    { label: 'drain (event row): nestjs-inbox / graphile-worker', numerator: k('drain', 'nestjs-inbox', 'commands/s'), denominator: k('drain', 'graphile-worker', 'commands/s'), target: { op: '>=', value: 1.2 } },
    { label: 'drain (event row): nestjs-inbox / raw-pg batch floor', numerator: k('drain', 'nestjs-inbox', 'commands/s'), denominator: k('drain', 'raw-pg batch floor', 'commands/s'), target: { op: '>=', value: 0.85 } },
    { label: 'drain no-op: nestjs-inbox / graphile-worker', numerator: k('drain-noop', 'nestjs-inbox', 'commands/s'), denominator: k('drain-noop', 'graphile-worker', 'commands/s'), target: { op: '>=', value: 1.0 } },
    {
      label: 'worker CPU per command, no-op drain: nestjs-inbox / graphile-worker',
      numerator: k('drain-noop', 'nestjs-inbox', 'worker CPU per command'),
      denominator: k('drain-noop', 'graphile-worker', 'worker CPU per command'),
      target: { op: '<=', value: 1.0 },
    },
    { label: 'receive: nestjs-inbox / bare insert', numerator: k('receive', 'nestjs-inbox', 'calls/s'), denominator: k('receive', 'raw-pg bare insert', 'calls/s'), target: { op: '>=', value: 0.9 } },
    { label: 'intake, batches of 100: receiveMany / receive', numerator: k('intake', 'nestjs-inbox receiveMany', 'commands/s'), denominator: k('intake', 'nestjs-inbox receive, one call per command', 'commands/s'), target: { op: '>=', value: 5 } },
    { label: 'intake: receiveMany / graphile-worker addJobs', numerator: k('intake', 'nestjs-inbox receiveMany', 'commands/s'), denominator: k('intake', 'graphile-worker addJobs', 'commands/s'), target: { op: '>=', value: 1.0 } },
    { label: 'intake: receiveMany / pg-boss insert', numerator: k('intake', 'nestjs-inbox receiveMany', 'commands/s'), denominator: k('intake', 'pg-boss insert', 'commands/s'), target: { op: '>=', value: 1.0 } },
    { label: 'dedup receive: nestjs-inbox / bare insert', numerator: k('dedup', 'nestjs-inbox', 'calls/s'), denominator: k('dedup', 'raw-pg bare insert', 'calls/s'), target: { op: '>=', value: 0.8 } },
    { label: 'latency p50 nestjs-inbox (ms, absolute)', numerator: k('latency', 'nestjs-inbox', 'p50 send→handler'), target: { op: '<=', value: 1.0 } },
    { label: 'latency p99 nestjs-inbox (ms, absolute)', numerator: k('latency', 'nestjs-inbox', 'p99 send→handler'), target: { op: '<=', value: 3.5 } },
    { label: 'failure path: nestjs-inbox / pg-boss', numerator: k('failure', 'nestjs-inbox', 'to dead letter (3 attempts)'), denominator: k('failure', 'pg-boss', 'to dead letter (3 attempts)'), target: { op: '>=', value: 1.0 } },
    { label: `scale drain: ${history} history / empty`, numerator: k('scale', 'nestjs-inbox, with history', 'commands/s'), denominator: k('scale', 'nestjs-inbox, empty table', 'commands/s'), target: { op: '>=', value: 0.85 } },
    { label: `scale claim latency: ${history} history / empty`, numerator: k('scale', 'nestjs-inbox, with history', 'claim latency (client)'), denominator: k('scale', 'nestjs-inbox, empty table', 'claim latency (client)'), target: { op: '<=', value: 1.15 } },
    { label: 'worker peak RSS: nestjs-inbox / graphile-worker', numerator: k('drain', 'nestjs-inbox', 'worker peak RSS'), denominator: k('drain', 'graphile-worker', 'worker peak RSS'), target: { op: '<=', value: 1.0 } },
    {
      label: 'worker peak RSS: nestjs-inbox / graphile-worker, both in a Nest + TypeORM app',
      numerator: k('drain', 'nestjs-inbox', 'worker peak RSS'),
      denominator: k('drain', 'graphile-worker in a Nest + TypeORM app', 'worker peak RSS'),
      target: { op: '<=', value: 1.0 },
    },
    {
      label: `keys drain: ${count(sizes.drain)} in ${count(sizes.drainKeys)} keys / no keys`,
      numerator: k('keys', 'drain, keyed', 'commands/s'),
      denominator: k('keys', 'drain, no keys', 'commands/s'),
      target: { op: '>=', value: 0.8 },
    },
    {
      label: `keys drain, ${sizes.slowKeys} keys, 2 ms handler: commands/s / per-key serial limit`,
      numerator: k('keys', 'drain, few keys, 2 ms handler', 'commands/s'),
      denominator: k('keys', 'drain, few keys, 2 ms handler', 'per-key serial limit'),
      target: { op: '>=', value: 0.8 },
    },
    {
      label: `keys drain, ${sizes.slowKeys} keys, 2 ms handler: commands/s / the same wait in bare loops`,
      numerator: k('keys', 'drain, few keys, 2 ms handler', 'commands/s'),
      denominator: k('keys', 'drain, few keys, 2 ms handler', 'per-key floor (bare loops)'),
      target: { op: '>=', value: 0.8 },
    },
    {
      label: `keys claim latency: ${count(sizes.claimBacklog)} due in ${count(sizes.claimKeys)} keys, one blocked / no keys`,
      numerator: k('keys', 'claim, keyed, one key blocked', 'claim latency (client)'),
      denominator: k('keys', 'claim, no keys', 'claim latency (client)'),
      target: { op: '<=', value: 1.5 },
    },
    {
      label: 'keys receive: with a key / without',
      numerator: k('keys', 'receive with a key', 'calls/s'),
      denominator: k('keys', 'receive, no key', 'calls/s'),
      target: { op: '>=', value: 0.9 },
    },
    ...telemetryRatioDefs(k),
  ];
}

/**
 * The telemetry workload's ratios, each for the drain and the receive: with the SDK it may cost up
 * to 10 %; installed without an SDK nothing measurable (its per-repetition range shows the noise);
 * and, to read those, what the SDK costs by itself and the inbox's own share on top of it.
 */
function telemetryRatioDefs(k: (workload: string, system: string, metric: string) => string): RatioDef[] {
  const paths = [
    ['drain', 'commands/s'],
    ['receive', 'calls/s'],
  ] as const;
  // [label, the way measured, the way it is measured against, target]
  const pairs: Array<[string, string, string, number]> = [
    ['SDK / api absent', 'SDK', 'api absent', 0.9],
    ['no SDK / api absent (within noise)', 'no SDK', 'api absent', 0.95],
    ['SDK with inbox telemetry off / api absent (the SDK alone)', 'SDK, inbox telemetry off', 'api absent', 0.9],
    ["SDK / SDK with inbox telemetry off (the inbox's share)", 'SDK', 'SDK, inbox telemetry off', 0.9],
  ];
  return pairs.flatMap(([label, measured, against, value]) =>
    paths.map(([path, metric]) => ({
      label: `telemetry ${path}: ${label}`,
      numerator: k('telemetry', `${path}, ${measured}`, metric),
      denominator: k('telemetry', `${path}, ${against}`, metric),
      target: { op: '>=' as const, value },
    })),
  );
}

const ROOT = path.join(__dirname, '..');

/** Which library is measured: git commit (+dirty) and a hash of lib/ as it is on disk. */
function libraryVersion(): string {
  // BENCH_LIB_VERSION names the checkout when running from a copy (e.g. a snapshot taken so that edits
  // made during a long run do not mix library versions).
  let git = process.env.BENCH_LIB_VERSION ?? '?';
  if (!process.env.BENCH_LIB_VERSION) {
    try {
      git = execFileSync('git', ['-C', ROOT, 'describe', '--always', '--dirty', '--abbrev=10'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    } catch {
      // not a git checkout
    }
  }
  const hash = createHash('sha1');
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const file = path.join(dir, name);
      if (statSync(file).isDirectory()) walk(file);
      else hash.update(name).update(readFileSync(file));
    }
  };
  walk(path.join(ROOT, 'lib'));
  return `git ${git}, lib/ sha1 ${hash.digest('hex').slice(0, 10)}`;
}

/** RSS of a child that only has Node, the TypeScript loader (swc) and pg: the floor under every worker's RSS. */
function baselineRssMiB(): string {
  const probe = spawnSync(
    process.execPath,
    ['-r', path.join(ROOT, 'scripts', 'register-ts.cjs'), '-e',
      "require('./bench/common.ts'); require('pg'); process.stdout.write(/VmHWM:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1])"],
    { cwd: ROOT, encoding: 'utf8' },
  );
  const kb = Number(probe.stdout);
  return Number.isFinite(kb) && kb > 0 ? `${(kb / 1024).toFixed(1)} MiB` : '?';
}

async function serverInfo(adminUrl: string): Promise<string[]> {
  return withClient(adminUrl, async (client) => {
    const show = async (name: string) => (await client.query<Record<string, string>>(`SHOW ${name}`)).rows[0][name];
    const version = (await client.query<{ version: string }>('SELECT version()')).rows[0].version;
    const settings = ['fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'wal_level', 'max_connections'];
    const values: string[] = [];
    for (const setting of settings) values.push(`${setting}=${await show(setting)}`);
    return [version, values.join(', ')];
  });
}

async function main(): Promise<void> {
  let flags: Flags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(1);
  }
  const sizes = flags.smoke ? SMOKE_SIZES : flags.long ? LONG_SIZES : FULL_SIZES;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outDir = path.join(__dirname, '..', '.data', 'bench');
  mkdirSync(outDir, { recursive: true });
  const plansFile = path.join(outDir, `claim-plans-${stamp}.txt`);
  const cpuProfileDir = flags.profile ? path.join(outDir, `profiles-${stamp}`) : undefined;
  const log = (line: string) => process.stdout.write(`${line}\n`);

  const { startPostgres } = await import('../scripts/postgres.mjs');
  const server = await startPostgres('bench');
  const results = new Results();
  let exitCode = 0;
  try {
    const [version, settings] = await serverInfo(server.url);
    const postmasterPid = await localPostmasterPid(server.url);
    const header = [
      `# nestjs-inbox benchmark — ${new Date().toISOString()}${flags.smoke ? ' (SMOKE: tiny counts, targets not enforced)' : ''}`,
      `machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), Node ${process.version}, load average at start ${loadAverage()}`,
      `server: ${server.embedded ? 'embedded (scripts/postgres.mjs)' : 'DATABASE_URL'} — ${version}`,
      `settings: ${settings}`,
      `server CPU: ${postmasterPid ? `measured from /proc (postmaster pid ${postmasterPid})` : 'not measured (server not on this machine)'}`,
      `library: ${libraryVersion()}; child baseline RSS (node + swc TS loader + pg, included in every worker's RSS): ${baselineRssMiB()}`,
      `versions: pg-boss ${versionOf('pg-boss')}, graphile-worker ${versionOf('graphile-worker')}, pg ${versionOf('pg')}, typeorm ${versionOf('typeorm')}, @nestjs/core ${versionOf('@nestjs/core')}`,
      `sizes: receive ${sizes.receive} calls / 8 callers; drain and no-op drain ${sizes.drain} (+${sizes.drainWarmup} warm-up); latency ${sizes.latencySeconds} s at 200/s; ` +
        `dedup ${sizes.dedupKeys * 2} calls for ${sizes.dedupKeys} keys; failure ${sizes.failure} × 3 attempts; scale history ${sizes.scaleHistory.toLocaleString('en-US')} rows; ` +
        `keys: receive and drain over ${sizes.drainKeys} keys, 2 ms drain ${sizes.slowDrain} on ${sizes.slowKeys} keys, ` +
        `claim with ${sizes.claimBacklog} due in ${sizes.claimKeys} keys (${sizes.blockedWaiting} behind one blocked key); ` +
        `telemetry: the nestjs-inbox drain and receive above, each with the OpenTelemetry API absent, without an SDK, with the SDK`,
      `repetitions: ${flags.repeat}; workloads: ${flags.only.join(', ')}`,
      ...(['nestjs-inbox', 'graphile-worker', 'pg-boss', 'raw-pg'] as const).flatMap((name) => loadAdapter(name).settings().map((line) => `${name}: ${line}`)),
      ...(flags.only.includes('telemetry') ? [TELEMETRY_SETUP] : []),
    ];
    log(header.join('\n'));
    log('');

    const scaleTemplate = flags.only.includes('scale') ? 'bench_scale_template' : undefined;
    if (scaleTemplate) await buildScaleTemplate(server.url, scaleTemplate, sizes.scaleHistory, log);
    const started = performance.now();
    try {
      for (let rep = 0; rep < flags.repeat; rep++) {
        log(`## repetition ${rep + 1}/${flags.repeat} (load ${loadAverage()})`);
        for (const workload of flags.only) {
          const entrants = ENTRANTS[workload].filter((e) => (!flags.systems || flags.systems.includes(e.system)) && (!flags.entrant || e.label.includes(flags.entrant)));
          const rotated = entrants.map((_, i) => entrants[(i + rep) % entrants.length]);
          for (const entrant of rotated) {
            try {
              await runEntrant({ adminUrl: server.url, postmasterPid, sizes, rep, results, cpuProfileDir, plansFile, scaleTemplate, log }, workload, entrant);
            } catch (error) {
              const message = `${workload} ${entrant.label} (repetition ${rep + 1}): ${error instanceof Error ? error.message : String(error)}`;
              results.failures.push(message);
              log(`  FAILED ${message.split('\n').slice(0, 40).join('\n')}`);
            }
          }
        }
      }
    } finally {
      if (scaleTemplate) {
        await withClient(server.url, (c) => c.query(`DROP DATABASE IF EXISTS "${scaleTemplate}" WITH (FORCE)`)).catch(() => undefined);
      }
    }

    const ratios = ratioDefs(sizes)
      .map((def) => evaluateRatio(results, def))
      .filter((r): r is RatioRow => r !== undefined);
    const report = [
      ...header,
      `finished in ${((performance.now() - started) / 1000).toFixed(0)} s; load average at end ${loadAverage()}`,
      '',
      renderResults(results),
      '',
      renderRatios(ratios, flags.enforce),
      ...(results.notes.length ? ['', 'claim plans (key line; full plans in ' + path.relative(process.cwd(), plansFile) + '):', ...results.notes.map((n) => `  ${n}`)] : []),
      ...(results.failures.length ? ['', 'FAILED RUNS:', ...results.failures.map((f) => `  ${f.split('\n')[0]}`)] : []),
    ].join('\n');
    log('');
    log(report);
    writeFileSync(path.join(outDir, `report-${stamp}.md`), `${report}\n`);
    writeFileSync(path.join(outDir, `results-${stamp}.json`), JSON.stringify({ flags, sizes, results: results.toJSON(), ratios }, null, 2));
    log(`\n(report and raw values: ${path.relative(process.cwd(), outDir)}/report-${stamp}.md, results-${stamp}.json${cpuProfileDir ? `; CPU profiles: ${path.relative(process.cwd(), cpuProfileDir)}` : ''})`);
    if (results.failures.length) exitCode = 1;
    else if (flags.enforce && ratios.some((r) => !r.pass)) exitCode = 2;
  } finally {
    await server.stop();
  }
  process.exit(exitCode);
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
