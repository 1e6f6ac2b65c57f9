import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { modelsDir } from '../../src/node/paths.ts';
import { writeSafetensors, type TensorToWrite } from '../../src/node/safetensors-writer.ts';
import { synthModel } from '../../src/node/synth.ts';
import {
  convertToGguf,
  dequantizeRow,
  encodeRow,
  ggufVocab,
  llama3RopeFactors,
  permuteQK,
  quantizeQ4_0,
  quantizeQ8_0,
  TOKEN_TYPE,
  type GgufTensorType,
} from '../../bench/gguf.ts';
import { peerPrompt, promptWords } from '../../bench/peer/wllama.ts';

/**
 * bench/gguf.ts: ggml's Q8_0 / Q4_0 block layouts, the q/k un-permutation, and whole conversions
 * read back by an independent GGUF reader (below): stories260K (SentencePiece vocabulary, GQA,
 * tied head), a small byte-level BPE folder with llama3 rope scaling and biases, a qwen2 folder,
 * and a synthetic smollm2-135m (bf16, a vocabulary padded past the stand-in tokenizer).
 */

// ---------------------------------------------------------------------------------------------
// an independent GGUF reader

interface Gguf {
  version: number;
  kv: Map<string, unknown>;
  tensors: { name: string; ne: number[]; type: number; offset: number }[];
  dataStart: number;
  bytes: Uint8Array;
}

function readGguf(path: string): Gguf {
  const bytes = new Uint8Array(readFileSync(path));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let o = 0;
  const u32 = () => ((o += 4), dv.getUint32(o - 4, true));
  const u64 = () => ((o += 8), Number(dv.getBigUint64(o - 8, true)));
  const str = () => {
    const n = u64();
    o += n;
    return new TextDecoder().decode(bytes.subarray(o - n, o));
  };
  const value = (t: number): unknown => {
    switch (t) {
      case 4:
        return u32();
      case 5:
        return (o += 4), dv.getInt32(o - 4, true);
      case 6:
        return (o += 4), dv.getFloat32(o - 4, true);
      case 7:
        return (o += 1), bytes[o - 1] !== 0;
      case 8:
        return str();
      case 10:
        return u64();
      case 9: {
        const et = u32();
        const n = u64();
        const a: unknown[] = [];
        for (let i = 0; i < n; i++) a.push(value(et));
        return a;
      }
      default:
        throw new Error(`unexpected GGUF value type ${t}`);
    }
  };
  expect(new TextDecoder().decode(bytes.subarray(0, 4))).toBe('GGUF');
  o = 4;
  const version = u32();
  const nt = u64();
  const nkv = u64();
  const kv = new Map<string, unknown>();
  for (let i = 0; i < nkv; i++) {
    const k = str();
    kv.set(k, value(u32()));
  }
  const tensors: Gguf['tensors'] = [];
  for (let i = 0; i < nt; i++) {
    const name = str();
    const nd = u32();
    const ne: number[] = [];
    for (let d = 0; d < nd; d++) ne.push(u64());
    tensors.push({ name, ne, type: u32(), offset: u64() });
  }
  const dataStart = Math.ceil(o / 32) * 32;
  return { version, kv, tensors, dataStart, bytes };
}

const TYPE_ID: Record<GgufTensorType, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8 };
const TYPE_OF = Object.fromEntries(Object.entries(TYPE_ID).map(([k, v]) => [v, k])) as Record<number, GgufTensorType>;
const BLOCK: Record<GgufTensorType, [number, number]> = { F32: [1, 4], F16: [1, 2], Q8_0: [32, 34], Q4_0: [32, 18] };

function tensorValues(g: Gguf, name: string): { ne: number[]; type: GgufTensorType; values: Float32Array } {
  const t = g.tensors.find((x) => x.name === name);
  if (!t) throw new Error(`no tensor ${name}`);
  const type = TYPE_OF[t.type]!;
  const n = t.ne.reduce((a, b) => a * b, 1);
  const [bs, bb] = BLOCK[type];
  const start = g.dataStart + t.offset;
  const bytes = g.bytes.slice(start, start + (n / bs) * bb);
  const cols = t.ne[0]!;
  const rows = n / cols;
  const rowBytes = (cols / bs) * bb;
  const values = new Float32Array(n);
  for (let r = 0; r < rows; r++) values.set(dequantizeRow(type, bytes.subarray(r * rowBytes, (r + 1) * rowBytes), cols), r * cols);
  return { ne: t.ne, type, values };
}

function readSafetensors(path: string): Map<string, { shape: number[]; values: Float32Array }> {
  const b = readFileSync(path);
  const n = Number(b.readBigUInt64LE(0));
  const h = JSON.parse(b.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const [k, t] of Object.entries(h)) {
    if (k === '__metadata__') continue;
    expect(t.dtype).toBe('F32');
    const s = b.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
    out.set(k, { shape: t.shape, values: new Float32Array(s.buffer.slice(s.byteOffset, s.byteOffset + s.byteLength)) });
  }
  return out;
}

/** HF's permute of llama2.c's interleaved q/k rows (convert_llama_weights_to_hf.py): the inverse of what the GGUF writer does. */
function hfPermute(w: Float32Array, heads: number, cols: number): Float32Array {
  const hd = w.length / cols / heads;
  const out = new Float32Array(w.length);
  // view(heads, hd/2, 2, cols).transpose(1, 2): new (h, j, i) ← old (h, i, j)
  for (let h = 0; h < heads; h++)
    for (let j = 0; j < 2; j++)
      for (let i = 0; i < hd / 2; i++) out.set(w.subarray((h * hd + 2 * i + j) * cols, (h * hd + 2 * i + j + 1) * cols), (h * hd + j * (hd / 2) + i) * cols);
  return out;
}

const rand = (seed: number) => {
  let a = seed >>> 0;
  return () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a / 2 ** 32 - 0.5;
  };
};

const tmp: string[] = [];
const tmpDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'nibble-gguf-test-'));
  tmp.push(d);
  return d;
};
afterAll(() => {
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------

describe('ggml block quantizers', () => {
  it('Q4_0: d = (value of largest magnitude) / −8, q = min(15, trunc(x/d + 8.5)), byte j = weights j | j+16', () => {
    const x = Float32Array.from({ length: 32 }, (_, j) => j - 16); // −16 … 15: max = −16, d = 2
    const b = quantizeQ4_0(x);
    expect(b.length).toBe(18);
    expect(b[0] | (b[1]! << 8)).toBe(0x4000); // f16 2.0
    // x = j − 16 → x/d + 8.5 = j/2 + 0.5 → q = trunc(j/2 + 0.5)
    for (let j = 0; j < 16; j++) {
      expect(b[2 + j]! & 0xf).toBe(Math.trunc(j / 2 + 0.5));
      expect(b[2 + j]! >> 4).toBe(Math.min(15, Math.trunc((j + 16) / 2 + 0.5)));
    }
    const y = dequantizeRow('Q4_0', b, 32);
    expect(y[0]).toBe(-16);
    expect(y[31]).toBe(14); // 15 → clamped to code 15: (15 − 8) · 2
  });

  it('Q8_0: d = absmax / 127, q = round half away from zero; the error is at most d / 2', () => {
    const r = rand(7);
    const x = Float32Array.from({ length: 96 }, () => r() * 3);
    const b = quantizeQ8_0(x);
    expect(b.length).toBe(3 * 34);
    const y = dequantizeRow('Q8_0', b, 96);
    for (let blk = 0; blk < 3; blk++) {
      const s = x.subarray(blk * 32, blk * 32 + 32);
      const amax = Math.max(...Array.from(s, Math.abs));
      for (let j = 0; j < 32; j++) expect(Math.abs(y[blk * 32 + j]! - s[j]!)).toBeLessThanOrEqual((amax / 127) * 0.5 + amax * 1e-3);
      // the largest magnitude maps to ±127
      const k = Array.from(s, Math.abs).indexOf(amax);
      expect(Math.abs((b[blk * 34 + 2 + k]! << 24) >> 24)).toBe(127);
    }
    expect(() => quantizeQ8_0(new Float32Array(33))).toThrow(/multiple of 32/);
  });

  it('Q4_0 error is at most d / 2 inside the range; F16 rounds to nearest', () => {
    const r = rand(11);
    const x = Float32Array.from({ length: 64 }, () => r());
    const y = dequantizeRow('Q4_0', quantizeQ4_0(x), 64);
    for (let blk = 0; blk < 2; blk++) {
      const s = Array.from(x.subarray(blk * 32, blk * 32 + 32));
      const d = Math.max(...s.map(Math.abs)) / 8;
      for (let j = 0; j < 32; j++) expect(Math.abs(y[blk * 32 + j]! - s[j]!)).toBeLessThanOrEqual(d * 0.5 * 1.01 + (s[j]! === -Math.sign(s[j]!) ? 0 : d));
    }
    const h = dequantizeRow('F16', encodeRow('F16', Float32Array.of(1, 1 / 3, -65504, 1e-8)), 4);
    expect(Array.from(h)).toEqual([1, 0.333251953125, -65504, 0]);
  });

  it('permuteQK undoes the Hugging Face q/k permutation, per head (GQA: k with the KV heads)', () => {
    const r = rand(3);
    for (const [heads, hd, cols] of [
      [8, 8, 64],
      [4, 8, 64],
      [3, 64, 5],
      [2, 4, 1],
    ] as const) {
      const w = Float32Array.from({ length: heads * hd * cols }, r);
      expect(permuteQK(hfPermute(w, heads, cols), heads, cols)).toEqual(w);
    }
    expect(() => permuteQK(new Float32Array(12), 4, 1)).toThrow(/even size/);
  });

  it('llama3 rope factors: 1 for short wavelengths, the factor for long ones, smooth between', () => {
    const f = llama3RopeFactors(64, 500000, { factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
    expect(f.length).toBe(32);
    expect(f[0]).toBe(1);
    expect(f[31]).toBe(32);
    for (let i = 1; i < 32; i++) expect(f[i]!).toBeGreaterThanOrEqual(f[i - 1]!);
    expect(Array.from(f).some((x) => x > 1 && x < 32)).toBe(true);
  });
});

describe('stories260K → GGUF', () => {
  const stories = join(modelsDir(), 'stories260K');
  const st = readSafetensors(join(stories, 'model.safetensors'));

  it('F32: llama metadata, the SentencePiece vocabulary, 47 tensors, q/k un-permuted, no output.weight (tied)', async () => {
    const out = join(tmpDir(), 's.gguf');
    const r = await convertToGguf({ dir: stories, out, type: 'F32' });
    expect(r.fallbacks).toEqual([]);
    const g = readGguf(out);
    expect(g.version).toBe(3);
    const kv = g.kv;
    expect(kv.get('general.architecture')).toBe('llama');
    expect(kv.get('general.file_type')).toBe(0);
    expect(kv.get('llama.context_length')).toBe(512);
    expect(kv.get('llama.embedding_length')).toBe(64);
    expect(kv.get('llama.block_count')).toBe(5);
    expect(kv.get('llama.feed_forward_length')).toBe(172);
    expect(kv.get('llama.attention.head_count')).toBe(8);
    expect(kv.get('llama.attention.head_count_kv')).toBe(4);
    expect(kv.get('llama.rope.dimension_count')).toBe(8);
    expect(kv.get('llama.rope.freq_base')).toBe(10000);
    expect(kv.get('llama.attention.layer_norm_rms_epsilon')).toBeCloseTo(1e-5, 10);
    expect(kv.has('llama.rope.scaling.type')).toBe(false);
    expect(kv.get('tokenizer.ggml.model')).toBe('llama');
    expect(kv.get('tokenizer.ggml.bos_token_id')).toBe(1);
    expect(kv.get('tokenizer.ggml.eos_token_id')).toBe(2);
    expect(kv.get('tokenizer.ggml.unknown_token_id')).toBe(0);
    expect(kv.get('tokenizer.ggml.add_bos_token')).toBe(true);
    expect(kv.get('tokenizer.ggml.add_eos_token')).toBe(false);
    expect(kv.get('tokenizer.ggml.add_space_prefix')).toBe(true);
    const tokens = kv.get('tokenizer.ggml.tokens') as string[];
    const types = kv.get('tokenizer.ggml.token_type') as number[];
    const scores = kv.get('tokenizer.ggml.scores') as number[];
    expect(tokens.length).toBe(512);
    expect([tokens[0], tokens[1], tokens[2], tokens[3], tokens[258]]).toEqual(['<unk>', '<s>', '</s>', '<0x00>', '<0xFF>']);
    expect([types[0], types[1], types[2], types[3], types[258], types[261]]).toEqual([
      TOKEN_TYPE.UNKNOWN,
      TOKEN_TYPE.CONTROL,
      TOKEN_TYPE.CONTROL,
      TOKEN_TYPE.BYTE,
      TOKEN_TYPE.BYTE,
      TOKEN_TYPE.NORMAL,
    ]);
    // the first merge ("▁ t") makes the highest-scoring merged piece
    const tok = JSON.parse(readFileSync(join(stories, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number>; merges: string[] } };
    expect(scores[tok.model.vocab['▁t']!]).toBe(0);
    expect(scores[tok.model.vocab['he']!]).toBe(-1);

    expect(g.tensors.length).toBe(47);
    expect(g.tensors.some((t) => t.name === 'output.weight')).toBe(false);
    for (const t of g.tensors) expect(t.offset % 32).toBe(0);
    const last = g.tensors[g.tensors.length - 1]!;
    expect(g.bytes.length).toBe(g.dataStart + last.offset + 4 * last.ne.reduce((a, b) => a * b, 1));

    const q = tensorValues(g, 'blk.2.attn_q.weight');
    expect(q.ne).toEqual([64, 64]);
    expect(q.values).toEqual(permuteQK(st.get('model.layers.2.self_attn.q_proj.weight')!.values, 8, 64));
    const k = tensorValues(g, 'blk.2.attn_k.weight');
    expect(k.ne).toEqual([64, 32]);
    expect(k.values).toEqual(permuteQK(st.get('model.layers.2.self_attn.k_proj.weight')!.values, 4, 64));
    expect(tensorValues(g, 'blk.2.attn_v.weight').values).toEqual(st.get('model.layers.2.self_attn.v_proj.weight')!.values);
    const down = tensorValues(g, 'blk.4.ffn_down.weight');
    expect(down.ne).toEqual([172, 64]);
    expect(down.values).toEqual(st.get('model.layers.4.mlp.down_proj.weight')!.values);
    expect(tensorValues(g, 'output_norm.weight').values).toEqual(st.get('model.norm.weight')!.values);
    expect(tensorValues(g, 'token_embd.weight').ne).toEqual([64, 512]);
  });

  for (const type of ['Q8_0', 'Q4_0'] as const) {
    it(`${type}: matrices in ${type} within half a step of the weights; 172-wide rows fall back to F16; norms stay F32`, async () => {
      const out = join(tmpDir(), `s-${type}.gguf`);
      const r = await convertToGguf({ dir: stories, out, type });
      expect(r.fallbacks).toHaveLength(5);
      const g = readGguf(out);
      expect(g.kv.get('general.file_type')).toBe(type === 'Q8_0' ? 7 : 2);
      expect(tensorValues(g, 'blk.0.ffn_down.weight').type).toBe('F16');
      expect(tensorValues(g, 'blk.0.attn_norm.weight').type).toBe('F32');
      const gate = tensorValues(g, 'blk.1.ffn_gate.weight');
      expect(gate.type).toBe(type);
      const ref = st.get('model.layers.1.mlp.gate_proj.weight')!.values;
      const levels = type === 'Q8_0' ? 127 : 8;
      for (let b = 0; b < ref.length / 32; b++) {
        const s = ref.subarray(b * 32, b * 32 + 32);
        const amax = Math.max(...Array.from(s, Math.abs));
        for (let j = 0; j < 32; j++) expect(Math.abs(gate.values[b * 32 + j]! - s[j]!)).toBeLessThanOrEqual((amax / levels) * 1.001);
      }
    });
  }
});

describe('byte-level BPE, llama3 rope, biases, qwen2', () => {
  /** A tiny model folder: 2 layers, hidden 64, 4 heads (2 KV) of 16, vocab 300, random f32 weights. */
  async function tinyFolder(modelType: 'llama' | 'qwen2', rope: Record<string, unknown> | null, bias: boolean): Promise<string> {
    const dir = tmpDir();
    const hidden = 64;
    const cfg = {
      model_type: modelType,
      hidden_size: hidden,
      intermediate_size: 96,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 300,
      max_position_embeddings: 1024,
      rms_norm_eps: 1e-6,
      rope_theta: 500000,
      rope_scaling: rope,
      tie_word_embeddings: false,
      bos_token_id: 256,
      eos_token_id: [257, 258],
      attention_bias: bias,
    };
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    const byteChars = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i < 33 ? 256 + i : i));
    const vocab: Record<string, number> = {};
    byteChars.forEach((c, i) => (vocab[c] = i));
    vocab['Ġt'] = 259;
    vocab['Ġth'] = 260;
    const tok = {
      added_tokens: [
        { id: 256, content: '<|begin|>', special: true },
        { id: 257, content: '<|end|>', special: true },
        { id: 258, content: '<tool>', special: false },
      ],
      normalizer: null,
      pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, { type: 'ByteLevel', add_prefix_space: false }] },
      post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<|begin|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }] },
      decoder: { type: 'ByteLevel' },
      model: { type: 'BPE', vocab, merges: [['Ġ', 't'], 'Ġt h'] },
    };
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{{ messages }}' }));
    const r = rand(5);
    const t = (name: string, shape: number[]): TensorToWrite => ({
      name,
      dtype: 'F32',
      shape,
      fill: (chunk) => new Float32Array(chunk.buffer, chunk.byteOffset, chunk.byteLength / 4).forEach((_, i, a) => (a[i] = r())),
    });
    const ts: TensorToWrite[] = [t('model.embed_tokens.weight', [300, hidden]), t('lm_head.weight', [300, hidden]), t('model.norm.weight', [hidden])];
    for (let l = 0; l < 2; l++) {
      const p = `model.layers.${l}`;
      ts.push(t(`${p}.input_layernorm.weight`, [hidden]), t(`${p}.post_attention_layernorm.weight`, [hidden]));
      ts.push(t(`${p}.self_attn.q_proj.weight`, [64, hidden]), t(`${p}.self_attn.k_proj.weight`, [32, hidden]), t(`${p}.self_attn.v_proj.weight`, [32, hidden]));
      if (bias) ts.push(t(`${p}.self_attn.q_proj.bias`, [64]), t(`${p}.self_attn.k_proj.bias`, [32]), t(`${p}.self_attn.v_proj.bias`, [32]));
      ts.push(t(`${p}.self_attn.o_proj.weight`, [hidden, 64]), t(`${p}.mlp.gate_proj.weight`, [96, hidden]), t(`${p}.mlp.up_proj.weight`, [96, hidden]));
      ts.push(t(`${p}.mlp.down_proj.weight`, [hidden, 96]));
    }
    await writeSafetensors(join(dir, 'model.safetensors'), ts);
    return dir;
  }

  it('llama with llama3 rope scaling and q/k biases: gpt2 vocabulary with merges, rope_freqs, output.weight, permuted biases', async () => {
    const dir = await tinyFolder('llama', { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }, true);
    const out = join(dir, 'm.gguf');
    await convertToGguf({ dir, out, type: 'Q8_0' });
    const g = readGguf(out);
    expect(g.kv.get('tokenizer.ggml.model')).toBe('gpt2');
    expect(g.kv.get('tokenizer.ggml.pre')).toBe('smollm');
    expect(g.kv.get('tokenizer.ggml.merges')).toEqual(['Ġ t', 'Ġt h']);
    expect(g.kv.has('tokenizer.ggml.scores')).toBe(false);
    const types = g.kv.get('tokenizer.ggml.token_type') as number[];
    expect([types[0], types[256], types[257], types[258], types[260], types[261], types[299]]).toEqual([
      TOKEN_TYPE.NORMAL,
      TOKEN_TYPE.CONTROL,
      TOKEN_TYPE.CONTROL,
      TOKEN_TYPE.USER_DEFINED,
      TOKEN_TYPE.NORMAL,
      TOKEN_TYPE.UNUSED,
      TOKEN_TYPE.UNUSED,
    ]);
    expect((g.kv.get('tokenizer.ggml.tokens') as string[])[299]).toBe('[PAD299]');
    expect(g.kv.get('tokenizer.ggml.bos_token_id')).toBe(256);
    expect(g.kv.get('tokenizer.ggml.eos_token_id')).toBe(257);
    expect(g.kv.get('tokenizer.ggml.add_bos_token')).toBe(true); // from the post-processor
    expect(g.kv.get('tokenizer.chat_template')).toBe('{{ messages }}');
    expect(g.kv.get('llama.attention.key_length')).toBeUndefined(); // 64 / 4 = 16 = head_dim
    const f = tensorValues(g, 'rope_freqs.weight');
    expect(f.ne).toEqual([8]);
    expect(f.values).toEqual(llama3RopeFactors(16, 500000, { factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }));
    expect(g.tensors.some((t) => t.name === 'output.weight')).toBe(true);
    const st = readSafetensors(join(dir, 'model.safetensors'));
    expect(tensorValues(g, 'blk.1.attn_k.bias').values).toEqual(permuteQK(st.get('model.layers.1.self_attn.k_proj.bias')!.values, 2, 1));
    expect(tensorValues(g, 'blk.1.attn_v.bias').values).toEqual(st.get('model.layers.1.self_attn.v_proj.bias')!.values);
  });

  it('qwen2: its own architecture keys, biases, q/k in the Hugging Face order (NEOX rope)', async () => {
    const dir = await tinyFolder('qwen2', null, true);
    const out = join(dir, 'q.gguf');
    await convertToGguf({ dir, out, type: 'F32' });
    const g = readGguf(out);
    expect(g.kv.get('general.architecture')).toBe('qwen2');
    expect(g.kv.get('qwen2.block_count')).toBe(2);
    expect(g.kv.get('qwen2.attention.head_count_kv')).toBe(2);
    const st = readSafetensors(join(dir, 'model.safetensors'));
    expect(tensorValues(g, 'blk.0.attn_q.weight').values).toEqual(st.get('model.layers.0.self_attn.q_proj.weight')!.values);
    expect(tensorValues(g, 'blk.0.attn_q.bias').values).toEqual(st.get('model.layers.0.self_attn.q_proj.bias')!.values);
  });

  it('ggufVocab refuses a tokenizer with more ids than the model and non-BPE models', () => {
    const tok = { model: { type: 'BPE', vocab: { a: 0, b: 5 } } };
    expect(() => ggufVocab(tok, 4)).toThrow(/beyond the model's vocabulary/);
    expect(() => ggufVocab({ model: { type: 'Unigram', vocab: {} } }, 4)).toThrow(/not supported/);
  });
});

describe('the synthetic shapes', () => {
  it('smollm2-135m (bf16, one layer): Q4_0 GGUF with the stand-in Llama 2 vocabulary padded to 49152', async () => {
    const dir = tmpDir();
    await synthModel({ shape: 'smollm2-135m', dtype: 'bf16', out: dir, layers: 1 });
    const out = join(dir, 'm.gguf');
    const r = await convertToGguf({ dir, out, type: 'Q4_0' });
    expect(r.fallbacks).toEqual([]);
    const g = readGguf(out);
    expect(g.kv.get('llama.embedding_length')).toBe(576);
    expect(g.kv.get('llama.attention.head_count')).toBe(9);
    expect(g.kv.get('llama.attention.head_count_kv')).toBe(3);
    expect(g.kv.get('llama.rope.dimension_count')).toBe(64);
    const tokens = g.kv.get('tokenizer.ggml.tokens') as string[];
    expect(tokens.length).toBe(49152);
    expect(tokens[32000]).toBe('[PAD32000]');
    expect(g.kv.get('tokenizer.ggml.model')).toBe('llama');
    expect(g.tensors.length).toBe(2 + 9);
    const k = tensorValues(g, 'blk.0.attn_k.weight');
    expect(k.type).toBe('Q4_0');
    expect(k.ne).toEqual([576, 192]);
    // the text prompts of the peer bench: n − 1 one-token words after BOS
    const w = promptWords(dir);
    expect(w.leadingSpace).toBe(false);
    const p = peerPrompt(3, 64, w, true);
    expect(p.split(' ')).toHaveLength(63);
    expect(peerPrompt(3, 64, w, true)).toBe(p);
    expect(peerPrompt(4, 64, w, true)).not.toBe(p);
  }, 120_000);
});
