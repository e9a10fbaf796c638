import { readFileSync } from 'node:fs';
import path from 'node:path';

export const README = path.join(__dirname, '..', '..', 'README.md');

/**
 * A ```ts block of README.md. Two kinds:
 * - a file of the Quick start app: its first line is `// src/<name>.ts`, and it imports the other
 *   files by relative path, as it would in a real app;
 * - a fragment (`await inbox.get(id)` under "Operations"): compiled alone, as an ES module (so
 *   `await` may stand at the top), after the declarations of the `<!-- ts-context: … -->`
 *   comment right above the block, which GitHub does not show.
 */
export interface ReadmeBlock {
  /** Line of README.md where the code starts (1-based). */
  line: number;
  code: string;
  /** The Quick start file's path, e.g. `src/main.ts`; undefined for fragments. */
  file?: string;
  /** Declarations a fragment assumes ('' when none). */
  context: string;
}

const FILE_HEADER = /^\/\/ (src\/[\w./-]+\.ts)$/;

export function readmeTypeScriptBlocks(markdown = readFileSync(README, 'utf8')): ReadmeBlock[] {
  const lines = markdown.split('\n');
  const blocks: ReadmeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```ts') continue;
    const end = lines.findIndex((line, j) => j > i && line.trim() === '```');
    if (end < 0) throw new Error(`README.md:${i + 1}: a \`\`\`ts block is never closed`);
    const code = lines.slice(i + 1, end).join('\n');
    blocks.push({ line: i + 2, code, file: FILE_HEADER.exec(lines[i + 1])?.[1], context: contextAbove(lines, i) });
    i = end;
  }
  return blocks;
}

/** The text of a `<!-- ts-context: … -->` comment ending on the line above the fence (blank lines allowed). */
function contextAbove(lines: string[], fence: number): string {
  let last = fence - 1;
  while (last >= 0 && lines[last].trim() === '') last--;
  if (last < 0 || !lines[last].trim().endsWith('-->')) return '';
  let first = last;
  while (first >= 0 && !lines[first].includes('<!--')) first--;
  const comment = lines.slice(first, last + 1).join('\n');
  const match = /<!--\s*ts-context:([\s\S]*?)-->/.exec(comment);
  return match ? match[1].trim() : '';
}
