import { copyFileSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';

/**
 * Broken copies of stories260K for error-path tests, written under .cache/test-models/<name>
 * (git-ignored; the Vite dev server serves .cache at /cache). Returns the folder.
 */
export function modelVariant(name: string, edit: (dir: string) => void): string {
  const src = join(modelsDir(), 'stories260K');
  const dir = resolve(repoRoot(), '.cache', 'test-models', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) {
    copyFileSync(join(src, f), join(dir, f));
  }
  edit(dir);
  return dir;
}

export function editJson(file: string, f: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(readFileSync(file, 'utf8'));
  f(j);
  writeFileSync(file, JSON.stringify(j, null, 2));
}

/** Rewrites model.safetensors without one tensor (header and data stay consistent). */
export function dropTensor(dir: string, name: string): void {
  const file = join(dir, 'model.safetensors');
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: [number, number] } & Record<string, unknown>>;
  const data = buf.subarray(8 + n);
  const out: Buffer[] = [];
  const newHeader: Record<string, unknown> = {};
  let off = 0;
  for (const [k, v] of Object.entries(header)) {
    if (k === name) continue;
    if (k === '__metadata__') {
      newHeader[k] = v;
      continue;
    }
    const [a, b] = v.data_offsets;
    out.push(data.subarray(a, b));
    newHeader[k] = { ...v, data_offsets: [off, off + (b - a)] };
    off += b - a;
  }
  let h = Buffer.from(JSON.stringify(newHeader), 'utf8');
  const pad = (8 - (h.length % 8)) % 8;
  h = Buffer.concat([h, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  writeFileSync(file, Buffer.concat([len, h, ...out]));
}
