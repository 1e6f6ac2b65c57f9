/**
 * Architectures: how a config.json `model_type` maps onto the Llama graph (src/model/llama.ts). An
 * architecture names its checkpoint's tensors and declares the graph's GPU weights from them (which
 * tensors fuse into which weight); the loader, the memory preflight and the tensor check read
 * everything through it, so a new checkpoint layout is a new Architecture here and nothing else.
 * llama, mistral and qwen2 share the Hugging Face Llama layout (src/model/checkpoint.ts).
 */
import { NibbleError } from '../errors.ts';
import type { TensorInfo } from '../loader/safetensors.ts';
import type { QuantPlan } from '../quant/plan.ts';
import { checkpointTensors, type CheckpointTensor } from './checkpoint.ts';
import type { LlamaConfig, SupportedModelType } from './config.ts';
import { describeWeights, type BindingLimits, type LlamaWeightSpecs } from './spec.ts';

export interface Architecture {
  /**
   * Which of config.json's family rules apply (parseConfig): 'llama' (optional `attention_bias`,
   * which adds an o_proj bias), 'mistral' (no biases), 'qwen2' (q/k/v biases).
   */
  family: SupportedModelType;
  /** Every tensor a checkpoint of this config holds, in file order. */
  checkpointTensors(cfg: LlamaConfig): CheckpointTensor[];
  /** The graph's GPU weights from the checkpoint's tensors, under a plan, split to fit `limits`. */
  describeWeights(cfg: LlamaConfig, tensors: ReadonlyMap<string, TensorInfo>, plan: QuantPlan, limits?: BindingLimits): LlamaWeightSpecs;
}

const registry = new Map<string, Architecture>();
for (const family of ['llama', 'mistral', 'qwen2'] as const) registry.set(family, { family, checkpointTensors, describeWeights });

/** Makes config.json's `model_type` name an architecture (a variant of a family's checkpoint layout). */
export function registerArchitecture(modelType: string, a: Architecture): void {
  registry.set(modelType, a);
}

/** The architecture of a model_type, or undefined when nibble does not run it. */
export function findArchitecture(modelType: string): Architecture | undefined {
  return registry.get(modelType);
}

/** Every model_type nibble runs. */
export function architectureNames(): string[] {
  return [...registry.keys()];
}

/** The architecture of a parsed config. */
export function architectureOf(cfg: LlamaConfig): Architecture {
  const a = registry.get(cfg.modelType);
  if (!a) throw new NibbleError('unsupported-architecture', `model_type ${JSON.stringify(cfg.modelType)} is not supported; nibble runs: ${architectureNames().join(', ')}`);
  return a;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);

/**
 * Checks that the checkpoint holds every tensor the config implies, with the right shape and
 * a float dtype. Extra tensors are ignored (e.g. an `lm_head.weight` shipped alongside tied
 * embeddings, or rotary caches).
 */
export function checkTensors(cfg: LlamaConfig, table: ReadonlyMap<string, { dtype: string; shape: readonly number[] }>): void {
  for (const { name, shape } of architectureOf(cfg).checkpointTensors(cfg)) {
    const t = table.get(name);
    if (!t) throw new NibbleError('missing-tensor', `tensor "${name}" is missing from the checkpoint`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new NibbleError('bad-tensor', `tensor "${name}" has shape [${t.shape.join(',')}] but the config implies [${shape.join(',')}]`);
    }
    if (!FLOAT_DTYPES.has(t.dtype)) {
      throw new NibbleError('bad-tensor', `tensor "${name}" has dtype ${t.dtype}; nibble loads F32, F16 or BF16 weights`);
    }
  }
}
