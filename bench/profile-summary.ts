// Summarises V8 CPU profiles written by `npm run bench -- --profile` (nestjs-inbox children):
//   node -r ./scripts/register-ts.cjs bench/profile-summary.ts .data/bench/profiles-<stamp>/*.cpuprofile
// Prints self time by package (lib, typeorm, pg, @nestjs, node internals, GC, idle) and the top
// functions by self time, so you can see where the library's hot path spends its CPU.
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function bucketOf(url: string, name: string): string {
  if (name === '(idle)') return '(idle)';
  if (name === '(garbage collector)') return '(gc)';
  if (name === '(program)') return '(program)';
  if (!url) return '(native/other)';
  const modules = url.lastIndexOf('node_modules/');
  if (modules >= 0) {
    const rest = url.slice(modules + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith('node:')) return 'node internals';
  if (url.includes('/lib/')) return 'nestjs-inbox lib/';
  if (url.includes('/bench/')) return 'bench harness';
  return path.basename(url);
}

function summarise(file: string): void {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const buckets = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, us] of self) {
    const node = byId.get(id)!;
    const { functionName, url, lineNumber } = node.callFrame;
    const bucket = bucketOf(url, functionName);
    buckets.set(bucket, (buckets.get(bucket) ?? 0) + us);
    const where = url ? `${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(lib|bench)\//, '$1/')}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'} ${where}`;
    functions.set(key, (functions.get(key) ?? 0) + us);
  }
  const busy = total - (buckets.get('(idle)') ?? 0);
  const pct = (us: number, of: number) => `${((100 * us) / of).toFixed(1).padStart(5)}%`;
  process.stdout.write(`\n${path.basename(file)}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (not idle)\n`);
  process.stdout.write('  self time by package (share of busy time):\n');
  for (const [bucket, us] of [...buckets].sort((a, b) => b[1] - a[1])) {
    if (bucket === '(idle)') continue;
    process.stdout.write(`    ${pct(us, busy)}  ${(us / 1000).toFixed(0).padStart(6)} ms  ${bucket}\n`);
  }
  process.stdout.write('  top functions by self time:\n');
  for (const [name, us] of [...functions].filter(([n]) => !n.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    process.stdout.write(`    ${pct(us, busy)}  ${name}\n`);
  }
}

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write('usage: node -r ./scripts/register-ts.cjs bench/profile-summary.ts <file.cpuprofile>...\n');
  process.exit(1);
}
for (const file of files) summarise(file);
