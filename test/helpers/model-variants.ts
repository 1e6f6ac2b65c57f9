import { copyFileSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { buildSafetensors } from './safetensors-build.ts';

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

interface Tensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Buffer;
}

/** Rewrites model.safetensors tensor by tensor (`edit` returns the tensor to write, or null to drop it), metadata kept. */
function rewrite(dir: string, edit: (t: Tensor) => Tensor | null): void {
  const file = join(dir, 'model.safetensors');
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const data = buf.subarray(8 + n);
  const tensors: Tensor[] = [];
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const t = edit({ name, dtype: v.dtype, shape: v.shape, data: Buffer.from(data.subarray(...v.data_offsets)) });
    if (t) tensors.push(t);
  }
  writeFileSync(file, buildSafetensors(tensors, { metadata: header.__metadata__ }));
}

/** Rewrites model.safetensors without one tensor (header and data stay consistent). */
export function dropTensor(dir: string, name: string): void {
  rewrite(dir, (t) => (t.name === name ? null : t));
}

/**
 * Rewrites every tensor of model.safetensors through `edit` (which may change its dtype and bytes;
 * the shape stays; null keeps it), recomputing the offsets.
 */
export function rewriteTensors(dir: string, edit: (name: string, dtype: string, data: Buffer, shape: number[]) => { dtype: string; data: Buffer } | null): void {
  rewrite(dir, (t) => ({ ...t, ...(edit(t.name, t.dtype, t.data, t.shape) ?? {}) }));
}

/** F32 bytes → BF16 (truncated) or F16 (round to nearest) bytes. */
export function narrowF32(data: Buffer, dtype: 'BF16' | 'F16'): Buffer {
  const f = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
  const u = new Uint32Array(f.buffer);
  const out = new Uint16Array(f.length);
  for (let i = 0; i < f.length; i++) out[i] = dtype === 'BF16' ? u[i] >>> 16 : f32ToF16Bits(f[i]);
  return Buffer.from(out.buffer);
}

function f32ToF16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7e00;
  if (a >= 0x477ff000) return sign | 0x7c00;
  if (a < 0x38800000) return sign | Math.round(Math.abs(x) / 2 ** -24); // subnormal halves
  const e = (a >>> 23) - 127 + 15;
  let m = (a & 0x7fffff) >>> 13;
  const rest = a & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) m++;
  return sign | ((e << 10) + m);
}
