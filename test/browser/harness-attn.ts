/**
 * Harness functions of the attention tests (test/browser/attention.test.ts), spread into the
 * harness page's API by harness.ts. Inputs are generated here from seeds with the same generator
 * the Node side uses (test/ref/cpu.ts), so multi-megabyte caches never cross the page boundary.
 */
import type { Op, Runtime } from '../../src/kernels/runtime.ts';
import { bestMsPerRep, rt, scoped } from './harness-gen.ts';
import { attentionOp, attentionPrefillOp, type AttnTuning } from '../../src/kernels/ops.ts';
import { randn } from '../ref/cpu.ts';
import { f32ToF16Bits } from '../ref/quant.ts';


export interface AttnCase {
  NH: number;
  NKV: number;
  D: number;
  /** cache length (positions) */
  ctx: number;
  T: number;
  pos0: number;
  /** seed of q ([T, NH, D], std qStd); k and v use seed + 1 and seed + 2 */
  seed: number;
  qStd?: number;
  /** attentionPrefillOp instead of attentionOp */
  prefill?: boolean;
  /** an f16 cache (pack2x16float pairs; the reference then reads f16-rounded k and v) */
  kv16?: boolean;
  tune?: AttnTuning;
}

/**
 * The inputs of a case: q [T, NH, D] and the caches [NKV, ctx, D], positions ≥ pos0 + T filled
 * with NaN (a kernel that reads past the causal range poisons its output).
 */
/** f32 values as f16 bits (round to nearest even), for an f16 KV cache. */
export function toF16(a: Float32Array): Uint16Array<ArrayBuffer> {
  const h = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) h[i] = f32ToF16Bits(a[i]!);
  return h;
}

export function attnInputs(c: AttnCase): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const q = randn(c.T * c.NH * c.D, c.seed, c.qStd ?? 1);
  const P = c.pos0 + c.T;
  const k = new Float32Array(c.NKV * c.ctx * c.D).fill(NaN);
  const v = new Float32Array(c.NKV * c.ctx * c.D).fill(NaN);
  const kr = randn(c.NKV * P * c.D, c.seed + 1);
  const vr = randn(c.NKV * P * c.D, c.seed + 2);
  for (let g = 0; g < c.NKV; g++) {
    k.set(kr.subarray(g * P * c.D, (g + 1) * P * c.D), g * c.ctx * c.D);
    v.set(vr.subarray(g * P * c.D, (g + 1) * P * c.D), g * c.ctx * c.D);
  }
  return { q, k, v };
}

function setup(r: Runtime, c: AttnCase) {
  const { q, k, v } = attnInputs(c);
  const bufs = {
    q: r.upload(q, 'attn_q'),
    k: r.upload(c.kv16 ? toF16(k) : k, 'attn_k'),
    v: r.upload(c.kv16 ? toF16(v) : v, 'attn_v'),
    out: r.buffer(c.T * c.NH * c.D * 4, 'attn_out'),
  };
  return { bufs, destroy: () => Object.values(bufs).forEach((b) => b.destroy()) };
}

function op(r: Runtime, c: AttnCase, b: ReturnType<typeof setup>['bufs']): Op {
  const f = c.prefill ? attentionPrefillOp : attentionOp;
  return f(r, { nHeads: c.NH, nKvHeads: c.NKV, headDim: c.D, ctx: c.ctx, kv16: c.kv16, ...b }, 'attention', c.tune);
}

export const attnApi = {
  /** Runs attention on one case; returns out [T, NH, D]. */
  async attnRun(c: AttnCase) {
    const r = await rt();
    const s = setup(r, c);
    try {
      return await scoped(r, async () => {
        const o = op(r, c, s.bufs);
        await r.ready();
        r.run([o], { T: c.T, pos0: c.pos0, headRows: 1 });
        return Array.from(new Float32Array(await r.read(s.bufs.out, 0, c.T * c.NH * c.D * 4)));
      });
    } finally {
      s.destroy();
    }
  },

  /** Builds the op for a shape that must be refused; returns the error's code and message. */
  async attnError(a: { NH: number; NKV: number; D: number }) {
    const r = await rt();
    const b = r.buffer(16, 'x');
    try {
      attentionOp(r, { nHeads: a.NH, nKvHeads: a.NKV, headDim: a.D, ctx: 8, q: b, out: b, k: b, v: b });
      return null;
    } catch (e) {
      return { code: (e as { code?: string }).code ?? null, message: String((e as Error).message ?? e) };
    } finally {
      b.destroy();
    }
  },

  /**
   * Milliseconds per dispatch of the attention op on `c`: `reps` dispatches recorded in one
   * compute pass, after a warm-up, timed to queue.onSubmittedWorkDone (best of `rounds`).
   */
  async attnBench(a: AttnCase & { reps: number; rounds?: number }) {
    const r = await rt();
    const s = setup(r, a);
    try {
      return await scoped(r, async () => {
        const o = op(r, a, s.bufs);
        const shape = { T: a.T, pos0: a.pos0, headRows: 1 };
        const ms = await bestMsPerRep(r, [o], new Array<Op>(a.reps).fill(o), shape, a.reps, a.rounds);
        return { ms, grid: o.grid(shape) };
      });
    } finally {
      s.destroy();
    }
  },
};
