import type { LlamaConfig } from './config.ts';
import { ropeInvFreq } from './config.ts';
import type { TensorInfo } from '../loader/safetensors.ts';
import type { ModelSource } from '../source/types.ts';
import { HostMemoryMeter } from '../loader/memory.ts';
import { loadWeights, type LayerWeightSet, type LoadStats, type WeightLoadOptions } from '../loader/weights.ts';
import type { Op, Runtime, StepShape } from '../kernels/runtime.ts';
import { embedOp, GEMV_MAX_ROWS, linearOp, type LinearMode } from '../kernels/linear.ts';
import { attentionOp, ropeKvOp, ropeTable, rmsnormOp, swigluOp } from '../kernels/ops.ts';
import { argmaxRowsOp } from '../kernels/sample.ts';
import type { GpuWeight } from '../quant/format.ts';
import type { QuantPlan } from '../quant/plan.ts';

/**
 * The Llama graph, written once for every weight format:
 *   embed → [rmsnorm, qkv, rope+kv-write, attention, o(+residual), rmsnorm, gate·up, swiglu,
 *            down(+residual)] × L → final rmsnorm (last rows) → LM head → argmax
 * q/k/v are fused into one [q|k|v] weight and gate/up into one [gate|up] weight at load, so a
 * layer is 9 dispatches. Nothing here depends on the weight format: linearOp/embedOp pick kernels.
 */

export type { LoadProgress, LoadStats } from '../loader/weights.ts';

export interface ModelLoadOptions extends WeightLoadOptions {
  /** KV cache length in positions (default min(max_position_embeddings, 4096)). */
  contextLength?: number;
  /** Most tokens per batched pass (prompt chunk size; default min(256, contextLength)). */
  maxBatch?: number;
  /** Rows of logits one pass can produce (eval, speculative verify); default from a 64 MiB budget. */
  maxLogitRows?: number;
}

interface LayerWeights extends LayerWeightSet {
  k: GPUBuffer; // KV cache of this layer
  v: GPUBuffer;
}

export class LlamaModel {
  readonly cfg: LlamaConfig;
  readonly rt: Runtime;
  readonly ctx: number;
  readonly maxBatch: number;
  readonly maxLogitRows: number;
  /** Token ids of the current pass; slot 0 also receives argmax's choice. */
  readonly tokens: GPUBuffer;
  readonly logits: GPUBuffer;
  /** GPU bytes of every weight: 2-D weights (codes + scales) plus norm vectors and biases. */
  readonly weightBytes: number;
  /** GPU bytes of the 2-D weights alone (codes + scales). */
  readonly matrixBytes: number;
  /** Parameters in 2-D weights. */
  readonly weightCount: number;
  readonly formats: Record<string, number>;
  readonly hostMemory: HostMemoryMeter;
  /** How the weights were loaded (cache, bytes, requests, timings); set by load(). */
  loadStats: LoadStats | null = null;
  private opsLayersGemv: Op[] = [];
  private opsLayersGemm: Op[] = [];
  private opsEmbed: Op[] = [];
  private opsHeadGemv: Op[] = [];
  private opsHeadGemm: Op[] = [];
  private opArgmax: Op;
  private buffers: GPUBuffer[] = [];

  private constructor(
    rt: Runtime,
    cfg: LlamaConfig,
    w: { embed: GpuWeight; head: GpuWeight; finalNorm: GPUBuffer; layers: LayerWeights[] },
    dims: { ctx: number; maxBatch: number; maxLogitRows: number },
    owned: GPUBuffer[],
    stats: { weightBytes: number; matrixBytes: number; weightCount: number; formats: Record<string, number>; host: HostMemoryMeter },
  ) {
    this.rt = rt;
    this.cfg = cfg;
    this.ctx = dims.ctx;
    this.maxBatch = dims.maxBatch;
    this.maxLogitRows = dims.maxLogitRows;
    this.weightBytes = stats.weightBytes;
    this.matrixBytes = stats.matrixBytes;
    this.weightCount = stats.weightCount;
    this.formats = stats.formats;
    this.hostMemory = stats.host;
    this.buffers = owned;
    const { hiddenSize: H, numHeads: nH, numKvHeads: nKV, headDim: D, intermediateSize: I, vocabSize: V } = cfg;
    const B = dims.maxBatch;
    const mk = (n: number, label: string) => {
      const b = rt.buffer(n * 4, label);
      this.buffers.push(b);
      return b;
    };
    this.tokens = mk(Math.max(B, 4), 'tokens');
    const h = mk(B * H, 'hidden');
    const xn = mk(B * H, 'normed');
    const qkv = mk(B * (nH + 2 * nKV) * D, 'qkv');
    const q = mk(B * nH * D, 'q');
    const attn = mk(B * nH * D, 'attn');
    const gu = mk(B * 2 * I, 'gate_up');
    const act = mk(B * I, 'act');
    const xf = mk(dims.maxLogitRows * H, 'final_normed');
    this.logits = mk(dims.maxLogitRows * V, 'logits');
    const cs = rt.upload(ropeTable(ropeInvFreq(cfg), dims.ctx), 'rope_cos_sin');
    this.buffers.push(cs);

    this.opsEmbed = [embedOp(rt, w.embed, this.tokens, h)];
    const shape = { nHeads: nH, nKvHeads: nKV, headDim: D, ctx: dims.ctx };
    for (const mode of ['gemv', 'gemm'] as LinearMode[]) {
      const ops = mode === 'gemv' ? this.opsLayersGemv : this.opsLayersGemm;
      w.layers.forEach((L, i) => {
        const p = `layer${i}`;
        ops.push(
          rmsnormOp(rt, { x: h, out: xn, weight: L.inputNorm, H, eps: cfg.rmsNormEps }, `${p}.input_norm`),
          linearOp(rt, L.qkv, mode, { x: xn, y: qkv, bias: L.qkvBias ?? undefined }, `${p}.qkv`),
          ropeKvOp(rt, { ...shape, qkv, q, k: L.k, v: L.v, cosSin: cs }, `${p}.rope_kv`),
          attentionOp(rt, { ...shape, q, out: attn, k: L.k, v: L.v }, `${p}.attention`),
          linearOp(rt, L.o, mode, { x: attn, y: h, bias: L.oBias ?? undefined, accumulate: true }, `${p}.o`),
          rmsnormOp(rt, { x: h, out: xn, weight: L.postNorm, H, eps: cfg.rmsNormEps }, `${p}.post_norm`),
          linearOp(rt, L.gateUp, mode, { x: xn, y: gu }, `${p}.gate_up`),
          swigluOp(rt, { gateUp: gu, out: act, I }, `${p}.swiglu`),
          linearOp(rt, L.down, mode, { x: act, y: h, accumulate: true }, `${p}.down`),
        );
      });
      const head = mode === 'gemv' ? this.opsHeadGemv : this.opsHeadGemm;
      head.push(
        rmsnormOp(rt, { x: h, out: xf, weight: w.finalNorm, H, eps: cfg.rmsNormEps, last: true }, 'final_norm'),
        linearOp(rt, w.head, mode, { x: xf, y: this.logits, head: true }, 'lm_head'),
      );
    }
    this.opArgmax = argmaxRowsOp(rt, { logits: this.logits, out: this.tokens, V, rows: () => 1 }, 'argmax');
  }

  /**
   * Records one forward pass of `s.T` tokens at positions pos0.. (token ids already in `tokens`,
   * or in slot 0 from the previous argmax), producing logits for the last `s.headRows` rows, and
   * with `argmax` the greedy next token in tokens[0]. Returns the ops for Runtime.record.
   */
  ops(s: StepShape, o: { head: boolean; argmax: boolean }): Op[] {
    const layers = s.T <= GEMV_MAX_ROWS ? this.opsLayersGemv : this.opsLayersGemm;
    const out = [...this.opsEmbed, ...layers];
    if (o.head) out.push(...(s.headRows <= GEMV_MAX_ROWS ? this.opsHeadGemv : this.opsHeadGemm));
    if (o.argmax) out.push(this.opArgmax);
    return out;
  }

  /** Dispatches per decode step (for reports). */
  get dispatchesPerToken(): number {
    return this.ops({ T: 1, pos0: 0, headRows: 1 }, { head: true, argmax: true }).length;
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
    this.buffers = [];
  }

  /**
   * Loads the weights (weight cache, else streamed from the checkpoint and quantized: see
   * loader/weights.ts), allocates the KV cache and builds the graph. On failure every GPU buffer
   * made so far is destroyed.
   */
  static async load(
    rt: Runtime,
    cfg: LlamaConfig,
    source: ModelSource,
    tensors: Map<string, TensorInfo>,
    plan: QuantPlan,
    opts: ModelLoadOptions = {},
  ): Promise<LlamaModel> {
    const ctx = Math.max(1, Math.min(opts.contextLength ?? Math.min(cfg.maxPositionEmbeddings, 4096), cfg.maxPositionEmbeddings));
    const maxBatch = Math.max(1, Math.min(opts.maxBatch ?? 256, ctx));
    const maxLogitRows = Math.max(
      1,
      Math.min(opts.maxLogitRows ?? Math.max(GEMV_MAX_ROWS + 1, Math.floor((64 << 20) / (cfg.vocabSize * 4))), maxBatch),
    );
    const w = await loadWeights(rt, cfg, source, tensors, plan, opts);
    const owned = w.owned;
    try {
      const kvBytes = cfg.numKvHeads * ctx * cfg.headDim * 4;
      const layers: LayerWeights[] = w.layers.map((L, i) => {
        const k = rt.buffer(kvBytes, `layer${i}.k_cache`);
        owned.push(k);
        const v = rt.buffer(kvBytes, `layer${i}.v_cache`);
        owned.push(v);
        return { ...L, k, v };
      });
      const model = new LlamaModel(rt, cfg, { embed: w.embed, head: w.head, finalNorm: w.finalNorm, layers }, { ctx, maxBatch, maxLogitRows }, owned, {
        weightBytes: w.weightBytes,
        matrixBytes: w.matrixBytes,
        weightCount: w.weightCount,
        formats: w.formats,
        host: w.budget.meter,
      });
      model.loadStats = w.stats;
      return model;
    } catch (e) {
      for (const b of owned) b.destroy();
      throw e;
    }
  }
}
