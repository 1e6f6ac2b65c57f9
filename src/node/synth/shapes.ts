/**
 * The synthetic checkpoints' shape catalogue (src/node/synth.ts): each shape's published config.json
 * and generation_config.json, and the real repo it copies.
 */

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
