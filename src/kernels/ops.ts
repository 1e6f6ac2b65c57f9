import type { Op, Runtime } from './runtime.ts';
import rmsnormSrc from '../../shaders/rmsnorm.wgsl?raw';
import ropeKvSrc from '../../shaders/rope_kv.wgsl?raw';
import attentionSrc from '../../shaders/attention.wgsl?raw';
import swigluSrc from '../../shaders/swiglu.wgsl?raw';

/** Wrappers for the format-independent kernels; each builds an Op (pipeline + bind group) once. */

export function rmsnormOp(
  rt: Runtime,
  a: { x: GPUBuffer; out: GPUBuffer; weight: GPUBuffer; H: number; eps: number; last?: boolean },
  label = 'rmsnorm',
): Op {
  const p = rt.pipeline('rmsnorm', rmsnormSrc, 'main', { H: a.H, EPS: a.eps, LAST: !!a.last });
  return rt.op(label, p, [a.x, a.out, a.weight], (s) => [a.last ? s.headRows : s.T, 1, 1] as const);
}

export interface AttnShape {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** KV cache length (positions). */
  ctx: number;
}

export function ropeKvOp(
  rt: Runtime,
  a: AttnShape & { qkv: GPUBuffer; q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; cosSin: GPUBuffer },
  label = 'rope_kv',
): Op {
  const p = rt.pipeline('rope_kv', ropeKvSrc, 'main', { NH: a.nHeads, NKV: a.nKvHeads, D: a.headDim, CTX: a.ctx });
  const threads = (a.nHeads + a.nKvHeads) * (a.headDim / 2) + a.nKvHeads * a.headDim;
  return rt.op(label, p, [a.qkv, a.q, a.k, a.v, a.cosSin], (s) => [Math.ceil(threads / 64), s.T, 1] as const);
}

export function attentionOp(
  rt: Runtime,
  a: AttnShape & { q: GPUBuffer; out: GPUBuffer; k: GPUBuffer; v: GPUBuffer },
  label = 'attention',
): Op {
  if (a.headDim > 256) throw new Error(`head_dim ${a.headDim} > 256 is not supported by attention.wgsl`);
  const p = rt.pipeline('attention', attentionSrc, 'main', { NH: a.nHeads, NKV: a.nKvHeads, D: a.headDim, CTX: a.ctx });
  return rt.op(label, p, [a.q, a.out, a.k, a.v], (s) => [a.nHeads, s.T, 1] as const);
}

export function swigluOp(rt: Runtime, a: { gateUp: GPUBuffer; out: GPUBuffer; I: number }, label = 'swiglu'): Op {
  const p = rt.pipeline('swiglu', swigluSrc, 'main', { I: a.I });
  return rt.op(label, p, [a.gateUp, a.out], (s) => [Math.ceil(a.I / 256), s.T, 1] as const);
}

/** cos/sin table for rope_kv.wgsl: [ctx, headDim/2] pairs, angle rounded to f32 like HF's f32 matmul. */
export function ropeTable(invFreq: Float32Array, ctx: number): Float32Array {
  const half = invFreq.length;
  const t = new Float32Array(ctx * half * 2);
  for (let p = 0; p < ctx; p++) {
    for (let i = 0; i < half; i++) {
      const ang = Math.fround(p * invFreq[i]);
      t[(p * half + i) * 2] = Math.cos(ang);
      t[(p * half + i) * 2 + 1] = Math.sin(ang);
    }
  }
  return t;
}
