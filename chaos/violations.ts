// How the checks word a broken invariant: one violation per check, with the first items shown.

/** Adds `what: n (first, second, ...)` to `violations` when `items` is not empty. */
export function reporter(violations: string[]): (what: string, items: string[], max?: number) => void {
  return (what, items, max = 10) => {
    if (items.length === 0) return;
    const shown = items.slice(0, max).join(', ');
    violations.push(`${what}: ${items.length} (${shown}${items.length > max ? ', ...' : ''})`);
  };
}

/** The same with one item per line, for items that carry an explanation. */
export function listReporter(violations: string[]): (what: string, items: string[], max?: number) => void {
  return (what, items, max = 5) => {
    if (items.length === 0) return;
    const shown = items.slice(0, max).map((line) => `\n    ${line}`).join('');
    violations.push(`${what}: ${items.length}${shown}${items.length > max ? '\n    ...' : ''}`);
  };
}
