// Where telemetry spends a child's CPU, from V8 CPU profiles of `npm run bench -- --only telemetry --profile`:
//   node -r ./scripts/register-ts.cjs bench/profile-telemetry.ts .data/bench/profiles-<stamp>/*telemetry*.cpuprofile
// A sample counts as telemetry when, walking its stack from the leaf, a frame of lib/telemetry/ or
// @opentelemetry/ comes before any other application frame (node internals are looked through):
// so a handler run inside `context.with` is not counted, the SDK's own work is. Printed: by the
// outermost telemetry frame (where the library called in), by leaf (self time), and the self
// time of the async_hooks frames that AsyncLocalStorage's promise hooks add (outside telemetry frames).
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface Profile {
  nodes: Array<{ id: number; callFrame: CallFrame; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
}

const isTelemetry = (url: string) => /\/lib\/telemetry\//.test(url) || /node_modules\/@opentelemetry\//.test(url);
const isApplication = (url: string) => url !== '' && !url.startsWith('node:') && !isTelemetry(url);
const name = (frame: CallFrame) =>
  `${frame.functionName || '(anonymous)'} ${frame.url.replace(/^.*\/(lib\/|node_modules\/)/, '$1')}:${frame.lineNumber + 1}`;

function add(map: Map<string, number>, key: string, us: number): void {
  map.set(key, (map.get(key) ?? 0) + us);
}

function top(map: Map<string, number>, count: number): string[] {
  return [...map].sort((a, b) => b[1] - a[1]).slice(0, count).map(([key, us]) => `    ${(us / 1000).toFixed(0).padStart(6)} ms  ${key}`);
}

function summarise(file: string): void {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const entries = new Map<string, number>();
  const leaves = new Map<string, number>();
  const hooks = new Map<string, number>();
  let busy = 0;
  let telemetry = 0;
  let gc = 0;
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    const leaf = byId.get(id)!.callFrame;
    if (leaf.functionName === '(idle)') return;
    busy += us;
    if (leaf.functionName === '(garbage collector)') gc += us;
    if (/async_hooks/.test(leaf.url)) add(hooks, name(leaf), us);
    let outermost: CallFrame | undefined;
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)!.callFrame;
      if (isTelemetry(frame.url)) outermost = frame;
      else if (isApplication(frame.url)) break;
    }
    if (!outermost) return;
    telemetry += us;
    add(entries, name(outermost), us);
    add(leaves, name(leaf), us);
  });
  const ms = (us: number) => `${(us / 1000).toFixed(0)} ms`;
  const hookTotal = [...hooks.values()].reduce((a, b) => a + b, 0);
  process.stdout.write(
    [
      '',
      `${path.basename(file)}: ${ms(busy)} busy; telemetry ${ms(telemetry)} (${((100 * telemetry) / busy).toFixed(1)} %); gc ${ms(gc)}; async_hooks self ${ms(hookTotal)}`,
      '  by where the library called in (outermost telemetry frame):',
      ...top(entries, 12),
      '  by leaf (self time) within telemetry:',
      ...top(leaves, 15),
      '  async_hooks frames (self time):',
      ...top(hooks, 5),
      '',
    ].join('\n'),
  );
}

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write('usage: node -r ./scripts/register-ts.cjs bench/profile-telemetry.ts <file.cpuprofile>...\n');
  process.exit(1);
}
for (const file of files) summarise(file);
