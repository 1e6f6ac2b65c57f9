/**
 * config.json (+ generation_config.json) → LlamaConfig, the RoPE inverse frequencies, and the
 * Llama graph's kernel limits (checked here, before any download). The checkpoint layout (tensor
 * names and shapes) is src/model/checkpoint.ts.
 *
 * One config type covers the supported families because they share the graph
 * (embed → [rmsnorm, qkv, rope, attn, o, rmsnorm, swiglu mlp]×L → rmsnorm → head):
 *   - llama   (Llama 2/3, TinyLlama, SmolLM, ...): optional q/k/v/o biases via `attention_bias`
 *   - mistral: same graph. `sliding_window` is ignored: nibble runs full (causal) attention,
 *              which is identical as long as the context stays within the window (4096 for
 *              Mistral 7B v0.1; v0.2+ sets it to null).
 *   - qwen2:   q/k/v biases always present (o_proj has none). `use_sliding_window` is likewise
 *              ignored (it is false in released Qwen2/2.5 configs).
 */
import { NibbleError } from '../errors.ts';
import { architectureNames, findArchitecture } from './architecture.ts';

export type RopeScaling =
  | null
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | { type: 'linear'; factor: number };

export interface LlamaConfig {
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  tieWordEmbeddings: boolean;
  /**
   * q, k, v projection biases. For model_type llama `attention_bias: true` also means an
   * o_proj bias (HF LlamaAttention), which tensorNames (checkpoint.ts) reports as `oBias`; qwen2 has q/k/v
   * biases only.
   */
  attentionBias: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  torchDtype: string | null;
}

/** The families whose config.json rules parseConfig knows (architectures name one: architecture.ts). */
export type SupportedModelType = 'llama' | 'mistral' | 'qwen2';

function badConfig(message: string): NibbleError {
  return new NibbleError('bad-config', `config.json: ${message}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `undefined` and `null` both mean "not given" (HF writes `"head_dim": null` sometimes). */
function given(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function positiveInt(obj: Record<string, unknown>, key: string): number {
  const v = obj[key];
  if (!given(v)) throw badConfig(`"${key}" is missing`);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
    throw badConfig(`"${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function optionalPositiveInt(obj: Record<string, unknown>, key: string, fallback: number): number {
  return given(obj[key]) ? positiveInt(obj, key) : fallback;
}

function positiveNumber(obj: Record<string, unknown>, key: string, where = ''): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw badConfig(`${where}"${key}" must be a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function optionalPositiveNumber(obj: Record<string, unknown>, key: string, fallback: number): number {
  return given(obj[key]) ? positiveNumber(obj, key) : fallback;
}

function optionalBool(obj: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const v = obj[key];
  if (!given(v)) return fallback;
  if (typeof v !== 'boolean') throw badConfig(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** A token id field: an int, a list of ints, or absent/null. */
function tokenIds(obj: Record<string, unknown>, key: string, file: string): number[] {
  const v = obj[key];
  if (!given(v)) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      throw new NibbleError('bad-config', `${file}: "${key}" must be a token id or a list of them, got ${JSON.stringify(v)}`);
    }
  }
  return list as number[];
}

function parseRopeScaling(v: unknown): RopeScaling {
  if (!given(v)) return null;
  if (!isObject(v)) throw badConfig(`"rope_scaling" must be an object or null, got ${JSON.stringify(v)}`);
  // Newer configs write `rope_type`, older ones `type`.
  const type = v.rope_type ?? v.type;
  const where = `rope_scaling (${String(type)}): `;
  switch (type) {
    case 'default':
      return null;
    case 'linear':
      return { type: 'linear', factor: positiveNumber(v, 'factor', where) };
    case 'llama3': {
      const s = {
        type: 'llama3' as const,
        factor: positiveNumber(v, 'factor', where),
        lowFreqFactor: positiveNumber(v, 'low_freq_factor', where),
        highFreqFactor: positiveNumber(v, 'high_freq_factor', where),
        originalMaxPositionEmbeddings: positiveNumber(v, 'original_max_position_embeddings', where),
      };
      // The smoothing divides by (high - low); transformers requires high > low as well.
      if (!(s.highFreqFactor > s.lowFreqFactor)) {
        throw badConfig(`${where}high_freq_factor (${s.highFreqFactor}) must exceed low_freq_factor (${s.lowFreqFactor})`);
      }
      return s;
    }
    default:
      throw badConfig(
        `rope_scaling type ${JSON.stringify(type ?? null)} is not supported (supported: llama3, linear, default)`,
      );
  }
}

/**
 * Parses a model's config.json (and optionally its generation_config.json, which may add EOS
 * ids and a BOS id) into a validated LlamaConfig.
 */
export function parseConfig(json: unknown, generationConfig?: unknown): LlamaConfig {
  if (!isObject(json)) throw badConfig('must be a JSON object');
  const gen = isObject(generationConfig) ? generationConfig : {};

  const modelType = json.model_type;
  const arch = typeof modelType === 'string' ? findArchitecture(modelType) : undefined;
  if (typeof modelType !== 'string' || !arch) {
    const what = given(modelType) ? `model_type ${JSON.stringify(modelType)} is not supported` : 'config.json has no model_type';
    throw new NibbleError('unsupported-architecture', `${what}; nibble runs: ${architectureNames().join(', ')}`);
  }
  const family = arch.family;

  // The graph is SwiGLU with SiLU; anything else would compute silently wrong numbers.
  const act = json.hidden_act ?? json.hidden_activation;
  if (given(act) && act !== 'silu' && act !== 'swish') {
    throw new NibbleError('unsupported-architecture', `hidden_act ${JSON.stringify(act)} is not supported; nibble runs silu`);
  }
  if (json.mlp_bias === true) {
    throw new NibbleError('unsupported-architecture', 'mlp_bias: true (biases on the MLP projections) is not supported');
  }

  const hiddenSize = positiveInt(json, 'hidden_size');
  const intermediateSize = positiveInt(json, 'intermediate_size');
  const numLayers = positiveInt(json, 'num_hidden_layers');
  const numHeads = positiveInt(json, 'num_attention_heads');
  const vocabSize = positiveInt(json, 'vocab_size');

  const numKvHeads = optionalPositiveInt(json, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw badConfig(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }

  let headDim: number;
  if (given(json.head_dim)) {
    headDim = positiveInt(json, 'head_dim');
  } else {
    if (hiddenSize % numHeads !== 0) {
      throw badConfig(
        `no head_dim given and hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads})`,
      );
    }
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) throw badConfig(`head_dim (${headDim}) must be even for rotary embeddings`);
  // the kernels' limits, checked here, before any weight byte is read: attention.wgsl keeps a head
  // in vec4 registers (head_dim a multiple of 4, at most 256); matmul.wgsl reads rows as vec4
  if (headDim % 4 !== 0 || headDim > 256) {
    throw new NibbleError('unsupported-architecture', `head_dim ${headDim} is not supported: nibble's attention needs a multiple of 4, at most 256`);
  }
  for (const [k, v] of [['hidden_size', hiddenSize], ['intermediate_size', intermediateSize]] as const) {
    if (v % 4 !== 0) throw new NibbleError('unsupported-architecture', `${k} ${v} is not supported: nibble's matmul needs a multiple of 4`);
  }

  // transformers v5 may nest rope settings in `rope_parameters`; prefer top-level fields.
  const ropeParams = isObject(json.rope_parameters) ? json.rope_parameters : undefined;
  const ropeTheta = given(json.rope_theta)
    ? positiveNumber(json, 'rope_theta')
    : ropeParams && given(ropeParams.rope_theta)
      ? positiveNumber(ropeParams, 'rope_theta', 'rope_parameters: ')
      : 10000;
  const ropeScaling = parseRopeScaling(
    given(json.rope_scaling)
      ? json.rope_scaling
      : ropeParams && given(ropeParams.rope_type ?? ropeParams.type)
        ? ropeParams
        : null,
  );

  const attentionBias = family === 'qwen2' ? true : family === 'llama' ? optionalBool(json, 'attention_bias', false) : false;

  const bos = [...tokenIds(json, 'bos_token_id', 'config.json'), ...tokenIds(gen, 'bos_token_id', 'generation_config.json')];
  const eos = [...tokenIds(json, 'eos_token_id', 'config.json'), ...tokenIds(gen, 'eos_token_id', 'generation_config.json')];

  const dtype = json.torch_dtype ?? json.dtype;

  return {
    modelType,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    maxPositionEmbeddings: optionalPositiveInt(json, 'max_position_embeddings', 2048),
    rmsNormEps: optionalPositiveNumber(json, 'rms_norm_eps', 1e-6),
    ropeTheta,
    ropeScaling,
    tieWordEmbeddings: optionalBool(json, 'tie_word_embeddings', false),
    attentionBias,
    bosTokenId: bos.length > 0 ? bos[0]! : null,
    eosTokenIds: [...new Set(eos)],
    torchDtype: typeof dtype === 'string' ? dtype : null,
  };
}

/**
 * RoPE inverse frequencies, length headDim/2: inv_freq[i] = 1 / theta^(2i/headDim), computed
 * in float64 and rounded to float32 once at the end, then rescaled exactly like transformers'
 * `_compute_linear_scaling_rope_parameters` / `_compute_llama3_parameters`.
 */
export function ropeInvFreq(cfg: LlamaConfig): Float32Array {
  const half = cfg.headDim / 2;
  const out = new Float32Array(half);
  const s = cfg.ropeScaling;
  for (let i = 0; i < half; i++) {
    let f = 1 / Math.pow(cfg.ropeTheta, (2 * i) / cfg.headDim);
    if (s?.type === 'linear') {
      f /= s.factor;
    } else if (s?.type === 'llama3') {
      // Wavelengths longer than the original context / low_freq_factor are scaled down by
      // `factor`; shorter than original / high_freq_factor are kept; in between, interpolate.
      const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
      const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowFreqWavelen) {
        f = f / s.factor;
      } else if (wavelen >= highFreqWavelen) {
        // (not < high and not > low): medium frequency
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        f = ((1 - smooth) * f) / s.factor + smooth * f;
      }
    }
    out[i] = f;
  }
  return out;
}
