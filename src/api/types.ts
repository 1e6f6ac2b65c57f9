/**
 * The public option and result types of Engine (src/api/engine.ts re-exports them).
 */
import type { AdapterInfo, GpuOptions } from '../gpu/context.ts';
import type { MatmulReduce } from '../kernels/linear.ts';
import type { LlamaConfig } from '../model/config.ts';
import type { LoadProgress, LoadStats } from '../model/llama.ts';
import type { WeightCache } from '../cache/types.ts';
import type { QuantOption, QuantPlan } from '../quant/plan.ts';
import type { FinishReason } from '../generate/decode.ts';
import type { SamplingOptions } from '../generate/sampling.ts';
import type { SpeculativeStats } from '../generate/speculative.ts';
import type { ModelSource } from '../source/types.ts';
import type { SourceOptions } from './resolve.ts';
import type { GpuMemoryEstimate } from './preflight.ts';

export interface LoadOptions extends GpuOptions, SourceOptions {
  /** Weight format for all 2-D weights, or a plan with per-tensor overrides. Default 'f32'. */
  quant?: QuantOption;
  /** KV cache length in tokens (default min(max_position_embeddings, 4096)). */
  contextLength?: number;
  /** Most prompt tokens per batched pass (default 256). */
  maxBatch?: number;
  /** Bytes of one Range read of the checkpoint (default 16 MiB; always whole rows). */
  chunkBytes?: number;
  /** Range reads in flight at once (default 4). */
  parallelReads?: number;
  /** Most bytes the loader holds in host memory at once, whatever the model size (default 256 MiB). */
  hostMemoryBudget?: number;
  /** Verify the sha256 of weight files the source gives one for (Hub LFS ETags); default true. */
  verify?: boolean;
  /**
   * Cache of quantized weights: a WeightCache (e.g. DirCache in Node), true (the browser's store:
   * OPFS, else the Cache API) or false. Default: the browser's store for Hub ids, else none.
   */
  cache?: WeightCache | boolean;
  /** Rows of logits one pass may return (evaluation); default from a 64 MiB budget. */
  maxLogitRows?: number;
  /**
   * Matmul kernel variant: 'auto' (default: chosen for the adapter), or 'subgroup' / 'workgroup' /
   * 'row' (how a weight row is shared by lanes; every variant computes the same result).
   */
  matmul?: MatmulReduce | 'auto';
  /**
   * KV cache storage: 'f32' (default: exact) or 'f16' (half the KV bytes, pack2x16float: no shader-f16
   * needed; on stories260K logits move by ≤ 0.015 and greedy output is unchanged). A draft model uses
   * the same.
   */
  kvCache?: 'f32' | 'f16';
  /**
   * Most GPU bytes this load may use (weights, KV cache, activations, load-time staging; draft
   * included). Checked before anything is downloaded, like the adapter's per-buffer limits: a load
   * that needs more is a `gpu-limit` error naming the sizes and a format or context length that fits.
   */
  maxGpuBytes?: number;
  /**
   * Progress of every phase: 'metadata', 'cache', 'weights' (download), 'quantize' (the GPU built
   * the weights), 'compile' (pipelines), then 'done' when the model can generate (Engine.load
   * resolves right after). `fraction` (0..1) covers the whole load and never decreases.
   */
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /**
   * A draft model for speculative decoding, loaded onto the same GPU device. Without `model` the
   * target's own checkpoint is loaded again at `quant` (no second download when it is cached).
   */
  draft?: DraftOptions;
}

export interface DraftOptions {
  /** Another model sharing the tokenizer (a ModelSource, URL or Hub id); default: the target's. */
  model?: string | ModelSource;
  /** The draft's weight format (default 'nf4'). */
  quant?: QuantOption;
  /** Tokens the draft proposes per round, k (default 4); the most per round when adaptive. */
  tokens?: number;
  /**
   * Adapt k per round (default false): one more after a round that accepted everything, else the
   * accepted count + 1, between 1 and `tokens`.
   */
  adaptive?: boolean;
  /**
   * Queue the next round's first draft pass before the verify's result is read back, as if the
   * round were accepted whole (wasted, and rolled back, when it is not): the readback's round trip
   * then no longer leaves the GPU idle. After a round that was not accepted whole, the next one
   * waits. Default: on, except on CPU adapters (SwiftShader), where a draft pass costs far more than
   * the round trip it hides.
   */
  pipeline?: boolean;
}

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 128; Infinity: until EOS or the end of the context). */
  maxNewTokens?: number;
  /** Prompt is token ids instead of text (no tokenization). */
  promptIds?: number[];
  /** Add the tokenizer's special tokens (BOS) to a text prompt (default true). */
  addSpecialTokens?: boolean;
  /** Keep going past EOS tokens (default false). */
  ignoreEos?: boolean;
  /** Token ids that end generation (default: the model's EOS ids from config + generation_config). */
  eosTokenIds?: number[];
  /**
   * Stop strings: generation ends when the text contains one. Matched across token boundaries;
   * neither the stop string nor anything after it is returned or streamed (text that could be the
   * start of one is held back until it is decided).
   */
  stop?: string | string[];
  /**
   * Use the draft model loaded with LoadOptions.draft (default: true when one is loaded). Requests
   * with penalties decode plainly (their counts would need rolling back with rejected drafts).
   */
  speculative?: boolean;
  signal?: AbortSignal;
}

export interface Timings {
  /** Model load, from Engine.load's call to ready (ms). */
  loadMs: number;
  /**
   * The prompt phase (ms): the prompt pass until the first generated token id is on the CPU, and with
   * speculative decoding until the draft's prompt pass is done too (the first token is delivered
   * as soon as it is known; decodeMs starts after both).
   */
  prefillMs: number;
  /** The rest of generation (ms). */
  decodeMs: number;
  /** Decoded tokens after the first, per second of decodeMs. */
  decodeTokensPerSecond: number;
  /** Prompt tokens processed per second of prefillMs. */
  prefillTokensPerSecond: number;
}

export interface GenerateResult {
  /** Generated text (a matched stop string and what followed it are cut off). */
  text: string;
  promptTokenIds: number[];
  /** Generated ids (an EOS that stopped generation is not included; a stop string's tokens are). */
  tokenIds: number[];
  /**
   * 'stop': an EOS id or a stop string; 'length': maxNewTokens, or the context is full (prompt +
   * generated tokens never exceed contextLength); 'abort': the signal fired.
   */
  finishReason: FinishReason;
  /** The stop string that ended generation, if one did. */
  stopString?: string;
  /** Prompt tokens whose k/v were already in the cache (a chat's earlier turns): not recomputed. */
  cachedPromptTokens: number;
  /** The sampling seed used (random unless given). */
  seed: number;
  timings: Timings;
  /** With a draft model: acceptance statistics. */
  speculative?: SpeculativeStats;
}

/** A running generation: iterate it for text as it is produced; `result` resolves at the end. */
export interface Generation extends AsyncIterable<string> {
  readonly result: Promise<GenerateResult>;
}

export interface EngineInfo {
  /** The model's name: the id / URL it was loaded from. */
  model: string;
  adapter: AdapterInfo;
  features: { f16: boolean; subgroups: boolean; timestampQuery: boolean };
  config: LlamaConfig;
  quant: QuantPlan;
  quantKey: string;
  contextLength: number;
  /** How the KV cache is stored (LoadOptions.kvCache). */
  kvCache: 'f32' | 'f16';
  /** GPU bytes of all weights: 2-D weights (codes + scales), norms and biases. */
  weightBytes: number;
  /** Bits per 2-D weight parameter on the GPU, scales included (norms and biases excluded). */
  bitsPerWeight: number;
  /** Parameters per weight format, e.g. { nf4: 1.2e9, int8: 2.6e8 }. */
  formats: Record<string, number>;
  /** Most checkpoint bytes the loader held in host memory at once. */
  loaderPeakHostBytes: number;
  /** The memory preflight's estimate of this load's GPU bytes (made before anything was downloaded). */
  gpuMemory: GpuMemoryEstimate;
  /** How the weights were loaded: cache hit/miss, bytes downloaded, requests, verified files, timings. */
  load: LoadStats | null;
  dispatchesPerToken: number;
  loadMs: number;
  /** Sampling settings from generation_config.json (when it asks for sampling; empty otherwise). */
  generationDefaults: SamplingOptions;
  /** The draft model of speculative decoding, when one was loaded. */
  draft?: { model: string; quantKey: string; weightBytes: number; bitsPerWeight: number; formats: Record<string, number>; tokens: number; adaptive: boolean; pipeline: boolean };
}
