import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The shape issue 13 gave the code, kept: a reader takes in one sink file or one function in a
 * sitting. These limits are checked here so that a change that grows past them fails `npm test`.
 */
const root = new URL('../../', import.meta.url).pathname;
const MAX_SINK_FILE_LINES = 300;
const MAX_FUNCTION_LINES = 80;
const MAX_ON_BATCH_LINES = 60;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name));
}

interface FunctionSize {
  where: string;
  name: string;
  lines: number;
}

function functionSizes(file: string): FunctionSize[] {
  const text = readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const out: FunctionSize[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const first = source.getLineAndCharacterOfPosition(node.getStart()).line;
      const last = source.getLineAndCharacterOfPosition(node.end).line;
      const name = 'name' in node && node.name ? (node.name as ts.Node).getText(source) : '<anonymous>';
      out.push({ where: `${relative(root, file)}:${first + 1}`, name, lines: last - first + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

describe('code shape', () => {
  it(`no file in src/sink is over ${MAX_SINK_FILE_LINES} lines`, () => {
    const long = sources(join(root, 'src/sink'))
      .map((f) => ({ file: relative(root, f), lines: readFileSync(f, 'utf8').split('\n').length }))
      .filter((f) => f.lines > MAX_SINK_FILE_LINES);
    expect(long).toEqual([]);
  });

  it(`no function in src is over ${MAX_FUNCTION_LINES} lines`, () => {
    const sizes = sources(join(root, 'src')).flatMap(functionSizes);
    expect(sizes.length).toBeGreaterThan(500);
    expect(sizes.filter((s) => s.lines > MAX_FUNCTION_LINES)).toEqual([]);
  });

  it(`the sink's onBatch reads in under ${MAX_ON_BATCH_LINES} lines`, () => {
    const onBatch = sources(join(root, 'src/sink'))
      .flatMap(functionSizes)
      .filter((s) => s.name === 'onBatch');
    expect(onBatch.length).toBeGreaterThan(0);
    for (const s of onBatch) expect(s.lines, s.where).toBeLessThan(MAX_ON_BATCH_LINES);
  });
});
