import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, mkdirSync, openSync, readFileSync, readSync, closeSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  NormalStream,
  SYNTH_SHAPES,
  defaultSynthDir,
  naturalCompare,
  planShards,
  synthModel,
  synthTensors,
} from '../../src/node/synth.ts';
import { f32ToBf16, f32ToF16, safetensorsLayout } from '../../src/node/safetensors-writer.ts';

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

function readHeader(file: string): { dataStart: number; entries: Record<string, Entry>; metadata: Record<string, string>; n: number } {
  const fd = openSync(file, 'r');
  try {
    const len = Buffer.alloc(8);
    readSync(fd, len, 0, 8, 0);
    const n = Number(len.readBigUInt64LE(0));
    const buf = Buffer.alloc(n);
    readSync(fd, buf, 0, n, 8);
    const json = JSON.parse(buf.toString('utf8')) as Record<string, unknown>;
    const { __metadata__, ...entries } = json;
    return { dataStart: 8 + n, entries: entries as Record<string, Entry>, metadata: __metadata__ as Record<string, string>, n };
  } finally {
    closeSync(fd);
  }
}

function tensorBytes(file: string, name: string): Buffer {
  const h = readHeader(file);
  const e = h.entries[name];
  if (!e) throw new Error(`no ${name} in ${file}`);
  const [a, b] = e.data_offsets;
  const out = Buffer.alloc(b - a);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, out, 0, b - a, h.dataStart + a);
  } finally {
    closeSync(fd);
  }
  return out;
}

function bf16ToF32(buf: Buffer): Float32Array {
  const n = buf.byteLength / 2;
  const u = new Uint32Array(n);
  for (let i = 0; i < n; i++) u[i] = buf.readUInt16LE(i * 2) << 16;
  return new Float32Array(u.buffer);
}

function stats(x: Float32Array): { mean: number; std: number } {
  let s = 0;
  for (const v of x) s += v;
  const mean = s / x.length;
  let q = 0;
  for (const v of x) q += (v - mean) ** 2;
  return { mean, std: Math.sqrt(q / x.length) };
}

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

describe('synth', () => {
  let tmp: string;
  let tok: string;

  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'nibble-synth-'));
    tok = join(tmp, 'tok');
    mkdirSync(tok);
    writeFileSync(join(tok, 'tokenizer.json'), '{"model":{"type":"BPE"}}');
    writeFileSync(join(tok, 'tokenizer_config.json'), '{"bos_token":"<s>"}');
  });

  afterAll(() => {
    rmSync(tmp, { recursive: true, force: true });
  });

  const smol = (out: string, extra: { shards?: number; seed?: number } = {}) =>
    synthModel({ shape: 'smollm2-135m', dtype: 'bf16', layers: 1, tokenizerDir: tok, out: join(tmp, out), ...extra });

  it('writes a 1-layer smollm2-135m with the exact tensor names, shapes and BF16', async () => {
    const r = await smol('a');
    expect(r.files).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'README.md']);
    for (const f of r.files) expect(existsSync(join(r.out, f))).toBe(true);
    expect(existsSync(join(r.out, '.synth.json'))).toBe(true);
    expect(r.bytes).toBe(r.files.reduce((a, f) => a + statSync(join(r.out, f)).size, 0));

    const file = join(r.out, 'model.safetensors');
    const h = readHeader(file);
    expect(h.n % 8).toBe(0);
    expect(h.metadata).toEqual({ format: 'pt' });
    const expected: Record<string, number[]> = {
      'model.embed_tokens.weight': [49152, 576],
      'model.layers.0.input_layernorm.weight': [576],
      'model.layers.0.self_attn.q_proj.weight': [576, 576],
      'model.layers.0.self_attn.k_proj.weight': [192, 576],
      'model.layers.0.self_attn.v_proj.weight': [192, 576],
      'model.layers.0.self_attn.o_proj.weight': [576, 576],
      'model.layers.0.post_attention_layernorm.weight': [576],
      'model.layers.0.mlp.gate_proj.weight': [1536, 576],
      'model.layers.0.mlp.up_proj.weight': [1536, 576],
      'model.layers.0.mlp.down_proj.weight': [576, 1536],
      'model.norm.weight': [576],
    };
    expect(Object.keys(h.entries).sort()).toEqual(Object.keys(expected).sort());
    let end = 0;
    const sorted = Object.values(h.entries).sort((a, b) => a.data_offsets[0] - b.data_offsets[0]);
    for (const e of sorted) {
      expect(e.data_offsets[0]).toBe(end); // contiguous
      end = e.data_offsets[1];
    }
    for (const [name, shape] of Object.entries(expected)) {
      const e = h.entries[name]!;
      expect(e.dtype).toBe('BF16');
      expect(e.shape).toEqual(shape);
      expect(e.data_offsets[1] - e.data_offsets[0]).toBe(shape.reduce((a, b) => a * b, 1) * 2);
    }
    expect(statSync(file).size).toBe(h.dataStart + end);

    const cfg = JSON.parse(readFileSync(join(r.out, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      model_type: 'llama',
      hidden_size: 576,
      intermediate_size: 1536,
      num_hidden_layers: 1,
      num_attention_heads: 9,
      num_key_value_heads: 3,
      vocab_size: 49152,
      rope_theta: 100000,
      rms_norm_eps: 1e-5,
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
    });
    expect(cfg.nibble_synthetic.tokenizer).toMatch(/stand-in/);
    expect(JSON.parse(readFileSync(join(r.out, 'generation_config.json'), 'utf8')).eos_token_id).toBe(0);
    expect(readFileSync(join(r.out, 'README.md'), 'utf8')).toMatch(/synthetic/i);
    expect(readFileSync(join(r.out, 'tokenizer.json'), 'utf8')).toBe('{"model":{"type":"BPE"}}');
  });

  it('is deterministic: two runs write the same bytes; another seed differs', async () => {
    const a = join(tmp, 'a', 'model.safetensors');
    const b = await smol('b');
    expect(sha(join(b.out, 'model.safetensors'))).toBe(sha(a));
    // the bytes are pinned: the bench's .cache/synth/ and the loader tests rely on them staying put
    // for the same shape and seed; a deliberate change must bump GENERATOR_VERSION in synth.ts
    expect(sha(a)).toBe('2e4472298d098ca84c6750c8e8698c2b4970e763e54fb82a77525d973e88e66b');
    const c = await smol('c', { seed: 7 });
    const name = 'model.layers.0.mlp.up_proj.weight';
    expect(tensorBytes(join(c.out, 'model.safetensors'), name).equals(tensorBytes(a, name))).toBe(false);
    rmSync(c.out, { recursive: true });
  });

  it('skips work when the folder is already complete for the same options', async () => {
    const file = join(tmp, 'a', 'model.safetensors');
    const mtime = statSync(file).mtimeMs;
    const lines: string[] = [];
    const r = await synthModel({ shape: 'smollm2-135m', dtype: 'bf16', layers: 1, tokenizerDir: tok, out: join(tmp, 'a'), log: (l) => lines.push(l) });
    expect(lines.join('\n')).toMatch(/up to date/);
    expect(statSync(file).mtimeMs).toBe(mtime);
    expect(r.files).toContain('model.safetensors');
  });

  it('shards: the index covers every tensor and tensor bytes equal the unsharded run', async () => {
    const one = join(tmp, 'a', 'model.safetensors');
    const r = await smol('s3', { shards: 3 });
    const shardNames = ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors'];
    expect(r.files).toEqual(expect.arrayContaining([...shardNames, 'model.safetensors.index.json']));
    expect(existsSync(join(r.out, 'model.safetensors'))).toBe(false);
    const index = JSON.parse(readFileSync(join(r.out, 'model.safetensors.index.json'), 'utf8'));
    const all = readHeader(one).entries;
    expect(Object.keys(index.weight_map).sort()).toEqual(Object.keys(all).sort());
    expect(Object.keys(index.weight_map)).toEqual(Object.keys(index.weight_map).sort()); // sorted like HF
    let total = 0;
    for (const s of shardNames) {
      const h = readHeader(join(r.out, s));
      expect(Object.keys(h.entries).length).toBeGreaterThan(0);
      for (const [name, e] of Object.entries(h.entries)) {
        expect(index.weight_map[name]).toBe(s);
        total += e.data_offsets[1] - e.data_offsets[0];
      }
    }
    expect(index.metadata.total_size).toBe(total);
    for (const name of Object.keys(all)) {
      const bytes = tensorBytes(join(r.out, index.weight_map[name]), name);
      expect(bytes.equals(tensorBytes(one, name)), name).toBe(true);
    }
  });

  it('weights ~ N(0, 0.02), norms ≈ 1', () => {
    const one = join(tmp, 'a', 'model.safetensors');
    const w = stats(bf16ToF32(tensorBytes(one, 'model.layers.0.mlp.gate_proj.weight')));
    expect(Math.abs(w.std - 0.02) / 0.02).toBeLessThan(0.05);
    expect(Math.abs(w.mean)).toBeLessThan(0.001);
    const e = stats(bf16ToF32(tensorBytes(one, 'model.embed_tokens.weight')));
    expect(Math.abs(e.std - 0.02) / 0.02).toBeLessThan(0.05);
    const n = stats(bf16ToF32(tensorBytes(one, 'model.norm.weight')));
    expect(Math.abs(n.mean - 1)).toBeLessThan(0.005);
    expect(n.std).toBeGreaterThan(0.001);
    expect(n.std).toBeLessThan(0.05);
  });

  it('qwen2.5-0.5b has q/k/v biases', async () => {
    const r = await synthModel({ shape: 'qwen2.5-0.5b', dtype: 'bf16', layers: 1, tokenizerDir: tok, out: join(tmp, 'qwen') });
    const h = readHeader(join(r.out, 'model.safetensors'));
    expect(h.entries['model.embed_tokens.weight']!.shape).toEqual([151936, 896]);
    expect(h.entries['model.layers.0.self_attn.q_proj.weight']!.shape).toEqual([896, 896]);
    expect(h.entries['model.layers.0.self_attn.k_proj.weight']!.shape).toEqual([128, 896]);
    expect(h.entries['model.layers.0.self_attn.q_proj.bias']!.shape).toEqual([896]);
    expect(h.entries['model.layers.0.self_attn.k_proj.bias']!.shape).toEqual([128]);
    expect(h.entries['model.layers.0.self_attn.v_proj.bias']!.shape).toEqual([128]);
    expect(h.entries['model.layers.0.self_attn.o_proj.bias']).toBeUndefined();
    expect(h.entries['model.layers.0.mlp.down_proj.weight']!.shape).toEqual([896, 4864]);
    expect(h.entries['lm_head.weight']).toBeUndefined();
    expect(Object.keys(h.entries)).toHaveLength(14); // embed + 12 per layer + norm
    const b = stats(bf16ToF32(tensorBytes(join(r.out, 'model.safetensors'), 'model.layers.0.self_attn.q_proj.bias')));
    expect(Math.abs(b.mean)).toBeLessThan(0.003);
    expect(b.std).toBeLessThan(0.02);
    const cfg = JSON.parse(readFileSync(join(r.out, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ model_type: 'qwen2', rms_norm_eps: 1e-6, rope_theta: 1000000, max_position_embeddings: 32768, num_hidden_layers: 1 });
    expect(sha(join(r.out, 'model.safetensors'))).toBe('9d395fb84480a5c7ff5206970ade8d0df95d8557a2b109ba7dcb4c6817607ed8'); // pinned, as above
    rmSync(r.out, { recursive: true });
  });

  it('llama-3.2-1b tensor table has the real shapes (no files written)', () => {
    const ts = synthTensors('llama-3.2-1b', 'bf16');
    const byName = Object.fromEntries(ts.map((t) => [t.name, t.shape]));
    expect(ts).toHaveLength(1 + 16 * 9 + 1);
    expect(byName['model.embed_tokens.weight']).toEqual([128256, 2048]);
    expect(byName['model.layers.15.self_attn.k_proj.weight']).toEqual([512, 2048]);
    expect(byName['model.layers.15.mlp.down_proj.weight']).toEqual([2048, 8192]);
    const params = ts.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
    expect(params).toBe(1_235_814_400); // Llama-3.2-1B with tied embeddings
    expect(SYNTH_SHAPES['llama-3.2-1b'].rope_scaling).toEqual({
      factor: 32,
      high_freq_factor: 4,
      low_freq_factor: 1,
      original_max_position_embeddings: 8192,
      rope_type: 'llama3',
    });
    // natural order: layer 2 before layer 10
    const names = ts.map((t) => t.name);
    expect(names.indexOf('model.layers.2.input_layernorm.weight')).toBeLessThan(names.indexOf('model.layers.10.input_layernorm.weight'));
    expect(naturalCompare('a.2.x', 'a.10.x')).toBeLessThan(0);
  });

  it('planShards keeps order and never leaves a shard empty', () => {
    const ts = synthTensors('smollm2-135m', 'bf16', { layers: 2 });
    for (const n of [1, 2, 3, 5, ts.length]) {
      const groups = planShards(ts, n);
      expect(groups).toHaveLength(n);
      for (const g of groups) expect(g.length).toBeGreaterThan(0);
      expect(groups.flat().map((t) => t.name)).toEqual(ts.map((t) => t.name));
    }
    expect(() => planShards(ts, ts.length + 1)).toThrow();
  });

  it('NormalStream is chunking-independent and dtype conversions round correctly', () => {
    const a = new Float32Array(1001);
    new NormalStream(3, 'x').fill(a, 0, 1);
    const b = new Float32Array(1001);
    const s = new NormalStream(3, 'x');
    s.fill(b.subarray(0, 7), 0, 1);
    s.fill(b.subarray(7, 500), 0, 1);
    s.fill(b.subarray(500), 0, 1);
    expect(b).toEqual(a);
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(f32ToBf16(-2)).toBe(0xc000);
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(f32ToF16(1)).toBe(0x3c00);
    expect(f32ToF16(-0.5)).toBe(0xb800);
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect(f32ToF16(2 ** -24)).toBe(0x0001);
    expect(f32ToF16(0.1)).toBe(0x2e66);
    const layout = safetensorsLayout([{ name: 't', dtype: 'F32', shape: [3] }]);
    expect((layout.header.byteLength - 8) % 8).toBe(0);
    expect(layout.totalBytes).toBe(layout.header.byteLength + 12);
  });

  it('defaultSynthDir is under <repo>/.cache/synth', () => {
    const d = defaultSynthDir('smollm2-135m', 'bf16', 3);
    expect(d.endsWith(join('.cache', 'synth', 'smollm2-135m-bf16-s3'))).toBe(true);
    expect(existsSync(join(d, '..', '..', '..', 'package.json'))).toBe(true);
    expect(defaultSynthDir('llama-3.2-1b', 'f16', 1).endsWith('llama-3.2-1b-f16')).toBe(true);
  });
});
