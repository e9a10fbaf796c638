// Medians, ranges, ratios and the result table.

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function summarize(values: number[]): Summary {
  return { n: values.length, median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** A measured quantity: one row of the table. */
export interface MetricDef {
  workload: string;
  system: string;
  metric: string;
  unit: string;
  digits: number;
}

export class Results {
  private readonly defs = new Map<string, MetricDef>();
  /** values[key][rep] (sparse: a failed run leaves a hole). */
  private readonly values = new Map<string, Array<number | undefined>>();
  readonly notes: string[] = [];
  readonly failures: string[] = [];

  static key(workload: string, system: string, metric: string): string {
    return `${workload}|${system}|${metric}`;
  }

  add(def: MetricDef, rep: number, value: number): void {
    const key = Results.key(def.workload, def.system, def.metric);
    if (!this.defs.has(key)) this.defs.set(key, def);
    const list = this.values.get(key) ?? [];
    list[rep] = value;
    this.values.set(key, list);
  }

  byRep(key: string): Array<number | undefined> {
    return this.values.get(key) ?? [];
  }

  all(key: string): number[] {
    return this.byRep(key).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  }

  rows(): Array<MetricDef & Summary> {
    return [...this.defs.entries()]
      .map(([key, def]) => ({ ...def, ...summarize(this.all(key)) }))
      .filter((row) => row.n > 0);
  }

  toJSON(): unknown {
    return [...this.defs.entries()].map(([key, def]) => ({ ...def, values: this.byRep(key) }));
  }
}

export interface RatioDef {
  label: string;
  /** numerator / denominator metric keys; or `absolute` for a single value checked against the target. */
  numerator: string;
  denominator?: string;
  target: { op: '>=' | '<='; value: number };
  unit?: string;
}

export interface RatioRow {
  label: string;
  value: number;
  perRepMin: number;
  perRepMax: number;
  target: string;
  pass: boolean;
}

export function evaluateRatio(results: Results, def: RatioDef): RatioRow | undefined {
  const num = results.all(def.numerator);
  if (num.length === 0) return undefined;
  let value: number;
  let perRep: number[];
  if (def.denominator) {
    const den = results.all(def.denominator);
    if (den.length === 0) return undefined;
    value = median(num) / median(den);
    const a = results.byRep(def.numerator);
    const b = results.byRep(def.denominator);
    perRep = a.flatMap((x, i) => (typeof x === 'number' && typeof b[i] === 'number' ? [x / b[i]!] : []));
  } else {
    value = median(num);
    perRep = num;
  }
  const pass = def.target.op === '>=' ? value >= def.target.value : value <= def.target.value;
  return {
    label: def.label,
    value,
    perRepMin: perRep.length ? Math.min(...perRep) : NaN,
    perRepMax: perRep.length ? Math.max(...perRep) : NaN,
    target: `${def.target.op === '>=' ? '≥' : '≤'} ${def.target.value}${def.unit ?? ''}`,
    pass,
  };
}

export function formatNumber(value: number, digits: number): string {
  if (!Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Renders rows as a GitHub-flavoured markdown table (also readable in a terminal). */
export function markdownTable(header: string[], rows: string[][], align: Array<'l' | 'r'>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const pad = (cell: string, i: number) => (align[i] === 'r' ? cell.padStart(widths[i]) : cell.padEnd(widths[i]));
  const line = (cells: string[]) => `| ${cells.map(pad).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (align[i] === 'r' ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

export function renderResults(results: Results): string {
  const rows = results.rows().map((r) => [
    r.workload,
    r.system,
    r.metric,
    formatNumber(r.median, r.digits),
    `${formatNumber(r.min, r.digits)}–${formatNumber(r.max, r.digits)}`,
    r.unit,
    String(r.n),
  ]);
  return markdownTable(['workload', 'system', 'metric', 'median', 'min–max', 'unit', 'n'], rows, ['l', 'l', 'l', 'r', 'r', 'l', 'r']);
}

export function renderRatios(rows: RatioRow[], enforced: boolean): string {
  return markdownTable(
    ['target ratio', 'value', 'per-rep min–max', 'target', enforced ? 'status' : 'status (not enforced)'],
    rows.map((r) => [
      r.label,
      formatNumber(r.value, 2),
      `${formatNumber(r.perRepMin, 2)}–${formatNumber(r.perRepMax, 2)}`,
      r.target,
      r.pass ? 'PASS' : 'MISS',
    ]),
    ['l', 'r', 'r', 'l', 'l'],
  );
}
