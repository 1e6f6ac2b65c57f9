import type { LlamaConfig } from './config.ts';
import { ropeInvFreq, tensorNames } from './config.ts';
import type { TensorInfo } from '../loader/safetensors.ts';
import { toF32 } from '../loader/safetensors.ts';
import type { ModelSource } from '../source/types.ts';
import { NibbleError } from '../errors.ts';
import type { Op, Runtime, StepShape } from '../kernels/runtime.ts';
import { embedOp, GEMV_MAX_ROWS, linearOp, type LinearMode } from '../kernels/linear.ts';
import { argmaxOp, attentionOp, ropeKvOp, ropeTable, rmsnormOp, swigluOp } from '../kernels/ops.ts';
import { getFormat, type GpuWeight } from '../quant/format.ts';
import { formatFor, formatForFused, type QuantPlan } from '../quant/plan.ts';

/**
 * The Llama graph, written once for every weight format:
 *   embed → [rmsnorm, qkv, rope+kv-write, attention, o(+residual), rmsnorm, gate·up, swiglu,
 *            down(+residual)] × L → final rmsnorm (last rows) → LM head → argmax
 * q/k/v are fused into one [q|k|v] weight and gate/up into one [gate|up] weight at load, so a
 * layer is 9 dispatches. Nothing here depends on the weight format: linearOp/embedOp pick kernels.
 */

export interface LoadProgress {
  phase: 'weights' | 'done';
  bytesDone: number;
  bytesTotal: number;
  tensorsDone: number;
  tensorsTotal: number;
  /** The tensor being loaded. */
  tensor?: string;
}

export interface ModelLoadOptions {
  /** KV cache length in positions (default min(max_position_embeddings, 4096)). */
  contextLength?: number;
  /** Most tokens per batched pass (prompt chunk size; default min(256, contextLength)). */
  maxBatch?: number;
  /** Rows of logits one pass can produce (eval, speculative verify); default from a 64 MiB budget. */
  maxLogitRows?: number;
  /** Bytes of one streamed read (default 8 MiB; rounded to whole rows). */
  chunkBytes?: number;
  signal?: AbortSignal;
  onProgress?: (p: LoadProgress) => void;
}

interface LayerWeights {
  inputNorm: GPUBuffer;
  postNorm: GPUBuffer;
  qkv: GpuWeight;
  qkvBias: GPUBuffer | null;
  o: GpuWeight;
  oBias: GPUBuffer | null;
  gateUp: GpuWeight;
  down: GpuWeight;
  k: GPUBuffer; // KV cache of this layer
  v: GPUBuffer;
}

/** Counts the bytes the loader holds on the host at once (for the bounded-memory guarantee). */
export class HostMemoryMeter {
  current = 0;
  peak = 0;
  hold(n: number): void {
    this.current += n;
    if (this.current > this.peak) this.peak = this.current;
  }
  release(n: number): void {
    this.current -= n;
  }
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
    this.opArgmax = argmaxOp(rt, { logits: this.logits, out: this.tokens, V });
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

  static async load(
    rt: Runtime,
    cfg: LlamaConfig,
    source: ModelSource,
    tensors: Map<string, TensorInfo>,
    plan: QuantPlan,
    opts: ModelLoadOptions = {},
  ): Promise<LlamaModel> {
    const names = tensorNames(cfg);
    const ctx = Math.max(1, Math.min(opts.contextLength ?? Math.min(cfg.maxPositionEmbeddings, 4096), cfg.maxPositionEmbeddings));
    const maxBatch = Math.max(1, Math.min(opts.maxBatch ?? 256, ctx));
    const maxLogitRows = Math.max(
      1,
      Math.min(opts.maxLogitRows ?? Math.max(GEMV_MAX_ROWS + 1, Math.floor((64 << 20) / (cfg.vocabSize * 4))), maxBatch),
    );
    const chunkBytes = opts.chunkBytes ?? 8 << 20;
    const host = new HostMemoryMeter();
    const owned: GPUBuffer[] = [];
    const formats: Record<string, number> = {};
    let weightBytes = 0;
    let matrixBytes = 0;
    let weightCount = 0;

    const all = [...tensors.values()];
    const needed = new Set<string>([names.embed, names.finalNorm, ...(names.lmHead ? [names.lmHead] : [])]);
    for (const L of names.layers) for (const n of Object.values(L)) if (n) needed.add(n);
    const bytesTotal = all.filter((t) => needed.has(t.name)).reduce((a, t) => a + (t.end - t.start), 0);
    let bytesDone = 0;
    let tensorsDone = 0;
    const progress = (tensor?: string) =>
      opts.onProgress?.({ phase: 'weights', bytesDone, bytesTotal, tensorsDone, tensorsTotal: needed.size, tensor });

    const info = (name: string): TensorInfo => {
      const t = tensors.get(name);
      if (!t) throw new NibbleError('missing-tensor', `tensor "${name}" is missing from the checkpoint`);
      return t;
    };
    const checkAbort = () => {
      if (opts.signal?.aborted) throw new NibbleError('aborted', 'model load aborted');
    };

    /** Streams whole-row chunks of `name` into rows row0.. of a builder. */
    const stream = async (name: string, write: (row0: number, bytes: Uint8Array) => void) => {
      const t = info(name);
      const cols = t.shape[t.shape.length - 1] ?? 1;
      const rows = t.shape.length >= 2 ? t.shape[0] : 1;
      const rowBytes = (t.end - t.start) / rows;
      const rowsPerChunk = Math.max(1, Math.floor(chunkBytes / Math.max(1, rowBytes)));
      for (let r = 0; r < rows; r += rowsPerChunk) {
        checkAbort();
        const n = Math.min(rowsPerChunk, rows - r);
        const len = n * rowBytes;
        host.hold(len);
        try {
          const bytes = await source.range(t.file, t.start + r * rowBytes, t.start + r * rowBytes + len, opts.signal);
          write(r, bytes);
          bytesDone += len;
          progress(name);
        } finally {
          host.release(len);
        }
      }
      void cols;
      tensorsDone++;
    };

    const matrix = async (members: string[], format: string, label: string): Promise<GpuWeight> => {
      const shapes = members.map((m) => info(m).shape);
      const cols = shapes[0][1];
      const rows = shapes.reduce((a, s) => a + s[0], 0);
      const f = getFormat(format)!;
      if (!f.supported(rt)) {
        throw new NibbleError('bad-argument', `weight format "${format}" is not supported on this GPU (${rt.ctx.adapterInfo.summary})`);
      }
      const b = f.create(rt, rows, cols, label);
      let row0 = 0;
      for (let i = 0; i < members.length; i++) {
        const t = info(members[i]);
        const base = row0;
        await stream(members[i], (r, bytes) => b.write(base + r, t.dtype, bytes));
        row0 += shapes[i][0];
      }
      const w = b.finish();
      owned.push(...w.buffers);
      weightBytes += w.bytes;
      matrixBytes += w.bytes;
      weightCount += rows * cols;
      formats[format] = (formats[format] ?? 0) + rows * cols;
      return w;
    };

    const vector = async (name: string): Promise<GPUBuffer> => {
      const t = info(name);
      let data: Float32Array | null = null;
      await stream(name, (_r, bytes) => {
        data = toF32(bytes, t.dtype);
      });
      const buf = rt.upload(data!, name);
      owned.push(buf);
      weightBytes += buf.size;
      return buf;
    };

    const concatVectors = async (members: string[], label: string): Promise<GPUBuffer> => {
      const parts: Float32Array[] = [];
      for (const m of members) {
        const t = info(m);
        await stream(m, (_r, bytes) => parts.push(toF32(bytes, t.dtype)));
      }
      const total = parts.reduce((a, p) => a + p.length, 0);
      const all = new Float32Array(total);
      let o = 0;
      for (const p of parts) {
        all.set(p, o);
        o += p.length;
      }
      const buf = rt.upload(all, label);
      owned.push(buf);
      weightBytes += buf.size;
      return buf;
    };

    progress();
    const embed = await matrix([names.embed], formatFor(plan, names.embed), names.embed);
    const { numKvHeads: nKV, headDim: D } = cfg;
    const kvBytes = nKV * ctx * D * 4;
    const layers: LayerWeights[] = [];
    for (let i = 0; i < cfg.numLayers; i++) {
      const L = names.layers[i];
      const qkvNames = [L.q, L.k, L.v];
      const guNames = [L.gate, L.up];
      const inputNorm = await vector(L.inputNorm);
      const qkv = await matrix(qkvNames, formatForFused(plan, qkvNames), `layer${i}.qkv`);
      const qkvBias = L.qBias && L.kBias && L.vBias ? await concatVectors([L.qBias, L.kBias, L.vBias], `layer${i}.qkv_bias`) : null;
      const o = await matrix([L.o], formatFor(plan, L.o), `layer${i}.o`);
      const oBias = L.oBias ? await vector(L.oBias) : null;
      const postNorm = await vector(L.postNorm);
      const gateUp = await matrix(guNames, formatForFused(plan, guNames), `layer${i}.gate_up`);
      const down = await matrix([L.down], formatFor(plan, L.down), `layer${i}.down`);
      const k = rt.buffer(kvBytes, `layer${i}.k_cache`);
      const v = rt.buffer(kvBytes, `layer${i}.v_cache`);
      owned.push(k, v);
      layers.push({ inputNorm, postNorm, qkv, qkvBias, o, oBias, gateUp, down, k, v });
    }
    const finalNorm = await vector(names.finalNorm);
    const head = names.lmHead ? await matrix([names.lmHead], formatFor(plan, names.lmHead), names.lmHead) : embed;
    opts.onProgress?.({ phase: 'done', bytesDone, bytesTotal, tensorsDone, tensorsTotal: needed.size });
    return new LlamaModel(rt, cfg, { embed, head, finalNorm, layers }, { ctx, maxBatch, maxLogitRows }, owned, {
      weightBytes,
      matrixBytes,
      weightCount,
      formats,
      host,
    });
  }
}
