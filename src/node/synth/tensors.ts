/**
 * What a synthetic checkpoint holds (src/node/synth.ts): its config.json, and its tensors — the
 * names and shapes of the model's own checkpoint layout (`checkpointTensors`, src/model/checkpoint.ts,
 * applied to that config.json), each filled from its own PRNG stream — and how they are split into
 * shards.
 *
 * Determinism: every tensor has its own stream (seeded from hash(seed, tensor name)) and values are
 * produced in element order, so a tensor's bytes depend only on (seed, name, shape, dtype) — not on
 * sharding, chunk size or the order tensors are written in.
 */
import { NibbleError } from '../../errors.ts';
import { checkpointTensors } from '../../model/checkpoint.ts';
import { parseConfig } from '../../model/config.ts';
import { DTYPE_BYTES, encodeF32Into, tensorByteSize, type SafetensorsDtype, type TensorToWrite } from '../safetensors-writer.ts';
import { NormalStream } from './prng.ts';
import { SYNTH_SHAPES, SYNTH_SOURCES, type SynthDtype, type SynthShapeName } from './shapes.ts';

export const DTYPES: Record<SynthDtype, { st: SafetensorsDtype; torch: string }> = {
  bf16: { st: 'BF16', torch: 'bfloat16' },
  f16: { st: 'F16', torch: 'float16' },
  f32: { st: 'F32', torch: 'float32' },
};

export interface SynthTensor extends TensorToWrite {
  /** Distribution of the values: mean + std * N(0,1). */
  mean: number;
  std: number;
}

/** Compares names with digit runs as numbers: layers.2 < layers.10. */
export function naturalCompare(a: string, b: string): number {
  const re = /(\d+)|(\D+)/g;
  const pa = a.match(re) ?? [];
  const pb = b.match(re) ?? [];
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i]!;
    const y = pb[i]!;
    if (x === y) continue;
    const dx = /^\d/.test(x);
    const dy = /^\d/.test(y);
    if (dx && dy) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d;
    }
    return x < y ? -1 : 1;
  }
  return pa.length - pb.length;
}

/** Objects with their keys sorted, recursively (stable JSON). */
export function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) out[k] = sortKeys((v as Record<string, unknown>)[k]);
    return out;
  }
  return v;
}

/** The config.json written for a shape / dtype / layer override. */
export function synthConfig(
  shape: SynthShapeName,
  dtype: SynthDtype,
  opts: { layers?: number; seed?: number } = {},
): Record<string, unknown> {
  const base = SYNTH_SHAPES[shape];
  if (!base) throw new NibbleError('bad-argument', `unknown synth shape "${shape}" (known: ${Object.keys(SYNTH_SHAPES).join(', ')})`);
  const cfg: Record<string, unknown> = { ...base, torch_dtype: DTYPES[dtype].torch };
  const layers = opts.layers ?? base.num_hidden_layers;
  cfg.num_hidden_layers = layers;
  if (typeof base.max_window_layers === 'number') cfg.max_window_layers = Math.min(base.max_window_layers, layers);
  cfg.nibble_synthetic = {
    note: 'Synthetic checkpoint: real shapes, seeded random weights. Not a trained model; its output is noise.',
    shape,
    source_repo: SYNTH_SOURCES[shape],
    seed: opts.seed ?? 0,
    layers,
    real_num_hidden_layers: base.num_hidden_layers,
    tokenizer:
      "stand-in: the Llama 2 tokenizer (32000 ids, <s>=1, </s>=2), not the model's own; bos/eos ids above are the real model's",
  };
  return sortKeys(cfg) as Record<string, unknown>;
}

/**
 * A tensor whose `fill` writes the next chunk of its values: mean + std * N(0,1) from the stream of
 * (seed, name), encoded as `dtype`. Chunks must come in order from element 0.
 */
function synthTensor(name: string, shape: number[], dtype: SafetensorsDtype, seed: number, mean: number, std: number): SynthTensor {
  let stream: NormalStream | null = null;
  let next = 0;
  let scratch = new Float32Array(0);
  const count = shape.reduce((a, b) => a * b, 1);
  return {
    name,
    dtype,
    shape,
    mean,
    std,
    fill(chunk: Uint8Array, offsetElements: number) {
      if (offsetElements === 0) {
        stream = new NormalStream(seed, name);
        next = 0;
      }
      if (!stream || offsetElements !== next) {
        throw new NibbleError('bad-argument', `synth tensor ${name}: chunks must be filled in order`);
      }
      const n = chunk.byteLength / DTYPE_BYTES[dtype];
      if (scratch.length < n) scratch = new Float32Array(n);
      const vals = scratch.subarray(0, n);
      stream.fill(vals, mean, std);
      encodeF32Into(vals, dtype, chunk);
      next += n;
      if (next === count) scratch = new Float32Array(0); // release
    },
  };
}

/**
 * Every tensor of the checkpoint with HF names and shapes, in natural name order: weight matrices
 * ~ N(0, 0.02), norm weights ~ 1 + N(0, 0.01), biases ~ N(0, 0.01).
 */
export function synthTensors(
  shape: SynthShapeName,
  dtype: SynthDtype,
  opts: { layers?: number; seed?: number } = {},
): SynthTensor[] {
  if (!SYNTH_SHAPES[shape]) throw new NibbleError('bad-argument', `unknown synth shape "${shape}"`);
  const st = DTYPES[dtype]?.st;
  if (!st) throw new NibbleError('bad-argument', `unknown dtype "${dtype}" (bf16, f16, f32)`);
  const seed = opts.seed ?? 0;
  const cfg = parseConfig(synthConfig(shape, dtype, opts));
  const tensors = checkpointTensors(cfg).map((t) => {
    const bias = t.kind === 'vector' && t.name.endsWith('.bias');
    const norm = t.kind === 'vector' && !bias;
    return synthTensor(t.name, t.shape, st, seed, norm ? 1 : 0, t.kind === 'matrix' ? 0.02 : 0.01);
  });
  return tensors.sort((a, b) => naturalCompare(a.name, b.name));
}

/**
 * Splits tensors (already in order) into `n` contiguous groups of roughly equal byte size; every
 * group gets at least one tensor.
 */
export function planShards<T extends Pick<TensorToWrite, 'dtype' | 'shape'>>(tensors: readonly T[], n: number): T[][] {
  if (!Number.isInteger(n) || n < 1) throw new NibbleError('bad-argument', `shards must be a positive integer, got ${n}`);
  if (n > tensors.length) throw new NibbleError('bad-argument', `cannot split ${tensors.length} tensors into ${n} shards`);
  const sizes = tensors.map((t) => tensorByteSize(t));
  let remaining = sizes.reduce((a, b) => a + b, 0);
  const groups: T[][] = [[]];
  let cur = 0;
  let target = remaining / n;
  tensors.forEach((t, i) => {
    const s = groups.length - 1;
    const size = sizes[i]!;
    const tensorsLeft = tensors.length - i;
    const shardsAfter = n - 1 - s;
    if (cur > 0 && shardsAfter > 0 && (cur + size / 2 > target || tensorsLeft <= shardsAfter)) {
      remaining -= cur;
      target = remaining / shardsAfter;
      groups.push([]);
      cur = 0;
    }
    groups[groups.length - 1]!.push(t);
    cur += size;
  });
  return groups;
}

export function shardFileName(i: number, n: number): string {
  const p = (x: number) => String(x).padStart(5, '0');
  return `model-${p(i + 1)}-of-${p(n)}.safetensors`;
}
