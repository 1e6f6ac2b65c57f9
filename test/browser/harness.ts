/**
 * Test harness page (served by Vite, driven by puppeteer from test/browser/*.test.ts). It runs
 * nibble's kernels and engine straight from src/ on the page's WebGPU and hands plain arrays back;
 * the Node side computes the CPU references and compares.
 */
import { createGpuContext, type GpuContext } from '../../src/gpu/context.ts';
import { Runtime, type Op } from '../../src/kernels/runtime.ts';
import { chooseMatmulVariant, embedOps, linearOps, type LinearMode, type MatmulChoice, type ModelWeight } from '../../src/kernels/linear.ts';
import { attentionOp, ropeKvOp, ropeTable, swigluOp } from '../../src/kernels/ops.ts';
import { getFormat, type GpuWeight } from '../../src/quant/format.ts';
import { argmaxRowsOp } from '../../src/kernels/sample.ts';
import '../../src/quant/formats.ts';
import { Engine, type LoadOptions } from '../../src/api/engine.ts';
import { genApi } from './harness-gen.ts';
import { loaderApi } from './harness-loader.ts';
import { attnApi, toF16 } from './harness-attn.ts';
import { f16BitsToF32 } from '../ref/quant.ts';
import { engineApi } from './harness-engine.ts';
import { loadApi } from './harness-load.ts';
import { splitApi } from './harness-split.ts';
import { variantApi } from './harness-variant.ts';
import { mmApi } from './harness-mm.ts';

let ctxPromise: Promise<GpuContext> | null = null;
async function rt(): Promise<Runtime> {
  ctxPromise ??= createGpuContext();
  return new Runtime(await ctxPromise);
}

type Arr = number[];
const f32 = (a: Arr) => new Float32Array(a);

async function runOps(r: Runtime, ops: Op[], s: { T: number; pos0?: number; headRows?: number }) {
  await r.ready();
  r.device.pushErrorScope('validation');
  r.run(ops, { T: s.T, pos0: s.pos0 ?? 0, headRows: s.headRows ?? 1 });
  const err = await r.device.popErrorScope();
  if (err) throw new Error(`GPU validation error: ${err.message}`);
}

async function readF32(r: Runtime, b: GPUBuffer, n: number): Promise<Arr> {
  return Array.from(new Float32Array(await r.read(b, 0, n * 4)));
}

interface LinearCase {
  format: string;
  x: Arr;
  W: Arr;
  M: number;
  N: number;
  K: number;
  mode: LinearMode;
  bias?: Arr;
  y0?: Arr;
  /** LM head mode: y holds the last `headRows` of the M rows. */
  headRows?: number;
  /** Fused RMSNorm of x (weight g, epsilon). */
  norm?: { g: Arr; eps: number };
  variant?: MatmulChoice;
  /** Store W as row parts starting at these rows (a SplitWeight). */
  rowStarts?: Arr;
  /** Build the big weights' verify tile for this (small) weight (wideVerifyMin 0). */
  wideVerify?: boolean;
  /** Register the big weights' prefill tile for this (small) weight (prefillUpgradeMin 0). */
  largePrefill?: boolean;
  /** prefill: an f32 dequant scratch of this many bytes (LinearArgs.dequant; the model's is prefillDequantBytes). */
  dequantBytes?: number;
}

/** The ops of one linear case. */
async function linearSetup(a: LinearCase) {
  const r = await rt();
  const w = modelWeight(r, a.format, a.W, a.N, a.K, a.rowStarts);
  const x = r.upload(f32(a.x), 'x');
  const out = a.headRows ?? a.M;
  const y = r.buffer(out * a.N * 4, 'y');
  if (a.y0) r.device.queue.writeBuffer(y, 0, f32(a.y0));
  const v0 = chooseMatmulVariant(r.ctx, a.variant ?? 'auto');
  const v = { ...v0, ...(a.largePrefill ? { prefillUpgradeMin: 0 } : {}), ...(a.wideVerify ? { wideVerifyMin: 0 } : {}) };
  const args = {
    x,
    y,
    bias: a.bias ? r.upload(f32(a.bias), 'bias') : undefined,
    accumulate: !!a.y0,
    head: a.headRows !== undefined,
    norm: a.norm ? { weight: r.upload(f32(a.norm.g), 'g'), eps: a.norm.eps } : undefined,
    rows: a.M,
    dequant: a.dequantBytes ? { scratch: r.buffer(a.dequantBytes, 'dequant'), bytes: a.dequantBytes } : undefined,
  };
  return { r, ops: linearOps(r, w, a.mode, args, 'linear', v), y, out };
}

/** Uploads a weight through its format's builder, in row chunks like the loader does. */
function weight(r: Runtime, format: string, W: Arr, rows: number, cols: number, chunkRows = 7) {
  const b = getFormat(format)!.create(r, rows, cols, 'W');
  const all = f32(W);
  for (let r0 = 0; r0 < rows; r0 += chunkRows) {
    const n = Math.min(chunkRows, rows - r0);
    b.write(r0, 'F32', new Uint8Array(all.buffer, r0 * cols * 4, n * cols * 4));
  }
  return b.finish();
}

/** The weight whole, or (rowStarts given) as a SplitWeight of row parts each built on its own. */
function modelWeight(r: Runtime, format: string, W: Arr, rows: number, cols: number, rowStarts?: Arr): ModelWeight {
  if (!rowStarts) return weight(r, format, W, rows, cols);
  const parts: GpuWeight[] = rowStarts.map((r0, i) => {
    const r1 = rowStarts[i + 1] ?? rows;
    return weight(r, format, W.slice(r0 * cols, r1 * cols), r1 - r0, cols);
  });
  return { format, rows, cols, parts, rowStarts };
}

interface QuantJob {
  format: string;
  cols: number;
  parts: Array<{ dtype: 'F32' | 'F16' | 'BF16'; bytes: Arr; rows: number }>;
  chunkRows: number;
}

async function quantizeJob(r: Runtime, job: QuantJob) {
  const rows = job.parts.reduce((n, p) => n + p.rows, 0);
  r.device.pushErrorScope('validation');
  const b = getFormat(job.format)!.create(r, rows, job.cols, 'W');
  let row0 = 0;
  for (const p of job.parts) {
    const bytes = new Uint8Array(p.bytes);
    const rowBytes = bytes.length / p.rows;
    for (let i = 0; i < p.rows; i += job.chunkRows) {
      const n = Math.min(job.chunkRows, p.rows - i);
      b.write(row0 + i, p.dtype, bytes.subarray(i * rowBytes, (i + n) * rowBytes));
    }
    row0 += p.rows;
  }
  const w = b.finish();
  const buffers: Arr[] = [];
  for (const buf of w.buffers) buffers.push(Array.from(new Uint32Array(await r.read(buf))));
  const err = await r.device.popErrorScope();
  if (err) throw new Error(`GPU validation error: ${err.message}`);
  for (const buf of w.buffers) buf.destroy();
  return { buffers, bytes: w.bytes, format: w.format, constants: w.constants };
}

const api = {
  ...genApi,
  ...loaderApi,
  ...attnApi,
  ...engineApi,
  ...loadApi,
  ...splitApi,
  ...variantApi,
  ...mmApi,
  async info() {
    const c = await (ctxPromise ??= createGpuContext());
    return { adapter: c.adapterInfo, features: c.features, maxBuffer: c.limits.maxBufferSize, maxBinding: c.limits.maxStorageBufferBindingSize };
  },

  async linear(a: LinearCase) {
    const { r, ops, y, out } = await linearSetup(a);
    await runOps(r, ops, { T: a.M, headRows: out });
    return readF32(r, y, out * a.N);
  },

  /**
   * One pass of a linear case (y reset to y0 first) with the shader each op ran, and the upgrades
   * waiting in the runtime; with `upgrade`, then Runtime.upgrade() and a second pass (`after`).
   */
  async linearShaders(a: LinearCase & { upgrade?: boolean }) {
    const { r, ops, y, out } = await linearSetup(a);
    const pending = r.upgradesPending;
    const pass = async () => {
      if (a.y0) r.device.queue.writeBuffer(y, 0, f32(a.y0));
      await runOps(r, ops, { T: a.M, headRows: out });
      return { y: await readF32(r, y, out * a.N), shaders: ops.map((o) => o.pipeline.label) };
    };
    const before = await pass();
    if (!a.upgrade) return { pending, before, after: null };
    await r.upgrade();
    return { pending, before, after: await pass() };
  },

  async embed(a: { format: string; table: Arr; V: number; H: number; ids: Arr; rowStarts?: Arr }) {
    const r = await rt();
    const w = modelWeight(r, a.format, a.table, a.V, a.H, a.rowStarts);
    const ids = r.upload(new Uint32Array(a.ids), 'ids');
    const out = r.buffer(a.ids.length * a.H * 4, 'out');
    // non-zero first, so that a row no part writes shows
    r.device.queue.writeBuffer(out, 0, new Float32Array(a.ids.length * a.H).fill(7));
    await runOps(r, embedOps(r, w, ids, out), { T: a.ids.length });
    return readF32(r, out, a.ids.length * a.H);
  },

  /** rope_kv then attention for T new tokens at pos0 over a cache pre-filled with kPrev/vPrev. */
  async attention(a: {
    qkv: Arr; // [T, (NH + 2 NKV) D]
    kPrev: Arr; // [NKV, pos0, D] rotated
    vPrev: Arr;
    T: number;
    pos0: number;
    NH: number;
    NKV: number;
    D: number;
    ctx: number;
    invFreq: Arr;
    /** an f16 cache: kPrev / vPrev are written as f16, k and v come back widened to f32 */
    kv16?: boolean;
  }) {
    const r = await rt();
    const { NH, NKV, D, ctx, T, pos0 } = a;
    const el = a.kv16 ? 2 : 4;
    const qkv = r.upload(f32(a.qkv), 'qkv');
    const q = r.buffer(T * NH * D * 4, 'q');
    const k = r.buffer(NKV * ctx * D * el, 'k');
    const v = r.buffer(NKV * ctx * D * el, 'v');
    const cacheData = (x: Arr) => (a.kv16 ? toF16(f32(x)) : f32(x));
    for (let g = 0; g < NKV; g++) {
      if (pos0 === 0) break;
      r.device.queue.writeBuffer(k, g * ctx * D * el, cacheData(a.kPrev.slice(g * pos0 * D, (g + 1) * pos0 * D)));
      r.device.queue.writeBuffer(v, g * ctx * D * el, cacheData(a.vPrev.slice(g * pos0 * D, (g + 1) * pos0 * D)));
    }
    const cs = r.upload(ropeTable(f32(a.invFreq), ctx), 'cs');
    const out = r.buffer(T * NH * D * 4, 'out');
    const shape = { nHeads: NH, nKvHeads: NKV, headDim: D, ctx, kv16: a.kv16 };
    const ops = [ropeKvOp(r, { ...shape, qkv, q, k, v, cosSin: cs }), attentionOp(r, { ...shape, q, out, k, v })];
    await runOps(r, ops, { T, pos0 });
    const cache = async (b: GPUBuffer) => {
      if (!a.kv16) return readF32(r, b, NKV * ctx * D);
      const h = new Uint16Array(await r.read(b, 0, NKV * ctx * D * 2));
      return Array.from(h, f16BitsToF32);
    };
    return {
      q: await readF32(r, q, T * NH * D),
      k: await cache(k),
      v: await cache(v),
      out: await readF32(r, out, T * NH * D),
    };
  },

  async swiglu(a: { gu: Arr; T: number; I: number }) {
    const r = await rt();
    const gu = r.upload(f32(a.gu), 'gu');
    const out = r.buffer(a.T * a.I * 4, 'out');
    await runOps(r, [swigluOp(r, { gateUp: gu, out, I: a.I })], { T: a.T });
    return readF32(r, out, a.T * a.I);
  },

  async argmax(a: { logits: Arr; V: number; rows: number }) {
    const r = await rt();
    const logits = r.upload(f32(a.logits), 'logits');
    const out = r.buffer(16, 'out');
    await runOps(r, [argmaxRowsOp(r, { logits, out, V: a.V, rows: () => 1 })], { T: 1, headRows: a.rows });
    return new Uint32Array(await r.read(out, 0, 4))[0];
  },

  /**
   * Builds one weight through its format's GPU builder from raw checkpoint bytes: `parts` are
   * tensors written one after another (a fused weight), each in chunks of `chunkRows` rows like
   * the loader does. Returns the weight's buffers as u32 words (f32 data as bits).
   */
  async quantize(job: QuantJob) {
    return quantizeJob(await rt(), job);
  },

  /** Several quantize jobs on one runtime (pipelines compiled once). */
  async quantizeAll(a: { jobs: QuantJob[] }) {
    const r = await rt();
    const out = [];
    for (const job of a.jobs) out.push(await quantizeJob(r, job));
    return out;
  },

  /**
   * Times the load-time quantization of a rows × cols weight of random `dtype` bytes (generated in
   * the page): builder creation, write() in row chunks of ~chunkBytes, finish(), and the queue
   * draining (onSubmittedWorkDone). Pipelines are compiled by a small warm-up build first. With
   * `reps`, the build runs that many times: `ms` is the fastest, `all` every time.
   */
  async timeQuantize(a: { format: string; rows: number; cols: number; dtype?: 'F32' | 'BF16'; chunkBytes?: number; reps?: number }) {
    const r = await rt();
    const dtype = a.dtype ?? 'BF16';
    const esize = dtype === 'F32' ? 4 : 2;
    const f = getFormat(a.format)!;
    const warm = f.create(r, 4, a.cols, 'warm');
    warm.write(0, dtype, new Uint8Array(4 * a.cols * esize));
    for (const b of warm.finish().buffers) b.destroy();
    await r.device.queue.onSubmittedWorkDone();
    const chunkRows = Math.max(1, Math.floor((a.chunkBytes ?? 16 << 20) / (a.cols * esize)));
    // random values (a sum of 3 uniforms, |w| < 0.15) as bf16 (truncated f32 bits) or f32
    const vals = new Float32Array(Math.min(chunkRows, a.rows) * a.cols);
    let s = 12345;
    const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 0.1;
    for (let i = 0; i < vals.length; i++) vals[i] = rand() + rand() + rand();
    const bits = new Uint32Array(vals.buffer);
    const bytes = dtype === 'F32' ? new Uint8Array(vals.buffer) : new Uint8Array(new Uint16Array(bits.map((u) => u >>> 16)).buffer);
    const all: number[] = [];
    let weightBytes = 0;
    for (let rep = 0; rep < (a.reps ?? 1); rep++) {
      r.device.pushErrorScope('validation');
      const t0 = performance.now();
      const b = f.create(r, a.rows, a.cols, 'timed');
      for (let r0 = 0; r0 < a.rows; r0 += chunkRows) {
        const n = Math.min(chunkRows, a.rows - r0);
        b.write(r0, dtype, bytes.subarray(0, n * a.cols * esize));
      }
      const w = b.finish();
      await r.device.queue.onSubmittedWorkDone();
      all.push(performance.now() - t0);
      const err = await r.device.popErrorScope();
      for (const buf of w.buffers) buf.destroy();
      if (err) throw new Error(`GPU validation error: ${err.message}`);
      weightBytes = w.bytes;
    }
    return { ms: Math.min(...all), all, bytes: weightBytes };
  },

  /** Perplexity of a text under a model (teacher forcing), with the load options (quantization). */
  async perplexity(a: { model: string; text: string; load?: LoadOptions }) {
    const engine = await Engine.load(a.model, a.load);
    try {
      const res = await engine.perplexity(engine.tokenizer.encode(a.text));
      return { ...res, info: engine.info };
    } finally {
      engine.dispose();
    }
  },

  /** Loads a model and runs greedy generation + logits for each prompt (the golden test). */
  async golden(a: { model: string; prompts: string[]; maxNewTokens: number; load?: LoadOptions }) {
    const engine = await Engine.load(a.model, a.load);
    try {
      const out = [];
      for (const prompt of a.prompts) {
        let streamed = '';
        const gen = engine.generate(prompt, { maxNewTokens: a.maxNewTokens, ignoreEos: true });
        for await (const t of gen) streamed += t;
        const res = await gen.result;
        const ids = [...res.promptTokenIds, ...res.tokenIds];
        const first = (await engine.logits(res.promptTokenIds, 1))[0];
        const last = (await engine.logits(ids.slice(0, -1), 1))[0];
        out.push({ ...res, streamed, logitsFirst: Array.from(first), logitsLast: Array.from(last) });
      }
      return { results: out, info: engine.info };
    } finally {
      engine.dispose();
    }
  },

  /** Loads a model and returns logits for every position of `ids` (reference comparisons). */
  async logitsAll(a: { model: string; ids: number[]; load?: LoadOptions; generate?: number }) {
    const engine = await Engine.load(a.model, a.load);
    try {
      const rows = await engine.logits(a.ids, a.ids.length);
      let generated: number[] = [];
      if (a.generate) {
        generated = (await engine.generate('', { promptIds: a.ids, maxNewTokens: a.generate, ignoreEos: true }).result).tokenIds;
      }
      return { logits: rows.map((r) => Array.from(r)), generated, info: engine.info };
    } finally {
      engine.dispose();
    }
  },

  /**
   * Destroys the engine's device mid-life: the next calls must fail with 'device-lost', and a new
   * Engine.load (on a fresh device: the lost one is forgotten) must work again.
   */
  async deviceLost(a: { model: string }) {
    const engine = await Engine.load(a.model);
    const want = (await engine.generate('Hello', { maxNewTokens: 4 }).result).tokenIds;
    engine.model.rt.device.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const codeOf = async (p: Promise<unknown>) => p.then(() => null, (e) => (e as { code?: string }).code ?? String(e));
    let first: { code: string | null; message: string } | null = null;
    try {
      await engine.generate('Hello', { maxNewTokens: 4 }).result;
    } catch (e) {
      first = { code: (e as { code?: string }).code ?? null, message: String((e as Error).message ?? e) };
    }
    const later = await codeOf(engine.generate('Hello again', { maxNewTokens: 4 }).result);
    const again = await Engine.load(a.model);
    try {
      const got = (await again.generate('Hello', { maxNewTokens: 4 }).result).tokenIds;
      return first && { ...first, engineError: engine.error?.code ?? null, later, reloadMatches: JSON.stringify(got) === JSON.stringify(want), newDevice: again.model.rt.device !== engine.model.rt.device };
    } finally {
      await again.dispose();
    }
  },

  /** Runs a load that is expected to fail; returns the error's code and message. */
  async loadError(a: { model: string; load?: LoadOptions }) {
    try {
      const e = await Engine.load(a.model, a.load);
      e.dispose();
      return null;
    } catch (e) {
      return { code: (e as { code?: string }).code ?? null, message: String((e as Error).message ?? e) };
    }
  },
};

export type HarnessApi = typeof api;
(globalThis as unknown as { nibbleTest: HarnessApi }).nibbleTest = api;
document.getElementById('status')!.textContent = 'ready';
