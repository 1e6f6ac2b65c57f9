import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { repoRoot } from '../../src/node/paths.ts';

/**
 * House rule: no function in src/ is longer than 120 lines (a long function holds several jobs;
 * split it). Functions, methods, arrows and accessors are measured from their first to last line;
 * a function nested in another counts on its own and inside its parent.
 */
const MAX_LINES = 120;

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

function longFunctions(file: string, text = readFileSync(file, 'utf8')): string[] {
  const src = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const out: string[] = [];
  const visit = (n: ts.Node) => {
    if (ts.isFunctionLike(n) && 'body' in n && n.body) {
      const a = src.getLineAndCharacterOfPosition(n.getStart(src)).line;
      const b = src.getLineAndCharacterOfPosition(n.getEnd()).line;
      const lines = b - a + 1;
      if (lines > MAX_LINES) {
        const name = (n as ts.FunctionLikeDeclaration).name?.getText(src) ?? '(anonymous)';
        out.push(`${relative(repoRoot(), file)}:${a + 1} ${name}: ${lines} lines`);
      }
    }
    ts.forEachChild(n, visit);
  };
  visit(src);
  return out;
}

describe('function length', () => {
  it(`no function in src/ is over ${MAX_LINES} lines`, () => {
    const long = tsFiles(join(repoRoot(), 'src')).flatMap((f) => longFunctions(f));
    expect(long).toEqual([]);
  });

  it('the check sees a long function (and only that one)', () => {
    const body = (n: number) => Array.from({ length: n }, (_, i) => `  const x${i} = ${i};`).join('\n');
    const text = `function big() {\n${body(MAX_LINES - 1)}\n}\nconst ok = () => {\n${body(MAX_LINES - 2)}\n};\n`;
    expect(longFunctions(join(repoRoot(), 'src', 'x.ts'), text)).toEqual(['src/x.ts:1 big: 121 lines']);
  });
});
