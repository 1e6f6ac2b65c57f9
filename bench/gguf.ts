import { closeSync, createWriteStream, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { encodeF32Into, f32ToF16 } from '../src/node/safetensors-writer.ts';
import { f16ToF32, toF32 } from '../src/util/dtype.ts';
import { parseSafetensorsHeader, type DType } from '../src/loader/safetensors.ts';

/**
 * A GGUF writer for the peer benchmark (bench/peer/): a Hugging Face Llama-family folder
 * (config.json, tokenizer.json, tokenizer_config.json, *.safetensors) → one GGUF file that
 * llama.cpp (and so wllama) loads, in F32, F16, Q8_0 or Q4_0.
 *
 * - Metadata: the `llama` (or `qwen2`) architecture keys: context length, embedding length, block
 *   count, feed-forward length, head counts, key/value length when head_dim ≠ hidden / heads, RMS
 *   epsilon, rope base, dimension count and scaling (`linear` / `yarn` as keys; `llama3` as the
 *   `rope_freqs.weight` tensor of per-frequency factors, as convert_hf_to_gguf.py writes it).
 * - Tokenizer: tokens, scores and token types from tokenizer.json, BOS / EOS / UNK / PAD ids,
 *   add-BOS / add-EOS, the chat template. SentencePiece-style vocabularies (a BPE model with
 *   byte_fallback and `▁`: stories260K, Llama 2, TinyLlama) become `tokenizer.ggml.model = llama`,
 *   whose tokenizer merges by score: each piece gets −(rank of the first merge that makes it), so
 *   llama.cpp merges in the order of tokenizer.json's merges. Byte-level BPE (SmolLM2, Llama 3,
 *   Qwen2) becomes `gpt2` with its merges and the pre-tokenizer name llama.cpp knows it by
 *   (`smollm`, `llama-bpe`, `qwen2`, else `gpt-2`). A vocabulary shorter than the model's
 *   (the synthetic models' stand-in tokenizer) is padded with `[PAD<i>]` tokens of type UNUSED.
 * - Tensors: 2-D weights in the requested type; a row length that is not a multiple of the block
 *   (32) falls back to F16 for Q8_0 / Q4_0, as convert_hf_to_gguf.py does; norms and biases stay
 *   F32. q_proj / k_proj rows (and biases) of `llama` are permuted back from the Hugging Face
 *   rotate-half order to llama.cpp's interleaved pairs (`LlamaModel.permute`; k with the KV heads).
 *   Tied embeddings: no `output.weight` (llama.cpp then uses `token_embd.weight`).
 *
 * Q8_0 and Q4_0 follow ggml's reference quantizers (`quantize_row_q8_0_ref`,
 * `quantize_row_q4_0_ref`): blocks of 32 along the row, an f16 scale first.
 * Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (version 3, alignment 32).
 */

export type GgufTensorType = 'F32' | 'F16' | 'Q8_0' | 'Q4_0';

/** ggml_type ids. */
export const GGML_TYPE: Record<GgufTensorType, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8 };
/** llama_ftype ids (general.file_type). */
export const GGUF_FILE_TYPE: Record<GgufTensorType, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 };

/** GGUF metadata value types. */
export const GGUF_VALUE = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12 } as const;

/** llama.cpp token types. */
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export const GGUF_ALIGNMENT = 32;
const QK = 32;

/** Bytes of a row of `n` elements in `type` (n a multiple of 32 for the block types). */
export function rowBytes(type: GgufTensorType, n: number): number {
  switch (type) {
    case 'F32':
      return 4 * n;
    case 'F16':
      return 2 * n;
    case 'Q8_0':
      return (n / QK) * 34;
    case 'Q4_0':
      return (n / QK) * 18;
  }
}

/** The f16 block scale at byte `at` of a Q8_0 / Q4_0 row. */
const blockScale = (bytes: Uint8Array, at: number) => f16ToF32(bytes.subarray(at, at + 2))[0]!;

/** ggml's quantize_row_q8_0_ref: per 32 weights, d = absmax / 127 (f16), q = round(x / d). */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % QK) throw new Error(`Q8_0: row length ${x.length} is not a multiple of ${QK}`);
  const nb = x.length / QK;
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[b * QK + j]!));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(b * 34, f32ToF16(d), true);
    for (let j = 0; j < QK; j++) {
      // roundf: half away from zero
      const v = Math.fround(x[b * QK + j]! * id);
      out[b * 34 + 2 + j] = (Math.sign(v) * Math.round(Math.abs(v))) & 0xff;
    }
  }
  return out;
}

/**
 * ggml's quantize_row_q4_0_ref: per 32 weights, max = the value of largest magnitude (sign kept),
 * d = max / −8 (f16), q = min(15, trunc(x / d + 8.5)); byte j holds weight j (low nibble) and j + 16.
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % QK) throw new Error(`Q4_0: row length ${x.length} is not a multiple of ${QK}`);
  const nb = x.length / QK;
  const out = new Uint8Array(nb * 18);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = x[b * QK + j]!;
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(b * 18, f32ToF16(d), true);
    for (let j = 0; j < QK / 2; j++) {
      const x0 = Math.fround(x[b * QK + j]! * id);
      const x1 = Math.fround(x[b * QK + QK / 2 + j]! * id);
      const q0 = Math.min(15, Math.trunc(Math.fround(x0 + 8.5)));
      const q1 = Math.min(15, Math.trunc(Math.fround(x1 + 8.5)));
      out[b * 18 + 2 + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
    }
  }
  return out;
}

/** Dequantizes a row (tests, and the CPU check of the writer). */
export function dequantizeRow(type: GgufTensorType, bytes: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (type === 'F32') return new Float32Array(bytes.slice(0, 4 * n).buffer);
  if (type === 'F16') return f16ToF32(bytes.subarray(0, 2 * n));
  for (let b = 0; b < n / QK; b++) {
    if (type === 'Q8_0') {
      const d = blockScale(bytes, b * 34);
      for (let j = 0; j < QK; j++) out[b * QK + j] = d * dv.getInt8(b * 34 + 2 + j);
    } else {
      const d = blockScale(bytes, b * 18);
      for (let j = 0; j < QK / 2; j++) {
        const q = bytes[b * 18 + 2 + j]!;
        out[b * QK + j] = d * ((q & 0xf) - 8);
        out[b * QK + QK / 2 + j] = d * ((q >> 4) - 8);
      }
    }
  }
  return out;
}

/** Encodes a row of f32 values in `type`. */
export function encodeRow(type: GgufTensorType, x: Float32Array): Uint8Array {
  switch (type) {
    case 'F32':
      return new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
    case 'F16': {
      const out = new Uint8Array(2 * x.length);
      encodeF32Into(x, 'F16', out);
      return out;
    }
    case 'Q8_0':
      return quantizeQ8_0(x);
    case 'Q4_0':
      return quantizeQ4_0(x);
  }
}

/**
 * llama.cpp's q/k row order from Hugging Face's (convert_hf_to_gguf.py `LlamaModel.permute`):
 * within each head, HF row j·(d/2) + i (j ∈ {0, 1}: the rotate-half halves) becomes row 2i + j.
 * `rows` rows of `cols` values each (cols 1 for a bias).
 */
export function permuteQK(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  if (!Number.isInteger(rows) || rows % heads || (rows / heads) % 2) throw new Error(`permuteQK: ${rows} rows do not split into ${heads} heads of even size`);
  const hd = rows / heads;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < hd / 2; i++) {
        const src = h * hd + j * (hd / 2) + i;
        const dst = h * hd + 2 * i + j;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// GGUF container

export type GgufValue =
  | { type: 'u32'; value: number }
  | { type: 'i32'; value: number }
  | { type: 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'u64'; value: number }
  | { type: 'string[]'; value: string[] }
  | { type: 'f32[]'; value: number[] | Float32Array }
  | { type: 'i32[]'; value: number[] | Int32Array };

export interface GgufTensorInfo {
  name: string;
  /** ggml order: ne[0] is the innermost (a row's length). */
  ne: number[];
  type: GgufTensorType;
  /** Bytes of the tensor data (without padding). */
  bytes: number;
}

class Bytes {
  private parts: Uint8Array[] = [];
  length = 0;
  private enc = new TextEncoder();
  push(b: Uint8Array) {
    this.parts.push(b);
    this.length += b.length;
  }
  private scalar(n: number, f: (dv: DataView) => void) {
    const b = new Uint8Array(n);
    f(new DataView(b.buffer));
    this.push(b);
  }
  u32(v: number) {
    this.scalar(4, (d) => d.setUint32(0, v, true));
  }
  i32(v: number) {
    this.scalar(4, (d) => d.setInt32(0, v, true));
  }
  u64(v: number) {
    this.scalar(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }
  f32(v: number) {
    this.scalar(4, (d) => d.setFloat32(0, v, true));
  }
  u8(v: number) {
    this.push(Uint8Array.of(v));
  }
  str(s: string) {
    const b = this.enc.encode(s);
    this.u64(b.length);
    this.push(b);
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

const align = (n: number, a = GGUF_ALIGNMENT) => Math.ceil(n / a) * a;

/** The GGUF header (magic, version 3, counts, metadata, tensor infos) padded to the alignment. */
export function ggufHeader(kv: [string, GgufValue][], tensors: GgufTensorInfo[]): { header: Uint8Array; offsets: number[] } {
  const b = new Bytes();
  b.push(new TextEncoder().encode('GGUF'));
  b.u32(3);
  b.u64(tensors.length);
  b.u64(kv.length);
  for (const [key, v] of kv) {
    b.str(key);
    switch (v.type) {
      case 'u32':
        b.u32(GGUF_VALUE.U32);
        b.u32(v.value);
        break;
      case 'i32':
        b.u32(GGUF_VALUE.I32);
        b.i32(v.value);
        break;
      case 'f32':
        b.u32(GGUF_VALUE.F32);
        b.f32(v.value);
        break;
      case 'bool':
        b.u32(GGUF_VALUE.BOOL);
        b.u8(v.value ? 1 : 0);
        break;
      case 'string':
        b.u32(GGUF_VALUE.STRING);
        b.str(v.value);
        break;
      case 'u64':
        b.u32(GGUF_VALUE.U64);
        b.u64(v.value);
        break;
      case 'string[]':
        b.u32(GGUF_VALUE.ARRAY);
        b.u32(GGUF_VALUE.STRING);
        b.u64(v.value.length);
        for (const s of v.value) b.str(s);
        break;
      case 'f32[]': {
        b.u32(GGUF_VALUE.ARRAY);
        b.u32(GGUF_VALUE.F32);
        b.u64(v.value.length);
        b.push(new Uint8Array(Float32Array.from(v.value).buffer));
        break;
      }
      case 'i32[]': {
        b.u32(GGUF_VALUE.ARRAY);
        b.u32(GGUF_VALUE.I32);
        b.u64(v.value.length);
        b.push(new Uint8Array(Int32Array.from(v.value).buffer));
        break;
      }
    }
  }
  const offsets: number[] = [];
  let off = 0;
  for (const t of tensors) {
    b.str(t.name);
    b.u32(t.ne.length);
    for (const n of t.ne) b.u64(n);
    b.u32(GGML_TYPE[t.type]);
    b.u64(off);
    offsets.push(off);
    off = align(off + t.bytes);
  }
  const pad = align(b.length) - b.length;
  if (pad) b.push(new Uint8Array(pad));
  return { header: b.concat(), offsets };
}

// ---------------------------------------------------------------------------------------------
// Reading a Hugging Face folder

interface StEntry {
  file: string;
  dtype: DType;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

function readSafetensorsIndex(dir: string): Map<string, StEntry> {
  const files: string[] = [];
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    const map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map;
    for (const f of new Set(Object.values(map))) files.push(f);
  } else if (existsSync(join(dir, 'model.safetensors'))) {
    files.push('model.safetensors');
  } else {
    throw new Error(`gguf: no model.safetensors(.index.json) in ${dir}`);
  }
  const out = new Map<string, StEntry>();
  for (const f of files) {
    const path = join(dir, f);
    const head = readRange(path, 0, 8);
    const n = Number(new DataView(head.buffer, head.byteOffset).getBigUint64(0, true));
    // the loader's parser: it validates dtypes, shapes and offsets against the file size
    const { tensors } = parseSafetensorsHeader(readRange(path, 0, 8 + n), statSync(path).size, f);
    for (const t of tensors.values()) out.set(t.name, { file: path, dtype: t.dtype, shape: t.shape, begin: t.start, end: t.end });
  }
  return out;
}

function readRange(path: string, begin: number, end: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const b = new Uint8Array(end - begin);
    let o = 0;
    while (o < b.length) {
      const n = readSync(fd, b, o, b.length - o, begin + o);
      if (n <= 0) throw new Error(`gguf: ${path} ends before byte ${end}`);
      o += n;
    }
    return b;
  } finally {
    closeSync(fd);
  }
}


// ---------------------------------------------------------------------------------------------
// Tokenizer

interface TokenizerJson {
  added_tokens?: { id: number; content: string; special?: boolean }[];
  normalizer?: unknown;
  pre_tokenizer?: unknown;
  post_processor?: unknown;
  decoder?: unknown;
  model: { type: string; vocab: Record<string, number>; merges?: (string | [string, string])[]; byte_fallback?: boolean; unk_token?: string | null };
}

export interface GgufVocab {
  model: 'llama' | 'gpt2';
  pre?: string;
  tokens: string[];
  scores: Float32Array;
  types: Int32Array;
  merges?: string[];
  addSpacePrefix?: boolean;
  unk?: number;
}

const has = (x: unknown, pred: (o: Record<string, unknown>) => boolean): boolean => {
  if (Array.isArray(x)) return x.some((e) => has(e, pred));
  if (x && typeof x === 'object') {
    const o = x as Record<string, unknown>;
    return pred(o) || Object.values(o).some((e) => has(e, pred));
  }
  return false;
};

const LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** tokenizer.json (a BPE model) → llama.cpp's vocabulary arrays, padded to `vocabSize` entries. */
export function ggufVocab(tok: TokenizerJson, vocabSize: number): GgufVocab {
  if (tok.model.type !== 'BPE') throw new Error(`gguf: tokenizer model ${tok.model.type} is not supported (BPE only)`);
  const added = new Map((tok.added_tokens ?? []).map((t) => [t.id, t]));
  let n = vocabSize;
  for (const id of Object.values(tok.model.vocab)) n = Math.max(n, id + 1);
  for (const id of added.keys()) n = Math.max(n, id + 1);
  if (n > vocabSize) throw new Error(`gguf: the tokenizer has ids up to ${n - 1}, beyond the model's vocabulary of ${vocabSize}`);
  const tokens: string[] = new Array(n);
  const types = new Int32Array(n);
  const scores = new Float32Array(n);
  for (const [t, id] of Object.entries(tok.model.vocab)) tokens[id] = t;
  for (const [id, t] of added) tokens[id] = t.content;
  const merges = (tok.model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const spm =
    !!tok.model.byte_fallback ||
    (has(tok.normalizer, (o) => o.type === 'Prepend' || (o.type === 'Replace' && o.content === '▁')) && !has(tok.pre_tokenizer, (o) => o.type === 'ByteLevel')) ||
    has(tok.pre_tokenizer, (o) => o.type === 'Metaspace');
  const unk = tok.model.unk_token != null ? tok.model.vocab[tok.model.unk_token] : undefined;
  // rank of the first merge that makes each piece
  const rank = new Map<string, number>();
  merges.forEach((m, r) => {
    const sp = m.indexOf(' ', 1);
    const piece = m.slice(0, sp) + m.slice(sp + 1);
    if (!rank.has(piece)) rank.set(piece, r);
  });
  for (let id = 0; id < n; id++) {
    const t = tokens[id];
    if (t === undefined) {
      tokens[id] = `[PAD${id}]`;
      types[id] = TOKEN_TYPE.UNUSED;
      continue;
    }
    const a = added.get(id);
    if (id === unk) types[id] = TOKEN_TYPE.UNKNOWN;
    else if (a) types[id] = a.special ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED;
    else if (spm && /^<0x[0-9A-F]{2}>$/.test(t)) types[id] = TOKEN_TYPE.BYTE;
    else types[id] = TOKEN_TYPE.NORMAL;
    if (spm && types[id] === TOKEN_TYPE.NORMAL) {
      const r = rank.get(t);
      // llama.cpp's SentencePiece tokenizer merges the adjacent pair whose piece scores highest
      scores[id] = r !== undefined ? 0 - r : [...t].length > 1 ? -(merges.length + id) : 0;
    }
  }
  if (spm) {
    const addSpacePrefix =
      has(tok.normalizer, (o) => o.type === 'Prepend' && o.prepend === '▁') ||
      has(tok.pre_tokenizer, (o) => o.type === 'Metaspace' && o.prepend_scheme !== 'never' && o.add_prefix_space !== false);
    return { model: 'llama', tokens, scores, types, addSpacePrefix, unk };
  }
  let pre = 'gpt-2';
  if (has(tok.pre_tokenizer, (o) => o.type === 'Split' && (o.pattern as { Regex?: string } | undefined)?.Regex === LLAMA3_SPLIT)) pre = 'llama-bpe';
  else if (has(tok.pre_tokenizer, (o) => o.type === 'Split' && (o.pattern as { Regex?: string } | undefined)?.Regex === QWEN2_SPLIT)) pre = 'qwen2';
  else if (has(tok.pre_tokenizer, (o) => o.type === 'Digits' && o.individual_digits === true)) pre = 'smollm';
  return { model: 'gpt2', pre, tokens, scores, types, merges, unk };
}

// ---------------------------------------------------------------------------------------------
// HF folder → GGUF

export interface GgufConvertOptions {
  /** The Hugging Face folder. */
  dir: string;
  /** The GGUF file to write. */
  out: string;
  type: GgufTensorType;
  log?: (line: string) => void;
}

export interface GgufConvertResult {
  out: string;
  bytes: number;
  tensors: number;
  /** Tensors written in a type other than the requested one (F16 fallbacks; norms are not counted). */
  fallbacks: string[];
  arch: string;
}

interface PlannedTensor {
  info: GgufTensorInfo;
  /** Produces the tensor's f32 values (HF order fixed up). */
  values: () => Float32Array;
}

/** The metadata and tensor plan of a folder (exported for tests). */
export function planGguf(dir: string, type: GgufTensorType): { kv: [string, GgufValue][]; tensors: PlannedTensor[]; fallbacks: string[]; arch: string } {
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const tok = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as TokenizerJson;
  const tcPath = join(dir, 'tokenizer_config.json');
  const tc = existsSync(tcPath) ? (JSON.parse(readFileSync(tcPath, 'utf8')) as Record<string, unknown>) : {};
  const num = (k: string, d?: number): number => {
    const v = cfg[k];
    if (typeof v === 'number') return v;
    if (d !== undefined) return d;
    throw new Error(`gguf: config.json has no number ${k}`);
  };
  const modelType = String(cfg.model_type ?? 'llama');
  const arch = modelType === 'qwen2' ? 'qwen2' : 'llama';
  if (!['llama', 'mistral', 'qwen2'].includes(modelType)) throw new Error(`gguf: model_type ${modelType} is not supported`);
  const hidden = num('hidden_size');
  const heads = num('num_attention_heads');
  const kvHeads = num('num_key_value_heads', heads);
  const headDim = num('head_dim', hidden / heads);
  const layers = num('num_hidden_layers');
  const vocabSize = num('vocab_size');
  const ropeTheta = num('rope_theta', 10000);
  const rs = (cfg.rope_scaling ?? null) as Record<string, unknown> | null;

  const kv: [string, GgufValue][] = [];
  const put = (k: string, v: GgufValue) => kv.push([k, v]);
  put('general.architecture', { type: 'string', value: arch });
  put('general.name', { type: 'string', value: dir.split('/').filter(Boolean).pop() ?? 'model' });
  put('general.file_type', { type: 'u32', value: GGUF_FILE_TYPE[type] });
  put('general.quantization_version', { type: 'u32', value: 2 });
  put(`${arch}.vocab_size`, { type: 'u32', value: vocabSize });
  put(`${arch}.context_length`, { type: 'u32', value: num('max_position_embeddings', 2048) });
  put(`${arch}.embedding_length`, { type: 'u32', value: hidden });
  put(`${arch}.block_count`, { type: 'u32', value: layers });
  put(`${arch}.feed_forward_length`, { type: 'u32', value: num('intermediate_size') });
  put(`${arch}.attention.head_count`, { type: 'u32', value: heads });
  put(`${arch}.attention.head_count_kv`, { type: 'u32', value: kvHeads });
  if (headDim !== hidden / heads) {
    put(`${arch}.attention.key_length`, { type: 'u32', value: headDim });
    put(`${arch}.attention.value_length`, { type: 'u32', value: headDim });
  }
  put(`${arch}.attention.layer_norm_rms_epsilon`, { type: 'f32', value: num('rms_norm_eps', 1e-6) });
  put(`${arch}.rope.freq_base`, { type: 'f32', value: ropeTheta });
  put(`${arch}.rope.dimension_count`, { type: 'u32', value: headDim });
  const ropeType = rs ? String(rs.rope_type ?? rs.type ?? '') : '';
  if (ropeType === 'linear' || ropeType === 'yarn') {
    put(`${arch}.rope.scaling.type`, { type: 'string', value: ropeType });
    put(`${arch}.rope.scaling.factor`, { type: 'f32', value: Number(rs!.factor) });
    if (ropeType === 'yarn' && typeof rs!.original_max_position_embeddings === 'number') {
      put(`${arch}.rope.scaling.original_context_length`, { type: 'u32', value: rs!.original_max_position_embeddings });
    }
  } else if (ropeType && ropeType !== 'default' && ropeType !== 'llama3') {
    throw new Error(`gguf: rope_scaling type ${ropeType} is not supported`);
  }

  // tokenizer
  const v = ggufVocab(tok, vocabSize);
  put('tokenizer.ggml.model', { type: 'string', value: v.model });
  if (v.pre) put('tokenizer.ggml.pre', { type: 'string', value: v.pre });
  put('tokenizer.ggml.tokens', { type: 'string[]', value: v.tokens });
  if (v.model === 'llama') put('tokenizer.ggml.scores', { type: 'f32[]', value: v.scores });
  put('tokenizer.ggml.token_type', { type: 'i32[]', value: v.types });
  if (v.merges) put('tokenizer.ggml.merges', { type: 'string[]', value: v.merges });
  const firstId = (x: unknown): number | undefined => (typeof x === 'number' ? x : Array.isArray(x) && typeof x[0] === 'number' ? x[0] : undefined);
  const idOf = (content: unknown): number | undefined => {
    const s = typeof content === 'string' ? content : content && typeof content === 'object' ? (content as { content?: string }).content : undefined;
    if (s === undefined) return undefined;
    const i = v.tokens.indexOf(s);
    return i >= 0 ? i : undefined;
  };
  const bos = firstId(cfg.bos_token_id) ?? idOf(tc.bos_token);
  const eos = firstId(cfg.eos_token_id) ?? idOf(tc.eos_token);
  const pad = firstId(cfg.pad_token_id) ?? idOf(tc.pad_token);
  if (bos !== undefined) put('tokenizer.ggml.bos_token_id', { type: 'u32', value: bos });
  if (eos !== undefined) put('tokenizer.ggml.eos_token_id', { type: 'u32', value: eos });
  if (v.unk !== undefined) put('tokenizer.ggml.unknown_token_id', { type: 'u32', value: v.unk });
  if (pad !== undefined) put('tokenizer.ggml.padding_token_id', { type: 'u32', value: pad });
  const bosContent = bos !== undefined ? v.tokens[bos] : undefined;
  const addBos =
    typeof tc.add_bos_token === 'boolean'
      ? tc.add_bos_token
      : bosContent !== undefined && has(tok.post_processor, (o) => o.type === 'TemplateProcessing' && JSON.stringify(o.single ?? '').includes(JSON.stringify(bosContent)));
  put('tokenizer.ggml.add_bos_token', { type: 'bool', value: addBos });
  put('tokenizer.ggml.add_eos_token', { type: 'bool', value: tc.add_eos_token === true });
  if (v.model === 'llama') put('tokenizer.ggml.add_space_prefix', { type: 'bool', value: v.addSpacePrefix ?? true });
  if (typeof tc.chat_template === 'string') put('tokenizer.chat_template', { type: 'string', value: tc.chat_template });

  // tensors
  const st = readSafetensorsIndex(dir);
  const tensors: PlannedTensor[] = [];
  const fallbacks: string[] = [];
  const load = (name: string): Float32Array => {
    const e = st.get(name);
    if (!e) throw new Error(`gguf: tensor ${name} not found`);
    return toF32(readRange(e.file, e.begin, e.end), e.dtype);
  };
  const add = (hf: string, gg: string, opts: { permuteHeads?: number } = {}) => {
    const e = st.get(hf);
    if (!e) throw new Error(`gguf: tensor ${hf} not found in ${dir}`);
    const shape = e.shape;
    const cols = shape[shape.length - 1]!;
    let t: GgufTensorType = shape.length >= 2 ? type : 'F32';
    if ((t === 'Q8_0' || t === 'Q4_0') && cols % QK) {
      t = 'F16';
      fallbacks.push(`${gg} (row of ${cols})`);
    }
    const rows = shape.length >= 2 ? shape.slice(0, -1).reduce((a, b) => a * b, 1) : 1;
    tensors.push({
      info: { name: gg, ne: [...shape].reverse(), type: t, bytes: rows * rowBytes(t, cols) },
      values: () => {
        const x = load(hf);
        return opts.permuteHeads ? permuteQK(x, opts.permuteHeads, shape.length >= 2 ? cols : 1) : x;
      },
    });
  };
  add('model.embed_tokens.weight', 'token_embd.weight');
  const tied = cfg.tie_word_embeddings !== false && !st.has('lm_head.weight');
  if (!tied || (st.has('lm_head.weight') && cfg.tie_word_embeddings === false)) add('lm_head.weight', 'output.weight');
  add('model.norm.weight', 'output_norm.weight');
  if (ropeType === 'llama3') {
    const f = llama3RopeFactors(headDim, ropeTheta, rs!);
    tensors.push({ info: { name: 'rope_freqs.weight', ne: [f.length], type: 'F32', bytes: 4 * f.length }, values: () => f });
  }
  const permute = arch === 'llama';
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    const b = `blk.${l}`;
    add(`${p}.input_layernorm.weight`, `${b}.attn_norm.weight`);
    add(`${p}.self_attn.q_proj.weight`, `${b}.attn_q.weight`, { permuteHeads: permute ? heads : undefined });
    add(`${p}.self_attn.k_proj.weight`, `${b}.attn_k.weight`, { permuteHeads: permute ? kvHeads : undefined });
    add(`${p}.self_attn.v_proj.weight`, `${b}.attn_v.weight`);
    for (const [x, h] of [
      ['q', heads],
      ['k', kvHeads],
      ['v', 0],
    ] as const) {
      if (st.has(`${p}.self_attn.${x}_proj.bias`)) add(`${p}.self_attn.${x}_proj.bias`, `${b}.attn_${x}.bias`, { permuteHeads: permute && h ? h : undefined });
    }
    add(`${p}.self_attn.o_proj.weight`, `${b}.attn_output.weight`);
    add(`${p}.post_attention_layernorm.weight`, `${b}.ffn_norm.weight`);
    add(`${p}.mlp.gate_proj.weight`, `${b}.ffn_gate.weight`);
    add(`${p}.mlp.up_proj.weight`, `${b}.ffn_up.weight`);
    add(`${p}.mlp.down_proj.weight`, `${b}.ffn_down.weight`);
  }
  return { kv, tensors, fallbacks, arch };
}

/** convert_hf_to_gguf.py's llama3 rope factors (one per frequency, head_dim / 2). */
export function llama3RopeFactors(dim: number, base: number, rs: Record<string, unknown>): Float32Array {
  const factor = Number(rs.factor ?? 8);
  const lo = Number(rs.low_freq_factor ?? 1);
  const hi = Number(rs.high_freq_factor ?? 4);
  const old = Number(rs.original_max_position_embeddings ?? 8192);
  const loWave = old / lo;
  const hiWave = old / hi;
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const freq = 1 / Math.pow(base, (2 * i) / dim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < hiWave) out[i] = 1;
    else if (wavelen > loWave) out[i] = factor;
    else {
      const smooth = (old / wavelen - lo) / (hi - lo);
      out[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

/** Writes the GGUF of a Hugging Face folder (a temporary file renamed into place when complete). */
export async function convertToGguf(o: GgufConvertOptions): Promise<GgufConvertResult> {
  const { kv, tensors, fallbacks, arch } = planGguf(o.dir, o.type);
  const { header, offsets } = ggufHeader(kv, tensors.map((t) => t.info));
  await mkdir(dirname(o.out), { recursive: true });
  const tmp = `${o.out}.tmp-${process.pid}`;
  const ws = createWriteStream(tmp);
  let failed: Error | null = null;
  ws.on('error', (e) => (failed = e));
  const write = (b: Uint8Array) =>
    new Promise<void>((ok, fail) => {
      if (failed) fail(failed);
      else if (ws.write(b)) ok();
      else ws.once('drain', () => (failed ? fail(failed) : ok()));
    });
  try {
    await write(header);
    let pos = 0;
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      if (offsets[i]! > pos) await write(new Uint8Array(offsets[i]! - pos));
      pos = offsets[i]!;
      const x = t.values();
      const cols = t.info.ne[0]!;
      const rows = x.length / cols;
      // one row at a time for the block types (blocks never cross rows), whole for F32 / F16
      if (t.info.type === 'Q8_0' || t.info.type === 'Q4_0') {
        const rb = rowBytes(t.info.type, cols);
        const chunkRows = Math.max(1, Math.floor((4 << 20) / rb));
        for (let r = 0; r < rows; r += chunkRows) {
          const n = Math.min(chunkRows, rows - r);
          const buf = new Uint8Array(n * rb);
          for (let k = 0; k < n; k++) buf.set(encodeRow(t.info.type, x.subarray((r + k) * cols, (r + k + 1) * cols)), k * rb);
          await write(buf);
        }
      } else {
        await write(encodeRow(t.info.type, x));
      }
      pos += t.info.bytes;
      if (o.log && i % 50 === 49) o.log(`gguf: ${i + 1}/${tensors.length} tensors`);
    }
    await new Promise<void>((ok, fail) => ws.end((e?: Error | null) => (e ? fail(e) : ok())));
    await rename(tmp, o.out);
  } catch (e) {
    ws.destroy();
    await rm(tmp, { force: true });
    throw e;
  }
  const s = await stat(o.out);
  return { out: o.out, bytes: s.size, tensors: tensors.length, fallbacks, arch };
}

/** Whether `gguf` exists and is newer than every file of `dir` it is made from. */
export function ggufIsFresh(gguf: string, dir: string): boolean {
  if (!existsSync(gguf)) return false;
  const t = statSync(gguf).mtimeMs;
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors', 'model.safetensors.index.json']) {
    const p = join(dir, f);
    if (existsSync(p) && statSync(p).mtimeMs > t) return false;
  }
  return true;
}
