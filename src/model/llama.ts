import type { LlamaConfig } from './config.ts';
import { ropeInvFreq } from './config.ts';
import { architectureOf } from './architecture.ts';
import { assembleWeights, type BindingLimits, type LlamaWeights, type LlamaWeightSpecs } from './spec.ts';
import type { TensorInfo } from '../loader/safetensors.ts';
import type { ModelSource } from '../source/types.ts';
import type { HostMemoryMeter } from '../util/host-budget.ts';
import { loadWeights, type LoadStats, type WeightLoadOptions } from '../loader/weights.ts';
import type { Op, Runtime, StepShape } from '../kernels/runtime.ts';
import { chooseMatmulVariant, embedOps, linearOps, MAX_VERIFY_ROWS, prefillDequantBytes, type LinearMode, type MatmulReduce, type MatmulVariant, type ModelWeight } from '../kernels/linear.ts';
import { attentionOp, attentionPrefillOp, kvCacheBytes, ropeKvOp, ropeTable, swigluOp } from '../kernels/ops.ts';
import { argmaxRowsOp } from '../kernels/sample.ts';
import type { QuantPlan } from '../quant/plan.ts';

/**
 * The Llama graph, written once for every weight format and every architecture that maps onto it
 * (architecture.ts):
 *   embed → [rmsnorm·qkv, rope+kv-write, attention, o(+residual), rmsnorm·gate·up, swiglu,
 *            down(+residual)] × L → final rmsnorm·LM head (last rows) → argmax
 * q/k/v are fused into one [q|k|v] weight and gate/up into one [gate|up] weight at load, and each
 * RMSNorm runs in the prologue of the matmul that follows it, so a layer is 7 dispatches (a
 * prefill pass on a CPU adapter adds one per nf4 weight: its f32 copy, linear.ts PREFILL_DEQUANT). Nothing
 * here depends on the weight format: linearOp(s)/embedOps pick kernels. Three op lists share the
 * buffers: decode (1 row), verify (≤ verifyRows rows, speculative decoding) and prefill.
 */

export type { LoadProgress, LoadStats } from '../loader/weights.ts';

export interface ModelLoadOptions extends WeightLoadOptions {
  /** KV cache length in positions (default min(max_position_embeddings, 4096)). */
  contextLength?: number;
  /** Most tokens per batched pass (prompt chunk size; default min(256, contextLength)). */
  maxBatch?: number;
  /** Rows of logits one pass can produce (eval, speculative verify); default from a 64 MiB budget. */
  maxLogitRows?: number;
  /** Rows of the speculative verify pass (draft tokens + 1, ≤ 8): builds the multi-row decode variant. */
  verifyRows?: number;
  /**
   * Return before the graph's pipelines are compiled (they compile concurrently meanwhile): the
   * caller awaits `rt.ready()` before the first pass (the engine loads a draft's weights first).
   */
  deferCompile?: boolean;
  /** Matmul lane reduction (default 'auto': chosen for the adapter; tests force each variant). */
  matmul?: MatmulReduce | 'auto';
  /** KV cache storage: 'f16' halves its bytes (pack2x16float, no shader-f16 needed). */
  kvCache?: 'f32' | 'f16';
}

type LayerWeights = LlamaWeights['layers'][number] & {
  k: GPUBuffer; // KV cache of this layer
  v: GPUBuffer;
};

/** LlamaModel.load's dimensions for these options (the memory preflight sizes the same). */
export function modelDims(cfg: LlamaConfig, o: { contextLength?: number; maxBatch?: number; maxLogitRows?: number }) {
  const ctx = Math.max(1, Math.min(o.contextLength ?? Math.min(cfg.maxPositionEmbeddings, 4096), cfg.maxPositionEmbeddings));
  const maxBatch = Math.max(1, Math.min(o.maxBatch ?? 256, ctx));
  const maxLogitRows = Math.max(1, Math.min(o.maxLogitRows ?? Math.max(MAX_VERIFY_ROWS + 1, Math.floor((64 << 20) / (cfg.vocabSize * 4))), maxBatch));
  return { ctx, maxBatch, maxLogitRows };
}

/**
 * Bytes of the model's prefill dequant scratch (prefillDequantBytes over its layer weights, within
 * the device's binding limit): LlamaModel.load allocates it and the memory preflight counts it.
 */
export function dequantScratchBytes(enabled: boolean, spec: LlamaWeightSpecs, limits?: BindingLimits): number {
  const bind = limits ? Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize) : Infinity;
  return prefillDequantBytes(enabled, spec.layers.flatMap((L) => [L.qkv, L.o, L.gateUp, L.down]), bind);
}

export class LlamaModel {
  readonly cfg: LlamaConfig;
  readonly rt: Runtime;
  /** KV cache length in positions. */
  readonly contextLength: number;
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
  /** Passes of up to this many rows (> 1) run the multi-row decode variant (speculative verify). */
  readonly verifyRows: number;
  private opsLayers: Partial<Record<LinearMode, Op[]>> = {};
  private opsEmbed: Op[] = [];
  private opsHead: Partial<Record<LinearMode, Op[]>> = {};
  private opArgmax: Op;
  private buffers: GPUBuffer[] = [];

  private constructor(
    rt: Runtime,
    cfg: LlamaConfig,
    w: Omit<LlamaWeights, 'layers'> & { layers: LayerWeights[] },
    dims: { ctx: number; maxBatch: number; maxLogitRows: number; verifyRows: number; variant: MatmulVariant; kv16: boolean; dequantBytes: number },
    owned: GPUBuffer[],
    stats: { weightBytes: number; matrixBytes: number; weightCount: number; formats: Record<string, number>; host: HostMemoryMeter },
  ) {
    this.rt = rt;
    this.cfg = cfg;
    this.contextLength = dims.ctx;
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
    const qkv = mk(B * (nH + 2 * nKV) * D, 'qkv');
    const q = mk(B * nH * D, 'q');
    const attn = mk(B * nH * D, 'attn');
    const gu = mk(B * 2 * I, 'gate_up');
    const act = mk(B * I, 'act');
    this.logits = mk(dims.maxLogitRows * V, 'logits');
    const cs = rt.upload(ropeTable(ropeInvFreq(cfg), dims.ctx), 'rope_cos_sin');
    this.buffers.push(cs);
    // CPU adapters: prefill decodes nf4 layer weights into this f32 copy, one at a time (linear.ts PREFILL_DEQUANT)
    const dequant = dims.dequantBytes > 0 ? { scratch: mk(dims.dequantBytes / 4, 'prefill_dequant'), bytes: dims.dequantBytes } : undefined;

    this.opsEmbed = embedOps(rt, w.embed, this.tokens, h);
    const shape = { nHeads: nH, nKvHeads: nKV, headDim: D, ctx: dims.ctx, kv16: dims.kv16 };
    const eps = cfg.rmsNormEps;
    const v = dims.variant;
    const modes: LinearMode[] = dims.verifyRows > 1 ? ['decode', 'verify', 'prefill'] : ['decode', 'prefill'];
    for (const mode of modes) {
      const lin = (wt: ModelWeight, a: Parameters<typeof linearOps>[3], label: string) => linearOps(rt, wt, mode, { ...a, rows: dims.verifyRows, dequant }, label, v);
      const ops: Op[] = [];
      w.layers.forEach((L, i) => {
        const p = `layer${i}`;
        ops.push(
          ...lin(L.qkv, { x: h, y: qkv, bias: L.qkvBias ?? undefined, norm: { weight: L.inputNorm, eps } }, `${p}.qkv`),
          ropeKvOp(rt, { ...shape, qkv, q, k: L.k, v: L.v, cosSin: cs }, `${p}.rope_kv`),
          (mode === 'prefill' ? attentionPrefillOp : attentionOp)(rt, { ...shape, q, out: attn, k: L.k, v: L.v }, `${p}.attention`),
          ...lin(L.o, { x: attn, y: h, bias: L.oBias ?? undefined, accumulate: true }, `${p}.o`),
          ...lin(L.gateUp, { x: h, y: gu, norm: { weight: L.postNorm, eps } }, `${p}.gate_up`),
          swigluOp(rt, { gateUp: gu, out: act, I }, `${p}.swiglu`),
          ...lin(L.down, { x: act, y: h, accumulate: true }, `${p}.down`),
        );
      });
      this.opsLayers[mode] = ops;
      this.opsHead[mode] = linearOps(rt, w.head, mode, { x: h, y: this.logits, head: true, norm: { weight: w.finalNorm, eps }, rows: dims.verifyRows }, 'lm_head', v);
    }
    this.verifyRows = dims.verifyRows;
    this.opArgmax = argmaxRowsOp(rt, { logits: this.logits, out: this.tokens, V, rows: () => 1 }, 'argmax');
  }

  /** The pass shape whose ops run `rows` activation rows. */
  private mode(rows: number): LinearMode {
    if (rows <= 1) return 'decode';
    return rows <= this.verifyRows ? 'verify' : 'prefill';
  }

  /**
   * Records one forward pass of `s.T` tokens at positions pos0.. (token ids already in `tokens`,
   * or in slot 0 from the previous argmax), producing logits for the last `s.headRows` rows, and
   * with `argmax` the greedy next token in tokens[0]. Returns the ops for Runtime.record.
   */
  ops(s: StepShape, o: { head: boolean; argmax: boolean }): Op[] {
    const out = [...this.opsEmbed, ...this.opsLayers[this.mode(s.T)]!];
    if (o.head) out.push(...this.opsHead[this.mode(s.headRows)]!);
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
   * Loads the weights its architecture declares (architecture.ts, spec.ts: split into row parts to
   * fit the device's binding) through the generic loader (weight cache, else streamed from the
   * checkpoint and quantized: loader/weights.ts), allocates the KV cache and builds the graph. On
   * failure every GPU buffer made so far is destroyed.
   */
  static async load(
    rt: Runtime,
    cfg: LlamaConfig,
    source: ModelSource,
    tensors: Map<string, TensorInfo>,
    plan: QuantPlan,
    opts: ModelLoadOptions = {},
  ): Promise<LlamaModel> {
    const { ctx, maxBatch, maxLogitRows } = modelDims(cfg, opts);
    const verifyRows = Math.max(0, Math.min(opts.verifyRows ?? 0, MAX_VERIFY_ROWS, maxBatch));
    const variant = chooseMatmulVariant(rt.ctx, opts.matmul ?? 'auto');
    const spec = architectureOf(cfg).describeWeights(cfg, tensors, plan, rt.ctx.limits);
    const w = await loadWeights(rt, spec.all, source, opts);
    const owned = w.owned;
    try {
      const kv16 = opts.kvCache === 'f16';
      const kvBytes = kvCacheBytes({ nHeads: cfg.numHeads, nKvHeads: cfg.numKvHeads, ctx, headDim: cfg.headDim, kv16 });
      const weights = assembleWeights(spec, w);
      const dequantBytes = dequantScratchBytes(variant.prefillDequant, spec, rt.ctx.limits);
      const layers: LayerWeights[] = weights.layers.map((L, i) => {
        const k = rt.buffer(kvBytes, `layer${i}.k_cache`);
        owned.push(k);
        const v = rt.buffer(kvBytes, `layer${i}.v_cache`);
        owned.push(v);
        return { ...L, k, v };
      });
      const model = new LlamaModel(rt, cfg, { ...weights, layers }, { ctx, maxBatch, maxLogitRows, verifyRows, variant, kv16, dequantBytes }, owned, {
        weightBytes: w.weightBytes,
        matrixBytes: w.matrixBytes,
        weightCount: w.weightCount,
        formats: w.formats,
        host: w.budget.meter,
      });
      model.loadStats = w.stats;
      // the pipelines, compiled concurrently (createComputePipelineAsync)
      if (!opts.deferCompile) await rt.ready();
      return model;
    } catch (e) {
      for (const b of owned) b.destroy();
      throw e;
    }
  }
}
