import type { Op, Runtime, StepShape } from '../kernels/runtime.ts';

/**
 * What generation needs of a model (LlamaModel is one): a graph that runs a pass of T tokens at
 * positions pos0.. over its KV cache, reading the token ids from `tokens` and writing the logits
 * of the last `headRows` rows into `logits`. Sequence, the speculator and eval depend on this, not
 * on the concrete class.
 */
export interface PassModel {
  readonly cfg: { readonly vocabSize: number };
  readonly rt: Runtime;
  /** KV cache length in positions. */
  readonly contextLength: number;
  /** Most tokens per pass. */
  readonly maxBatch: number;
  /** Most logit rows per pass. */
  readonly maxLogitRows: number;
  /** Token ids of the current pass; slot 0 also receives argmax's choice. */
  readonly tokens: GPUBuffer;
  /** [maxLogitRows, vocabSize] f32. */
  readonly logits: GPUBuffer;
  /** The ops of one pass: the graph, the LM head when `head`, then argmax into tokens[0] when `argmax`. */
  ops(s: StepShape, o: { head: boolean; argmax: boolean }): Op[];
}
