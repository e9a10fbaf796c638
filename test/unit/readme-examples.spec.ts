import { readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { README, readmeTypeScriptBlocks, type ReadmeBlock } from '../support/readme-blocks';

const ROOT = path.join(__dirname, '..', '..');
/** Where the blocks pretend to live: inside the repository, so node_modules and tsconfig paths resolve. */
const VIRTUAL = path.join(ROOT, '.readme-check');

interface VirtualFile {
  block: ReadmeBlock;
  text: string;
  /** Lines put before the block's code (its context). */
  offset: number;
}

/** One virtual source file per block: Quick start files at their path, fragments as ES modules. */
function virtualFiles(blocks: ReadmeBlock[]): Map<string, VirtualFile> {
  const files = new Map<string, VirtualFile>();
  for (const block of blocks) {
    if (block.file) {
      files.set(path.join(VIRTUAL, block.file), { block, text: block.code, offset: 0 });
    } else {
      const prefix = block.context ? `${block.context}\n` : '';
      const text = `${prefix}${block.code}\nexport {};\n`;
      files.set(path.join(VIRTUAL, `fragment-line-${block.line}.mts`), { block, text, offset: prefix.split('\n').length - 1 });
    }
  }
  return files;
}

/** The repository's compiler options (path `nestjs-inbox` → lib/index.ts), as strict as a new Nest 12 app. */
function compilerOptions(): ts.CompilerOptions {
  const configFile = path.join(ROOT, 'tsconfig.json');
  const { config } = ts.readConfigFile(configFile, ts.sys.readFile);
  const { options } = ts.parseJsonConfigFileContent(config, ts.sys, ROOT, undefined, configFile);
  return { ...options, noEmit: true, isolatedModules: true, types: ['node'], declaration: false, sourceMap: false };
}

/** Parsed library and dependency files, shared by the checks of one run. */
const parsed = new Map<string, ts.SourceFile>();

/** Type-checks every block in one program; returns the errors as `README.md line <n>: TS<code>: <text>`. */
function typeCheck(blocks: ReadmeBlock[]): string[] {
  const files = virtualFiles(blocks);
  const options = compilerOptions();
  const host = ts.createCompilerHost(options);
  const { fileExists, readFile, getSourceFile, directoryExists } = host;
  host.fileExists = (file) => files.has(file) || fileExists(file);
  host.readFile = (file) => files.get(file)?.text ?? readFile(file);
  host.directoryExists = (dir) => dir === VIRTUAL || dir.startsWith(`${VIRTUAL}${path.sep}`) || (directoryExists?.(dir) ?? true);
  host.getSourceFile = (file, language, onError, create) => {
    const virtual = files.get(file);
    if (virtual) return ts.createSourceFile(file, virtual.text, language, true);
    if (!parsed.has(file)) parsed.set(file, getSourceFile(file, language, onError, create)!);
    return parsed.get(file);
  };
  const program = ts.createProgram([...files.keys()], options, host);
  // Only the blocks are checked; the library itself is type-checked by `npm run typecheck`.
  const diagnostics = [
    ...program.getOptionsDiagnostics(),
    ...program.getGlobalDiagnostics(),
    ...[...files.keys()].flatMap((file) => {
      const source = program.getSourceFile(file)!;
      return [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)];
    }),
  ];
  return diagnostics.map((diagnostic) => {
    const text = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
    if (!diagnostic.file || diagnostic.start === undefined) return `TS${diagnostic.code}: ${text}`;
    const { block, offset } = files.get(diagnostic.file.fileName)!;
    const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
    const where = line < offset ? `the ts-context above line ${block.line}` : `line ${block.line + line - offset}`;
    return `README.md ${where}: TS${diagnostic.code}: ${text}`;
  });
}

describe('the TypeScript in README.md', () => {
  const blocks = readmeTypeScriptBlocks();

  it('is found block by block: the Quick start app and the fragments', () => {
    const fences = readFileSync(README, 'utf8').split('\n').filter((line) => line.trim() === '```ts');
    expect(blocks).toHaveLength(fences.length);
    expect(blocks.flatMap((block) => block.file ?? []).sort()).toEqual([
      'src/app.module.ts',
      'src/create-accounts.migration.ts',
      'src/deposit.controller.ts',
      'src/deposit.handler.ts',
      'src/main.ts',
    ]);
    const fragments = blocks.filter((block) => !block.file);
    expect(fragments.filter((block) => block.context === '').map((block) => block.line)).toEqual([]);
  });

  it('compiles, every block, against the library source', () => {
    expect(typeCheck(blocks)).toEqual([]);
  });

  it('reports a block that stops compiling, with its README line', () => {
    const controller = blocks.find((block) => block.file === 'src/deposit.controller.ts')!;
    const imports = "import { InboxEntryNotFoundError, InboxService } from 'nestjs-inbox';";
    expect(controller.code).toContain(imports);
    const broken = blocks.map((block) => (block === controller ? { ...block, code: block.code.replace(imports, '// (import left out)') } : block));
    const constructorLine = controller.line + controller.code.split('\n').findIndex((line) => line.includes('constructor('));
    expect(typeCheck(broken)).toContain(`README.md line ${constructorLine}: TS2304: Cannot find name 'InboxService'.`);
  });
});
