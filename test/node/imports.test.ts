import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/node/paths.ts';

/**
 * The import graph of src/ between folders (src/api, src/loader, …; a file at the top of src/ is a
 * node of its own) has no cycle: every `import … from`, `export … from`, side-effect `import '…'`
 * and dynamic `import('…')` of a relative path counts, type-only imports included.
 */
const SRC = join(repoRoot(), 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return /\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

const SPEC = /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/gm;

/** The relative module specifiers a file imports. */
export function importsOf(code: string): string[] {
  const out: string[] = [];
  const text = code.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1');
  for (const m of text.matchAll(SPEC)) {
    const spec = m[1] ?? m[2]!;
    if (spec.startsWith('.')) out.push(spec.replace(/\?.*$/, ''));
  }
  return out;
}

/** The folder node of a path under src/ (its first segment), or null outside src/. */
function nodeOf(file: string): string | null {
  const rel = relative(SRC, file);
  if (rel.startsWith('..')) return null;
  return rel.split(sep)[0]!;
}

/** Folder → folders it imports from, with one example import per edge. */
export function folderGraph(files: string[]): Map<string, Map<string, string>> {
  const g = new Map<string, Map<string, string>>();
  for (const f of files) {
    const from = nodeOf(f)!;
    if (!g.has(from)) g.set(from, new Map());
    for (const spec of importsOf(readFileSync(f, 'utf8'))) {
      const to = nodeOf(resolve(dirname(f), spec));
      if (to && to !== from && !g.get(from)!.has(to)) g.get(from)!.set(to, `${relative(SRC, f)} → ${spec}`);
    }
  }
  return g;
}

/** The strongly connected components of more than one node (Tarjan). */
export function cycles(g: Map<string, Map<string, string>>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of g.get(v)?.keys() ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const v of g.keys()) if (!idx.has(v)) visit(v);
  return out;
}

describe('import graph of src/', () => {
  it('finds imports of every form, and cycles', () => {
    expect(
      importsOf(`import { a } from './a.ts';\nimport type { B } from '../b/b.ts';\nexport { c } from "./c.ts";\nimport './d.ts';\nimport x from 'node:fs';\nconst m = await import('../e/e.ts');\n// import { z } from './commented.ts';\nimport src from '../../shaders/x.wgsl?raw';`),
    ).toEqual(['./a.ts', '../b/b.ts', './c.ts', './d.ts', '../e/e.ts', '../../shaders/x.wgsl']);
    const g = new Map([
      ['a', new Map([['b', '']])],
      ['b', new Map([['c', '']])],
      ['c', new Map([['a', '']])],
      ['d', new Map([['a', '']])],
    ]);
    expect(cycles(g)).toEqual([['a', 'b', 'c']]);
    g.get('c')!.delete('a');
    expect(cycles(g)).toEqual([]);
  });

  it('has no cycle between folders', () => {
    const g = folderGraph(sourceFiles(SRC));
    expect(g.size).toBeGreaterThan(10);
    expect(g.get('api')?.has('model')).toBe(true);
    const found = cycles(g).map((scc) => {
      const edges = scc.flatMap((a) => scc.filter((b) => g.get(a)?.has(b)).map((b) => `${a} → ${b} (${g.get(a)!.get(b)})`));
      return `${scc.join(' ↔ ')}: ${edges.join('; ')}`;
    });
    expect(found).toEqual([]);
  });
});
