import type { TensorInfo } from '../../src/loader/safetensors.ts';
import type { LlamaConfig } from '../../src/model/config.ts';
import type { CheckpointTensor } from '../../src/model/checkpoint.ts';
import { registerArchitecture } from '../../src/model/architecture.ts';
import { SpecBuilder, type BindingLimits, type LlamaWeightSpecs } from '../../src/model/spec.ts';
import { formatFor, type QuantPlan } from '../../src/quant/plan.ts';

/**
 * A made-up architecture variant: a checkpoint that stores q/k/v and gate/up already fused
 * (`qkv_proj`, `gate_up_proj`, as Phi-3 does) under model_type "fused-llama". Declaring it touches
 * src/model/ only (an Architecture); config parsing, the tensor check and the loader's spec follow.
 * (test/node/weight-spec.test.ts checks the spec; test/browser/variant.test.ts loads one on the GPU.)
 */
export function fusedCheckpoint(cfg: LlamaConfig): CheckpointTensor[] {
  const h = cfg.hiddenSize;
  const qkv = (cfg.numHeads + 2 * cfg.numKvHeads) * cfg.headDim;
  const out: CheckpointTensor[] = [{ name: 'model.embed_tokens.weight', shape: [cfg.vocabSize, h], kind: 'matrix' }];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [h], kind: 'vector' },
      { name: `${p}.self_attn.qkv_proj.weight`, shape: [qkv, h], kind: 'matrix' },
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, cfg.numHeads * cfg.headDim], kind: 'matrix' },
      { name: `${p}.post_attention_layernorm.weight`, shape: [h], kind: 'vector' },
      { name: `${p}.mlp.gate_up_proj.weight`, shape: [2 * cfg.intermediateSize, h], kind: 'matrix' },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, cfg.intermediateSize], kind: 'matrix' },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [h], kind: 'vector' });
  if (!cfg.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [cfg.vocabSize, h], kind: 'matrix' });
  return out;
}

export function fusedWeights(cfg: LlamaConfig, tensors: ReadonlyMap<string, TensorInfo>, plan: QuantPlan, limits?: BindingLimits): LlamaWeightSpecs {
  const b = new SpecBuilder(tensors, limits);
  const embed = b.split('model.embed_tokens.weight', formatFor(plan, 'model.embed_tokens.weight'));
  const layers = Array.from({ length: cfg.numLayers }, (_, i) => {
    const p = `model.layers.${i}`;
    const m = (n: string, label: string) => b.matrix([`${p}.${n}`], formatFor(plan, `${p}.${n}`), label);
    return {
      inputNorm: b.vector([`${p}.input_layernorm.weight`], `${p}.input_layernorm.weight`),
      qkv: m('self_attn.qkv_proj.weight', `layer${i}.qkv`),
      qkvBias: null,
      o: m('self_attn.o_proj.weight', `layer${i}.o`),
      oBias: null,
      postNorm: b.vector([`${p}.post_attention_layernorm.weight`], `${p}.post_attention_layernorm.weight`),
      gateUp: m('mlp.gate_up_proj.weight', `layer${i}.gate_up`),
      down: m('mlp.down_proj.weight', `layer${i}.down`),
    };
  });
  const finalNorm = b.vector(['model.norm.weight'], 'model.norm.weight');
  const head = cfg.tieWordEmbeddings ? embed : b.split('lm_head.weight', formatFor(plan, 'lm_head.weight'));
  return { embed, head, finalNorm, layers, all: b.all };
}


export const FUSED_MODEL_TYPE = 'fused-llama';

/** Registers the variant (idempotent). */
export function registerFusedLlama(): void {
  registerArchitecture(FUSED_MODEL_TYPE, { family: 'llama', checkpointTensors: fusedCheckpoint, describeWeights: fusedWeights });
}
