import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const ROOT = path.join(__dirname, '..', '..');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end; never rejects, so a spec can assert on the outcome. */
export function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd: options.cwd, env: { ...process.env, ...options.env }, timeout: options.timeoutMs ?? 180_000, maxBuffer: 32 * 1024 * 1024 },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr }),
    );
  });
}

async function mustRun(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<string> {
  const result = await run(command, args, options);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.code}) in ${options.cwd}:\n${result.stderr}\n${result.stdout}`);
  return result.stdout;
}

export function scratchFolder(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), `nestjs-inbox-${prefix}-`));
}

/**
 * Packs the library as a fresh clone would: the checkout's tracked and new files (no dist/, no
 * .data/), with this checkout's node_modules, through `npm pack` (which builds in `prepack`).
 * Returns the tarball's path.
 */
export async function packLikeAFreshClone(into: string): Promise<string> {
  const copy = path.join(into, 'clone');
  const listed = await mustRun('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT });
  for (const file of listed.split('\0').filter(Boolean)) {
    if (!existsSync(path.join(ROOT, file))) continue; // deleted, not yet committed
    mkdirSync(path.dirname(path.join(copy, file)), { recursive: true });
    copyFileSync(path.join(ROOT, file), path.join(copy, file));
  }
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(copy, 'node_modules'));
  await mustRun('npm', ['pack', '--pack-destination', into, '--loglevel=error'], { cwd: copy });
  const [tarball] = readdirSync(into).filter((name) => name.endsWith('.tgz'));
  if (!tarball) throw new Error(`npm pack wrote no tarball into ${into}`);
  return path.join(into, tarball);
}

/** The version of `name` this repository's lock file installs. */
export function lockedVersion(name: string): string {
  const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
  const version = lock.packages[`node_modules/${name}`]?.version;
  if (!version) throw new Error(`${name} is not in package-lock.json`);
  return version;
}

/**
 * A new ES-module app, as `nest new` makes one with Nest 12, depending on the tarball and on the
 * peers at the versions this repository is tested with; installed from the npm cache when it can.
 */
export async function installScratchApp(dir: string, tarball: string, dependencies: string[], devDependencies: string[]): Promise<void> {
  const pin = (names: string[]) => Object.fromEntries(names.map((name) => [name, lockedVersion(name)]));
  const manifest = {
    name: 'scratch-app',
    private: true,
    type: 'module',
    dependencies: { 'nestjs-inbox': `file:${tarball}`, ...pin(dependencies) },
    devDependencies: pin(devDependencies),
  };
  writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  // No install scripts: none of these packages needs one to run, and npm 11 asks before running them.
  await mustRun('npm', ['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir });
}

/** The compiler options of a Nest 12 app made by `nest new` (ES modules, strict). */
export const NEST_APP_TSCONFIG = {
  compilerOptions: {
    module: 'nodenext',
    moduleResolution: 'nodenext',
    resolvePackageJsonExports: true,
    esModuleInterop: true,
    isolatedModules: true,
    declaration: true,
    removeComments: true,
    emitDecoratorMetadata: true,
    experimentalDecorators: true,
    allowSyntheticDefaultImports: true,
    target: 'ES2023',
    sourceMap: true,
    outDir: './dist',
    rootDir: './src',
    skipLibCheck: true,
    strict: true,
    strictPropertyInitialization: false,
    types: ['node'],
  },
  include: ['src'],
};
