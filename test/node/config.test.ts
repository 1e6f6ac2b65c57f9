import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { NibbleError } from '../../src/errors.ts';
import { openCheckpoint } from '../../src/loader/safetensors.ts';
import { parseConfig, ropeInvFreq, type LlamaConfig } from '../../src/model/config.ts';
import { checkpointTensors, expectedShapes, tensorNames } from '../../src/model/checkpoint.ts';
import { checkTensors } from '../../src/model/architecture.ts';
import { FsSource } from '../../src/node/fs-source.ts';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const modelsDir = path.resolve(repoRoot, process.env.NIBBLE_MODELS_DIR ?? '../shared/models');
const storiesDir = path.join(modelsDir, 'stories260K');
const readJson = (f: string): unknown => JSON.parse(readFileSync(path.join(storiesDir, f), 'utf8'));

function errorOf(fn: () => unknown, code: string): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(NibbleError);
    expect((e as NibbleError).code).toBe(code);
    return (e as NibbleError).message;
  }
  throw new Error(`expected a NibbleError '${code}', nothing was thrown`);
}

/** meta-llama/Llama-3.2-1B config.json (abridged to the fields that matter). */
const LLAMA32_1B = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128001,
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2048,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  vocab_size: 128256,
};

/** Qwen/Qwen2.5-0.5B-Instruct config.json (abridged). */
const QWEN25_05B = {
  architectures: ['Qwen2ForCausalLM'],
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: 'silu',
  hidden_size: 896,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_sliding_window: false,
  vocab_size: 151936,
};

const base = { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100 };

describe('parseConfig', () => {
  it('parses stories260K', () => {
    const cfg = parseConfig(readJson('config.json'), readJson('generation_config.json'));
    expect(cfg).toEqual<LlamaConfig>({
      modelType: 'llama',
      hiddenSize: 64,
      intermediateSize: 172,
      numLayers: 5,
      numHeads: 8,
      numKvHeads: 4,
      headDim: 8,
      vocabSize: 512,
      maxPositionEmbeddings: 512,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScaling: null,
      tieWordEmbeddings: true,
      attentionBias: false,
      bosTokenId: 1,
      eosTokenIds: [2],
      torchDtype: 'float32',
    });
  });

  it('applies defaults', () => {
    const cfg = parseConfig(base);
    expect(cfg).toMatchObject({
      numKvHeads: 4,
      headDim: 16,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      maxPositionEmbeddings: 2048,
      tieWordEmbeddings: false,
      attentionBias: false,
      ropeScaling: null,
      bosTokenId: null,
      eosTokenIds: [],
      torchDtype: null,
    });
    expect(parseConfig({ ...base, head_dim: null }).headDim).toBe(16);
  });

  it('Qwen2 has q/k/v biases and keeps tie_word_embeddings', () => {
    const cfg = parseConfig(QWEN25_05B);
    expect(cfg).toMatchObject({ modelType: 'qwen2', attentionBias: true, tieWordEmbeddings: true, headDim: 64, numKvHeads: 2, ropeTheta: 1e6 });
    const layer = tensorNames(cfg).layers[0]!;
    expect(layer.qBias).toBe('model.layers.0.self_attn.q_proj.bias');
    expect(layer.oBias).toBeUndefined();
    expect(expectedShapes(cfg).get('model.layers.0.self_attn.k_proj.bias')).toEqual([128]);
    expect(parseConfig({ ...QWEN25_05B, tie_word_embeddings: undefined }).tieWordEmbeddings).toBe(false);
  });

  it('llama attention_bias and mistral', () => {
    const llama = parseConfig({ ...base, attention_bias: true });
    expect(llama.attentionBias).toBe(true);
    expect(tensorNames(llama).layers[1]!.oBias).toBe('model.layers.1.self_attn.o_proj.bias');
    const mistral = parseConfig({ ...base, model_type: 'mistral', sliding_window: 4096, attention_bias: true });
    expect(mistral.attentionBias).toBe(false);
  });

  it('unions eos ids from config and generation_config', () => {
    const cfg = parseConfig(LLAMA32_1B, { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009] });
    expect(cfg.eosTokenIds).toEqual([128001, 128008, 128009]);
    expect(cfg.bosTokenId).toBe(128000);
    expect(parseConfig({ ...base, eos_token_id: [5, 6] }, { eos_token_id: 6 }).eosTokenIds).toEqual([5, 6]);
    expect(errorOf(() => parseConfig({ ...base, eos_token_id: 'x' }), 'bad-config')).toMatch(/eos_token_id/);
  });

  it('rejects unsupported model types, naming the supported ones', () => {
    expect(errorOf(() => parseConfig({ ...base, model_type: 'gpt2' }), 'unsupported-architecture')).toBe(
      'model_type "gpt2" is not supported; nibble runs: llama, mistral, qwen2',
    );
    const { model_type: _, ...noType } = base;
    expect(errorOf(() => parseConfig(noType), 'unsupported-architecture')).toMatch(/no model_type; nibble runs: llama, mistral, qwen2/);
    expect(errorOf(() => parseConfig({ ...base, hidden_act: 'gelu' }), 'unsupported-architecture')).toMatch(/gelu/);
    // the kernels' limits are refused from config.json, before any weight is downloaded
    expect(errorOf(() => parseConfig({ ...base, head_dim: 320 }), 'unsupported-architecture')).toMatch(/head_dim 320 .*at most 256/);
    expect(errorOf(() => parseConfig({ ...base, head_dim: 6 }), 'unsupported-architecture')).toMatch(/head_dim 6 .*multiple of 4/);
    expect(errorOf(() => parseConfig({ ...base, intermediate_size: 1538 }), 'unsupported-architecture')).toMatch(/intermediate_size 1538/);
  });

  it('rejects missing or invalid required fields, naming the field', () => {
    const { hidden_size: _, ...noHidden } = base;
    expect(errorOf(() => parseConfig(noHidden), 'bad-config')).toMatch(/"hidden_size" is missing/);
    expect(errorOf(() => parseConfig({ ...base, vocab_size: 0 }), 'bad-config')).toMatch(/"vocab_size" must be a positive integer, got 0/);
    expect(errorOf(() => parseConfig({ ...base, num_hidden_layers: 2.5 }), 'bad-config')).toMatch(/num_hidden_layers/);
    expect(errorOf(() => parseConfig(null), 'bad-config')).toMatch(/JSON object/);
  });

  it('checks head and kv-head divisibility', () => {
    expect(errorOf(() => parseConfig({ ...base, hidden_size: 66 }), 'bad-config')).toMatch(
      /hidden_size \(66\) is not divisible by num_attention_heads \(4\)/,
    );
    expect(parseConfig({ ...base, hidden_size: 68, head_dim: 16 }).headDim).toBe(16); // explicit head_dim wins (68 / 4 heads would be 17)
    expect(errorOf(() => parseConfig({ ...base, head_dim: 7 }), 'bad-config')).toMatch(/head_dim \(7\) must be even/);
    expect(errorOf(() => parseConfig({ ...base, num_key_value_heads: 3 }), 'bad-config')).toMatch(/multiple of num_key_value_heads \(3\)/);
  });

  it('parses rope_scaling variants', () => {
    expect(parseConfig({ ...base, rope_scaling: { rope_type: 'default' } }).ropeScaling).toBeNull();
    expect(parseConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } }).ropeScaling).toEqual({ type: 'linear', factor: 2 });
    expect(parseConfig(LLAMA32_1B).ropeScaling).toEqual({
      type: 'llama3',
      factor: 32,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    });
    expect(errorOf(() => parseConfig({ ...base, rope_scaling: { type: 'yarn', factor: 4 } }), 'bad-config')).toMatch(
      /rope_scaling type "yarn" is not supported/,
    );
    expect(errorOf(() => parseConfig({ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } }), 'bad-config')).toMatch(
      /low_freq_factor/,
    );
  });
});

describe('ropeInvFreq', () => {
  it('default: 1 / theta^(2i/d)', () => {
    const inv = ropeInvFreq(parseConfig(readJson('config.json')));
    expect(inv.length).toBe(4);
    expect(Array.from(inv)).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
  });

  it('linear scaling divides by the factor', () => {
    const inv = ropeInvFreq(parseConfig({ ...base, head_dim: 8, rope_scaling: { type: 'linear', factor: 4 } }));
    expect(Array.from(inv)).toEqual([0.25, 0.025, 0.0025, 0.00025].map(Math.fround));
  });

  it('llama3 scaling matches the published formula (Llama-3.2-1B)', () => {
    const inv = ropeInvFreq(parseConfig(LLAMA32_1B));
    expect(inv.length).toBe(32);
    // Wavelength thresholds: low_freq_wavelen = 8192 / 1 = 8192, high_freq_wavelen = 8192 / 4 = 2048.
    // i = 0: inv = 1, wavelen = 2π < 2048 → high frequency, unchanged.
    expect(inv[0]).toBe(1);
    // i = 16: inv = 500000^(-1/2) = 0.001414213562373095, wavelen = 2π / inv = 4442.88 (between 2048
    // and 8192) → smooth = (8192 / 4442.882938 - 1) / (4 - 1) = 0.281282605;
    // result = (1 - smooth) · inv / 32 + smooth · inv.
    const inv16 = 1 / Math.sqrt(500000);
    const smooth = (8192 / ((2 * Math.PI) / inv16) - 1) / 3;
    expect(smooth).toBeCloseTo(0.281282605, 8);
    expect(inv[16]).toBe(Math.fround(((1 - smooth) * inv16) / 32 + smooth * inv16));
    expect(inv[16]).toBeCloseTo(0.000429556797, 11);
    // i = 31: inv = 500000^(-62/64) = 3.01385815e-6, wavelen ≈ 2.08e6 > 8192 → low frequency: inv / 32.
    expect(inv[31]).toBe(Math.fround(500000 ** (-62 / 64) / 32));
    expect(inv[31]).toBeCloseTo(9.4183067e-8, 14);
    // Monotone decreasing across the three bands.
    for (let i = 1; i < 32; i++) expect(inv[i]!).toBeLessThan(inv[i - 1]!);
  });
});

describe('tensor names and checkTensors', () => {
  const cfg = parseConfig(readJson('config.json'));

  it('names the HF tensors; tied head has no lm_head', () => {
    const names = tensorNames(cfg);
    expect(names.embed).toBe('model.embed_tokens.weight');
    expect(names.finalNorm).toBe('model.norm.weight');
    expect(names.lmHead).toBeNull();
    expect(names.layers).toHaveLength(5);
    expect(names.layers[3]).toEqual({
      inputNorm: 'model.layers.3.input_layernorm.weight',
      q: 'model.layers.3.self_attn.q_proj.weight',
      k: 'model.layers.3.self_attn.k_proj.weight',
      v: 'model.layers.3.self_attn.v_proj.weight',
      o: 'model.layers.3.self_attn.o_proj.weight',
      postNorm: 'model.layers.3.post_attention_layernorm.weight',
      gate: 'model.layers.3.mlp.gate_proj.weight',
      up: 'model.layers.3.mlp.up_proj.weight',
      down: 'model.layers.3.mlp.down_proj.weight',
    });
    expect(tensorNames({ ...cfg, tieWordEmbeddings: false }).lmHead).toBe('lm_head.weight');
  });

  it('checkpointTensors lists every tensor in file order with shape and kind', async () => {
    const { tensors } = await openCheckpoint(new FsSource(storiesDir));
    const list = checkpointTensors(cfg);
    expect(list.map((t) => t.name).sort()).toEqual([...tensors.keys()].sort());
    for (const t of list) {
      expect(t.shape).toEqual(tensors.get(t.name)!.shape);
      expect(t.kind).toBe(t.shape.length === 2 ? 'matrix' : 'vector');
    }
    expect(list[0]!.name).toBe('model.embed_tokens.weight');
    expect(list.slice(1, 6).map((t) => t.name)).toEqual([
      'model.layers.0.input_layernorm.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.0.self_attn.k_proj.weight',
      'model.layers.0.self_attn.v_proj.weight',
      'model.layers.0.self_attn.o_proj.weight',
    ]);
    expect(list[list.length - 1]!.name).toBe('model.norm.weight');
    // untied: lm_head last; Qwen2-style q/k/v biases right after v_proj, as vectors
    const qwen = checkpointTensors({ ...cfg, modelType: 'qwen2', attentionBias: true, tieWordEmbeddings: false });
    expect(qwen[qwen.length - 1]).toEqual({ name: 'lm_head.weight', shape: [cfg.vocabSize, cfg.hiddenSize], kind: 'matrix' });
    const i = qwen.findIndex((t) => t.name === 'model.layers.0.self_attn.v_proj.weight');
    expect(qwen.slice(i + 1, i + 5).map((t) => [t.name, t.kind])).toEqual([
      ['model.layers.0.self_attn.q_proj.bias', 'vector'],
      ['model.layers.0.self_attn.k_proj.bias', 'vector'],
      ['model.layers.0.self_attn.v_proj.bias', 'vector'],
      ['model.layers.0.self_attn.o_proj.weight', 'matrix'],
    ]);
    expect(qwen.some((t) => t.name.endsWith('o_proj.bias'))).toBe(false);
  });

  it('stories260K checkpoint passes checkTensors', async () => {
    const { tensors } = await openCheckpoint(new FsSource(storiesDir));
    expect(expectedShapes(cfg).size).toBe(tensors.size);
    expect(() => checkTensors(cfg, tensors)).not.toThrow();
    // An extra lm_head.weight next to tied embeddings is tolerated.
    const withHead = new Map(tensors).set('lm_head.weight', { ...tensors.get('model.embed_tokens.weight')!, name: 'lm_head.weight' });
    expect(() => checkTensors(cfg, withHead)).not.toThrow();
  });

  function table(c: LlamaConfig) {
    return new Map([...expectedShapes(c)].map(([n, shape]) => [n, { dtype: 'BF16', shape }]));
  }

  it('reports a missing tensor by name', () => {
    const t = table(cfg);
    t.delete('model.layers.3.mlp.up_proj.weight');
    expect(errorOf(() => checkTensors(cfg, t), 'missing-tensor')).toBe(
      'tensor "model.layers.3.mlp.up_proj.weight" is missing from the checkpoint',
    );
    const untied = { ...cfg, tieWordEmbeddings: false };
    expect(errorOf(() => checkTensors(untied, table(cfg)), 'missing-tensor')).toMatch(/"lm_head.weight" is missing/);
  });

  it('reports a wrong shape or dtype', () => {
    const t = table(cfg);
    t.set('model.layers.0.self_attn.k_proj.weight', { dtype: 'F16', shape: [64, 64] });
    expect(errorOf(() => checkTensors(cfg, t), 'bad-tensor')).toBe(
      'tensor "model.layers.0.self_attn.k_proj.weight" has shape [64,64] but the config implies [32,64]',
    );
    const d = table(cfg);
    d.set('model.norm.weight', { dtype: 'I8', shape: [64] });
    expect(errorOf(() => checkTensors(cfg, d), 'bad-tensor')).toMatch(/"model.norm.weight" has dtype I8/);
  });
});
