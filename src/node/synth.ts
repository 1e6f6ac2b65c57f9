/**
 * Deterministic synthetic checkpoints with the exact shapes of real models (Node only).
 *
 * `synthModel` writes a Hugging Face style folder — config.json, generation_config.json, safetensors
 * weights (one file or N shards + model.safetensors.index.json), a stand-in tokenizer and a README —
 * whose tensors have the real names, shapes and dtype of SmolLM2-135M/360M, Llama-3.2-1B or
 * Qwen2.5-0.5B, filled with seeded random numbers: weights ~ N(0, 0.02), norm weights ~ 1 + N(0, 0.01),
 * biases ~ N(0, 0.01). They exercise the download, loading, quantization and speed paths at real sizes
 * without needing the real weights; the text they generate is noise.
 *
 * Determinism: every tensor has its own PRNG stream (xoshiro128** seeded from hash(seed, tensor
 * name)) and values are produced in element order, so a tensor's bytes depend only on
 * (seed, name, shape, dtype) — not on sharding, chunk size or the order tensors are written in.
 */
import { modelsDir, repoRoot } from './paths.ts';
import { copyFile, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { NibbleError } from '../errors.ts';
import {
  DTYPE_BYTES,
  encodeF32Into,
  tensorByteSize,
  writeSafetensors,
  type SafetensorsDtype,
  type TensorToWrite,
} from './safetensors-writer.ts';

export type SynthShapeName = 'smollm2-135m' | 'smollm2-360m' | 'llama-3.2-1b' | 'qwen2.5-0.5b';
export type SynthDtype = 'bf16' | 'f16' | 'f32';

/** The config.json fields of a real checkpoint (what its published config.json holds). */
export interface SynthConfig {
  architectures: string[];
  model_type: 'llama' | 'qwen2';
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim?: number;
  vocab_size: number;
  max_position_embeddings: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: null | {
    rope_type: string;
    factor: number;
    low_freq_factor: number;
    high_freq_factor: number;
    original_max_position_embeddings: number;
  };
  tie_word_embeddings: boolean;
  bos_token_id: number;
  eos_token_id: number | number[];
  hidden_act: string;
  [key: string]: unknown;
}

/** Published config.json of each model (base, not instruct), torch_dtype excluded (set per dtype). */
export const SYNTH_SHAPES: Record<SynthShapeName, SynthConfig> = {
  'smollm2-135m': {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 0,
    eos_token_id: 0,
    hidden_act: 'silu',
    hidden_size: 576,
    initializer_range: 0.041666666666666664,
    intermediate_size: 1536,
    is_llama_config: true,
    max_position_embeddings: 8192,
    model_type: 'llama',
    num_attention_heads: 9,
    num_hidden_layers: 30,
    num_key_value_heads: 3,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_interleaved: false,
    rope_scaling: null,
    rope_theta: 100000,
    tie_word_embeddings: true,
    transformers_version: '4.40.1',
    use_cache: true,
    vocab_size: 49152,
  },
  'smollm2-360m': {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 0,
    eos_token_id: 0,
    hidden_act: 'silu',
    hidden_size: 960,
    initializer_range: 0.02,
    intermediate_size: 2560,
    is_llama_config: true,
    max_position_embeddings: 8192,
    model_type: 'llama',
    num_attention_heads: 15,
    num_hidden_layers: 32,
    num_key_value_heads: 5,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_interleaved: false,
    rope_scaling: null,
    rope_theta: 100000,
    tie_word_embeddings: true,
    transformers_version: '4.40.1',
    use_cache: true,
    vocab_size: 49152,
  },
  'llama-3.2-1b': {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 128000,
    eos_token_id: 128001,
    head_dim: 64,
    hidden_act: 'silu',
    hidden_size: 2048,
    initializer_range: 0.02,
    intermediate_size: 8192,
    max_position_embeddings: 131072,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: 32,
    num_hidden_layers: 16,
    num_key_value_heads: 8,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: {
      factor: 32.0,
      high_freq_factor: 4.0,
      low_freq_factor: 1.0,
      original_max_position_embeddings: 8192,
      rope_type: 'llama3',
    },
    rope_theta: 500000.0,
    tie_word_embeddings: true,
    transformers_version: '4.45.0.dev0',
    use_cache: true,
    vocab_size: 128256,
  },
  'qwen2.5-0.5b': {
    architectures: ['Qwen2ForCausalLM'],
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151643,
    hidden_act: 'silu',
    hidden_size: 896,
    initializer_range: 0.02,
    intermediate_size: 4864,
    max_position_embeddings: 32768,
    max_window_layers: 24,
    model_type: 'qwen2',
    num_attention_heads: 14,
    num_hidden_layers: 24,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-6,
    rope_scaling: null,
    rope_theta: 1000000.0,
    sliding_window: 32768,
    tie_word_embeddings: true,
    transformers_version: '4.40.1',
    use_cache: true,
    use_sliding_window: false,
    vocab_size: 151936,
  },
};

/** Published generation_config.json of each base model. */
export const SYNTH_GENERATION_CONFIGS: Record<SynthShapeName, Record<string, unknown>> = {
  'smollm2-135m': { _from_model_config: true, bos_token_id: 0, eos_token_id: 0, transformers_version: '4.40.1' },
  'smollm2-360m': { _from_model_config: true, bos_token_id: 0, eos_token_id: 0, transformers_version: '4.40.1' },
  'llama-3.2-1b': {
    _from_model_config: true,
    bos_token_id: 128000,
    do_sample: true,
    eos_token_id: 128001,
    temperature: 0.6,
    top_p: 0.9,
    transformers_version: '4.45.0.dev0',
  },
  'qwen2.5-0.5b': {
    bos_token_id: 151643,
    do_sample: false,
    eos_token_id: 151643,
    max_new_tokens: 2048,
    transformers_version: '4.37.0',
  },
};

/** The real repo each shape copies. */
export const SYNTH_SOURCES: Record<SynthShapeName, string> = {
  'smollm2-135m': 'HuggingFaceTB/SmolLM2-135M',
  'smollm2-360m': 'HuggingFaceTB/SmolLM2-360M',
  'llama-3.2-1b': 'meta-llama/Llama-3.2-1B',
  'qwen2.5-0.5b': 'Qwen/Qwen2.5-0.5B',
};

export interface SynthOptions {
  shape: SynthShapeName;
  dtype: SynthDtype;
  /** Output folder (created). */
  out: string;
  /** Number of safetensors shards; 1 (default) writes a single `model.safetensors`. */
  shards?: number;
  /** uint32 seed; default 0. */
  seed?: number;
  /** Folder holding tokenizer.json and tokenizer_config.json to copy (a stand-in tokenizer). */
  tokenizerDir?: string;
  /** Override num_hidden_layers (smaller test models). */
  layers?: number;
  log?: (s: string) => void;
}

export interface SynthResult {
  out: string;
  /** Total size of the files written. */
  bytes: number;
  /** File names written, relative to `out`. */
  files: string[];
}

const STAMP = '.synth.json';
/** Bump when the generated bytes change, so stale caches are rebuilt. */
const GENERATOR_VERSION = 1;

const DTYPES: Record<SynthDtype, { st: SafetensorsDtype; torch: string }> = {
  bf16: { st: 'BF16', torch: 'bfloat16' },
  f16: { st: 'F16', torch: 'float16' },
  f32: { st: 'F32', torch: 'float32' },
};

// ---------------------------------------------------------------------------------------------
// repo root / default folders

/** `<repo root>/.cache/synth/<shape>-<dtype>[-s<N>]` (`.cache/` is git-ignored). */
export function defaultSynthDir(shape: SynthShapeName, dtype: SynthDtype, shards = 1): string {
  return join(repoRoot(), '.cache', 'synth', `${shape}-${dtype}${shards > 1 ? `-s${shards}` : ''}`);
}

/** `${NIBBLE_MODELS_DIR ?? <repo>/../shared/models}/llama2-tokenizer`. */
export function defaultTokenizerDir(): string {
  return join(modelsDir(), 'llama2-tokenizer');
}

// ---------------------------------------------------------------------------------------------
// PRNG: xoshiro128** seeded through splitmix32 from hash(seed, name); normals by the ziggurat
// method (Marsaglia & Tsang 2000, 128 layers), with the layer index taken from bits not used for the
// value (Doornik's fix), so samples are exactly N(0,1) up to float rounding and cost ~1 PRNG call each.

function fnv1a(s: string, h = 0x811c9dc5): number {
  const bytes = new TextEncoder().encode(s);
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  return h >>> 0;
}

function splitmix32(state: number): () => number {
  let a = state | 0;
  return () => {
    a = (a + 0x9e3779b9) | 0;
    let t = a ^ (a >>> 16);
    t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
}

// Ziggurat tables (128 layers, values scaled for signed 32-bit integers).
const ZIG_R = 3.442619855899;
const ZK = new Float64Array(128);
const ZW = new Float64Array(128);
const ZF = new Float64Array(128);
{
  const m1 = 2147483648.0;
  const vn = 9.91256303526217e-3;
  let dn = ZIG_R;
  let tn = dn;
  const q = vn / Math.exp(-0.5 * dn * dn);
  ZK[0] = (dn / q) * m1;
  ZK[1] = 0;
  ZW[0] = q / m1;
  ZW[127] = dn / m1;
  ZF[0] = 1;
  ZF[127] = Math.exp(-0.5 * dn * dn);
  for (let i = 126; i >= 1; i--) {
    dn = Math.sqrt(-2 * Math.log(vn / dn + Math.exp(-0.5 * dn * dn)));
    ZK[i + 1] = (dn / tn) * m1;
    tn = dn;
    ZF[i] = Math.exp(-0.5 * dn * dn);
    ZW[i] = dn / m1;
  }
}

/** A stream of N(0,1) samples (xoshiro128** + ziggurat), deterministic for (seed, key). */
export class NormalStream {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number, key: string) {
    const sm = splitmix32(fnv1a(key, fnv1a(`nibble-synth:${seed >>> 0}`)));
    this.s0 = sm() | 0;
    this.s1 = sm() | 0;
    this.s2 = sm() | 0;
    this.s3 = sm() | 0;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next 32 random bits (xoshiro128**) as an unsigned integer. */
  nextU32(): number {
    const s1 = this.s1;
    const r = Math.imul(s1, 5);
    const out = Math.imul((r << 7) | (r >>> 25), 9) >>> 0;
    const t = s1 << 9;
    let s0 = this.s0;
    let s2 = this.s2;
    let s3 = this.s3;
    s2 ^= s0;
    s3 ^= s1;
    this.s1 = s1 ^ s2;
    s0 ^= s3;
    s2 ^= t;
    this.s0 = s0;
    this.s2 = s2;
    this.s3 = (s3 << 11) | (s3 >>> 21);
    return out;
  }

  /** Uniform in (0, 1). */
  private uni(): number {
    return ((this.nextU32() >>> 8) + 0.5) / 16777216;
  }

  /** One N(0,1) sample. */
  next(): number {
    return this.finish(this.nextU32());
  }

  /** The ziggurat step for the 32 random bits `u`, drawing more bits when `u` is rejected. */
  private finish(u: number): number {
    for (;;) {
      const iz = u & 127;
      const hz = (u & ~127) | 0; // sign and magnitude from the upper 25 bits
      const x = hz * ZW[iz]!;
      if (Math.abs(hz) < ZK[iz]!) return x;
      if (iz === 0) {
        // the tail beyond R
        let tx: number;
        let ty: number;
        do {
          tx = -Math.log(this.uni()) / ZIG_R;
          ty = -Math.log(this.uni());
        } while (ty + ty < tx * tx);
        return hz > 0 ? ZIG_R + tx : -ZIG_R - tx;
      }
      if (ZF[iz]! + this.uni() * (ZF[iz - 1]! - ZF[iz]!) < Math.exp(-0.5 * x * x)) return x;
      u = this.nextU32();
    }
  }

  /** out[i] = mean + std * z_i for the next out.length samples of the stream (same values as next()). */
  fill(out: Float32Array, mean: number, std: number): void {
    const n = out.length;
    let s0 = this.s0;
    let s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    for (let i = 0; i < n; i++) {
      // xoshiro128** inline
      const r = Math.imul(s1, 5);
      const u = Math.imul((r << 7) | (r >>> 25), 9);
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      // ziggurat fast path (~98.8% of draws)
      const iz = u & 127;
      const hz = u & ~127;
      if (Math.abs(hz) < ZK[iz]!) {
        out[i] = mean + std * (hz * ZW[iz]!);
        continue;
      }
      this.s0 = s0;
      this.s1 = s1;
      this.s2 = s2;
      this.s3 = s3;
      out[i] = mean + std * this.finish(u >>> 0);
      s0 = this.s0;
      s1 = this.s1;
      s2 = this.s2;
      s3 = this.s3;
    }
    this.s0 = s0;
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
  }
}

// ---------------------------------------------------------------------------------------------
// tensors

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

/** Every tensor of the checkpoint with HF names and shapes, in natural name order. */
export function synthTensors(
  shape: SynthShapeName,
  dtype: SynthDtype,
  opts: { layers?: number; seed?: number } = {},
): SynthTensor[] {
  const c = SYNTH_SHAPES[shape];
  if (!c) throw new NibbleError('bad-argument', `unknown synth shape "${shape}"`);
  const st = DTYPES[dtype]?.st;
  if (!st) throw new NibbleError('bad-argument', `unknown dtype "${dtype}" (bf16, f16, f32)`);
  const seed = opts.seed ?? 0;
  const layers = opts.layers ?? c.num_hidden_layers;
  const H = c.hidden_size;
  const I = c.intermediate_size;
  const hd = c.head_dim ?? H / c.num_attention_heads;
  const q = c.num_attention_heads * hd;
  const kv = c.num_key_value_heads * hd;
  const bias = c.model_type === 'qwen2';

  const specs: Array<[string, number[], 'w' | 'norm' | 'bias']> = [['model.embed_tokens.weight', [c.vocab_size, H], 'w']];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    specs.push([`${p}.input_layernorm.weight`, [H], 'norm']);
    specs.push([`${p}.self_attn.q_proj.weight`, [q, H], 'w']);
    specs.push([`${p}.self_attn.k_proj.weight`, [kv, H], 'w']);
    specs.push([`${p}.self_attn.v_proj.weight`, [kv, H], 'w']);
    if (bias) {
      specs.push([`${p}.self_attn.q_proj.bias`, [q], 'bias']);
      specs.push([`${p}.self_attn.k_proj.bias`, [kv], 'bias']);
      specs.push([`${p}.self_attn.v_proj.bias`, [kv], 'bias']);
    }
    specs.push([`${p}.self_attn.o_proj.weight`, [H, q], 'w']);
    specs.push([`${p}.post_attention_layernorm.weight`, [H], 'norm']);
    specs.push([`${p}.mlp.gate_proj.weight`, [I, H], 'w']);
    specs.push([`${p}.mlp.up_proj.weight`, [I, H], 'w']);
    specs.push([`${p}.mlp.down_proj.weight`, [H, I], 'w']);
  }
  specs.push(['model.norm.weight', [H], 'norm']);
  if (!c.tie_word_embeddings) specs.push(['lm_head.weight', [c.vocab_size, H], 'w']);

  const tensors = specs.map(([name, dims, kind]) => {
    const mean = kind === 'norm' ? 1 : 0;
    const std = kind === 'w' ? 0.02 : 0.01;
    let stream: NormalStream | null = null;
    let next = 0;
    let scratch = new Float32Array(0);
    const t: SynthTensor = {
      name,
      dtype: st,
      shape: dims,
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
        const n = chunk.byteLength / DTYPE_BYTES[st];
        if (scratch.length < n) scratch = new Float32Array(n);
        const vals = scratch.subarray(0, n);
        stream.fill(vals, mean, std);
        encodeF32Into(vals, st, chunk);
        next += n;
        if (next === dims.reduce((a, b) => a * b, 1)) scratch = new Float32Array(0); // release
      },
    };
    return t;
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

// ---------------------------------------------------------------------------------------------
// the folder

interface Stamp {
  options: Record<string, unknown>;
  files: Array<{ name: string; size: number }>;
  bytes: number;
  created: string;
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) out[k] = sortKeys((v as Record<string, unknown>)[k]);
    return out;
  }
  return v;
}

const jsonText = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

async function readStamp(out: string): Promise<Stamp | null> {
  try {
    return JSON.parse(await readFile(join(out, STAMP), 'utf8')) as Stamp;
  } catch {
    return null;
  }
}

async function stampStillValid(out: string, stamp: Stamp, options: Record<string, unknown>): Promise<boolean> {
  if (JSON.stringify(sortKeys(stamp.options)) !== JSON.stringify(sortKeys(options))) return false;
  for (const f of stamp.files ?? []) {
    try {
      if ((await stat(join(out, f.name))).size !== f.size) return false;
    } catch {
      return false;
    }
  }
  return Array.isArray(stamp.files) && stamp.files.length > 0;
}

function fmtBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

/**
 * Writes a synthetic model folder; returns at once when `out` already holds a complete one made with
 * the same options (a `.synth.json` stamp, written last, records the options and file sizes).
 */
export async function synthModel(opts: SynthOptions): Promise<SynthResult> {
  const { shape, dtype } = opts;
  const log = opts.log ?? (() => {});
  if (!(shape in SYNTH_SHAPES)) {
    throw new NibbleError('bad-argument', `unknown synth shape "${shape}" (known: ${Object.keys(SYNTH_SHAPES).join(', ')})`);
  }
  if (!(dtype in DTYPES)) throw new NibbleError('bad-argument', `unknown dtype "${dtype}" (bf16, f16, f32)`);
  const shards = opts.shards ?? 1;
  if (!Number.isInteger(shards) || shards < 1) throw new NibbleError('bad-argument', `shards must be a positive integer, got ${shards}`);
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new NibbleError('bad-argument', `seed must be an integer in [0, 2^32), got ${seed}`);
  }
  const layers = opts.layers ?? SYNTH_SHAPES[shape].num_hidden_layers;
  if (!Number.isInteger(layers) || layers < 1) throw new NibbleError('bad-argument', `layers must be a positive integer, got ${layers}`);
  const out = resolve(opts.out);
  const tokenizerDir = resolve(opts.tokenizerDir ?? defaultTokenizerDir());

  const options = { generator: GENERATOR_VERSION, shape, dtype, shards, seed, layers };
  const old = await readStamp(out);
  if (old && (await stampStillValid(out, old, options))) {
    log(`synth: ${out} is up to date (${fmtBytes(old.bytes)})`);
    return { out, bytes: old.bytes, files: old.files.map((f) => f.name) };
  }

  const tokFiles = ['tokenizer.json', 'tokenizer_config.json'];
  for (const f of tokFiles) {
    if (!existsSync(join(tokenizerDir, f))) {
      throw new NibbleError(
        'not-found',
        `synth: stand-in tokenizer file ${join(tokenizerDir, f)} not found (pass tokenizerDir or set NIBBLE_MODELS_DIR)`,
      );
    }
  }

  await mkdir(out, { recursive: true });
  await rm(join(out, STAMP), { force: true });
  // Remove weights of an earlier, different synth run in the same folder.
  for (const name of await readdir(out)) {
    if (/^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json|\.partial)?$/.test(name)) await rm(join(out, name), { force: true });
  }

  const files: string[] = [];
  const config = synthConfig(shape, dtype, { layers, seed });
  await writeFile(join(out, 'config.json'), jsonText(config));
  files.push('config.json');
  await writeFile(join(out, 'generation_config.json'), jsonText(sortKeys(SYNTH_GENERATION_CONFIGS[shape])));
  files.push('generation_config.json');

  const tensors = synthTensors(shape, dtype, { layers, seed });
  const groups = planShards(tensors, shards);
  const totalData = tensors.reduce((a, t) => a + tensorByteSize(t), 0);
  log(`synth: ${shape} ${dtype} layers=${layers} seed=${seed}: ${tensors.length} tensors, ${fmtBytes(totalData)} in ${shards} file(s) → ${out}`);
  const weightMap: Record<string, string> = {};
  let doneBytes = 0;
  for (let i = 0; i < groups.length; i++) {
    const name = shards === 1 ? 'model.safetensors' : shardFileName(i, shards);
    const group = groups[i]!;
    let lastPct = -1;
    const base = doneBytes;
    const r = await writeSafetensors(join(out, name), group, {
      metadata: { format: 'pt' },
      onProgress: (written) => {
        const pct = Math.floor(((base + written) / totalData) * 10) * 10;
        if (pct > lastPct && pct < 100) {
          lastPct = pct;
          if (totalData > 256e6) log(`synth: ${name} … ${pct}%`);
        }
      },
    });
    doneBytes += r.dataBytes;
    for (const t of group) weightMap[t.name] = name;
    files.push(name);
    log(`synth: wrote ${name} (${group.length} tensors, ${fmtBytes(r.bytes)})`);
  }
  if (shards > 1) {
    const index = { metadata: { total_size: totalData }, weight_map: sortKeys(weightMap) };
    await writeFile(join(out, 'model.safetensors.index.json'), jsonText(index));
    files.push('model.safetensors.index.json');
  }

  for (const f of tokFiles) {
    await copyFile(join(tokenizerDir, f), join(out, f));
    files.push(f);
  }

  const c = SYNTH_SHAPES[shape];
  const readme = `# Synthetic ${shape} (${dtype}) — not a real model

This folder was generated by \`nibble synth\`. It has the exact tensor names, shapes and config of
[${SYNTH_SOURCES[shape]}](https://huggingface.co/${SYNTH_SOURCES[shape]}) but **random weights**
(seed ${seed}): weights ~ N(0, 0.02), norm weights ~ 1 + N(0, 0.01)${c.model_type === 'qwen2' ? ', q/k/v biases ~ N(0, 0.01)' : ''}.
It is for testing downloads, loading, quantization and speed at real sizes; the text it generates is noise.

- layers: ${layers} of ${c.num_hidden_layers}
- dtype: ${DTYPES[dtype].torch}; ${tensors.length} tensors, ${totalData} bytes of tensor data in ${shards} file(s)
- tokenizer: a stand-in (the Llama 2 tokenizer, 32000 ids, all below the vocab size ${c.vocab_size}),
  not the model's own tokenizer; \`config.json\` keeps the real model's bos/eos ids.
`;
  await writeFile(join(out, 'README.md'), readme);
  files.push('README.md');

  const sized: Array<{ name: string; size: number }> = [];
  for (const f of files) sized.push({ name: f, size: (await stat(join(out, f))).size });
  const bytes = sized.reduce((a, f) => a + f.size, 0);
  const stamp: Stamp = { options, files: sized, bytes, created: new Date().toISOString() };
  await writeFile(join(out, STAMP), jsonText(stamp));
  log(`synth: done, ${fmtBytes(bytes)} in ${out}`);
  return { out, bytes, files };
}
