/**
 * The Hugging Face checkpoint of a Llama-family model: the tensor names, shapes and kinds its
 * config implies, in file order. One copy of the Llama layout: the weight spec (src/model/spec.ts),
 * the tensor check at load (checkTensors in architecture.ts), the catalogue's sizes and the
 * synthetic-checkpoint writer (src/node/synth.ts) all read it from here.
 */
import type { LlamaConfig } from './config.ts';

export interface LayerTensorNames {
  inputNorm: string;
  q: string;
  k: string;
  v: string;
  o: string;
  qBias?: string;
  kBias?: string;
  vBias?: string;
  /** Only for model_type llama with attention_bias: true (HF puts a bias on o_proj too). */
  oBias?: string;
  postNorm: string;
  gate: string;
  up: string;
  down: string;
}

export interface TensorNames {
  embed: string;
  finalNorm: string;
  /** null when the head is tied to the embedding. */
  lmHead: string | null;
  layers: LayerTensorNames[];
}

/** The Hugging Face tensor names the graph reads. */
export function tensorNames(cfg: LlamaConfig): TensorNames {
  const layers: LayerTensorNames[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    const l: LayerTensorNames = {
      inputNorm: `${p}.input_layernorm.weight`,
      q: `${p}.self_attn.q_proj.weight`,
      k: `${p}.self_attn.k_proj.weight`,
      v: `${p}.self_attn.v_proj.weight`,
      o: `${p}.self_attn.o_proj.weight`,
      postNorm: `${p}.post_attention_layernorm.weight`,
      gate: `${p}.mlp.gate_proj.weight`,
      up: `${p}.mlp.up_proj.weight`,
      down: `${p}.mlp.down_proj.weight`,
    };
    if (cfg.attentionBias) {
      l.qBias = `${p}.self_attn.q_proj.bias`;
      l.kBias = `${p}.self_attn.k_proj.bias`;
      l.vBias = `${p}.self_attn.v_proj.bias`;
      if (cfg.modelType === 'llama') l.oBias = `${p}.self_attn.o_proj.bias`;
    }
    layers.push(l);
  }
  return {
    embed: 'model.embed_tokens.weight',
    finalNorm: 'model.norm.weight',
    lmHead: cfg.tieWordEmbeddings ? null : 'lm_head.weight',
    layers,
  };
}

export interface CheckpointTensor {
  name: string;
  shape: number[];
  kind: 'matrix' | 'vector';
}

/**
 * Every tensor a Hugging Face checkpoint of this config holds, in file order (embed, layers…, final
 * norm, lm_head unless tied). Matrices are PyTorch Linear's [out, in]; vectors are norm weights and
 * biases.
 */
export function checkpointTensors(cfg: LlamaConfig): CheckpointTensor[] {
  const names = tensorNames(cfg);
  const h = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const ff = cfg.intermediateSize;
  const out: CheckpointTensor[] = [];
  const matrix = (name: string, rows: number, cols: number) => out.push({ name, shape: [rows, cols], kind: 'matrix' });
  const vector = (name: string | undefined, n: number) => {
    if (name) out.push({ name, shape: [n], kind: 'vector' });
  };
  matrix(names.embed, cfg.vocabSize, h);
  for (const l of names.layers) {
    vector(l.inputNorm, h);
    matrix(l.q, qDim, h);
    matrix(l.k, kvDim, h);
    matrix(l.v, kvDim, h);
    vector(l.qBias, qDim);
    vector(l.kBias, kvDim);
    vector(l.vBias, kvDim);
    matrix(l.o, h, qDim);
    vector(l.oBias, h);
    vector(l.postNorm, h);
    matrix(l.gate, ff, h);
    matrix(l.up, ff, h);
    matrix(l.down, h, ff);
  }
  vector(names.finalNorm, h);
  if (names.lmHead) matrix(names.lmHead, cfg.vocabSize, h);
  return out;
}

/** Every tensor the graph reads → its expected shape (PyTorch Linear layout: [out, in]). */
export function expectedShapes(cfg: LlamaConfig): Map<string, number[]> {
  return new Map(checkpointTensors(cfg).map((t) => [t.name, t.shape]));
}
