import type { Op, Runtime } from './runtime.ts';
import { NibbleError } from '../errors.ts';
import ropeKvSrc from '../../shaders/rope_kv.wgsl?raw';
import attentionSrc from '../../shaders/attention.wgsl?raw';
import swigluSrc from '../../shaders/swiglu.wgsl?raw';

/** Wrappers for the format-independent kernels; each builds an Op (pipeline + bind group) once. */

export interface AttnShape {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** KV cache length (positions). */
  ctx: number;
  /** The KV cache holds f16 pairs (pack2x16float): half the bytes of f32. */
  kv16?: boolean;
}

/** Bytes of one layer's K (or V) cache. */
export function kvCacheBytes(a: AttnShape): number {
  return a.nKvHeads * a.ctx * a.headDim * (a.kv16 ? 2 : 4);
}

export function ropeKvOp(
  rt: Runtime,
  a: AttnShape & { qkv: GPUBuffer; q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; cosSin: GPUBuffer },
  label = 'rope_kv',
): Op {
  const p = rt.pipelineAsync('rope_kv', ropeKvSrc, 'main', { NH: a.nHeads, NKV: a.nKvHeads, D: a.headDim, CTX: a.ctx, KV16: !!a.kv16 });
  const threads = (a.nHeads + a.nKvHeads) * (a.headDim / 4) + a.nKvHeads * (a.headDim / 2);
  return rt.op(label, p, [a.qkv, a.q, a.k, a.v, a.cosSin], (s) => [Math.ceil(threads / 64), s.T, 1] as const);
}

/** Knobs of the attention kernels (defaults come from the adapter; tests force each path). */
export interface AttnTuning {
  /** Split head_dim over the lanes of one subgroup instead of the keys (needs subgroups; default on CPU adapters; ignores wg). */
  splitD?: boolean;
  /** Split-K: lanes per workgroup (default: 4 on a CPU adapter, else ≤ 64). */
  wg?: number;
  /** Split-K: merge the lanes with subgroup operations (default: when available and wg ≤ the subgroup size). */
  subgroups?: boolean;
  /** Query heads of one KV head per workgroup (default: as many of the G as the register budget allows). */
  heads?: number;
  /** Queries per workgroup (default 1 for attentionOp, a tile for attentionPrefillOp). */
  tq?: number;
}

interface AttnPlan {
  D4: number;
  /** vec4s of head_dim per lane (D4 / DS) */
  DL: number;
  /** vec4s per lane per step of the workgroup-memory merge */
  MC: number;
  /** heads per workgroup, head chunks per KV head, queries per workgroup, lanes */
  R: number;
  HC: number;
  TQ: number;
  WG: number;
  mode: 'splitD' | 'mergeSG' | 'mergeWG';
}

/**
 * Shape of the attention kernel for a model. Each lane holds ROWS = TQ · R rows of state (its
 * q slice and accumulator: 2 · DL vec4 per row), unrolled in registers; ROWS · DL is bounded:
 * on a CPU adapter SwiftShader's compile time grows quickly with it (≈ 0.4 s at 12, 2 s at 48–64,
 * 17 s at 192 vec4), on a GPU the register file does.
 */
function attnPlan(rt: Runtime, a: AttnShape, prefill: boolean, tune: AttnTuning = {}): AttnPlan {
  const { nHeads: NH, nKvHeads: NKV, headDim: D } = a;
  if (!(Number.isInteger(NH) && Number.isInteger(NKV) && NKV > 0 && NH % NKV === 0)) {
    throw new NibbleError('unsupported-architecture', `attention: num_attention_heads (${NH}) must be a multiple of num_key_value_heads (${NKV})`);
  }
  if (!(Number.isInteger(D) && D >= 4 && D <= 256 && D % 4 === 0)) {
    throw new NibbleError('unsupported-architecture', `attention: head_dim ${D} is not supported (attention.wgsl needs a multiple of 4, at most 256)`);
  }
  const G = NH / NKV;
  const D4 = D / 4;
  const cpu = rt.ctx.adapterInfo.cpuBacked;
  const sg = rt.ctx.features.subgroups;
  const DS = D4 % 4 === 0 ? 4 : D4 % 2 === 0 ? 2 : 1;
  const splitD = tune.splitD ?? (cpu && sg && DS > 1);
  if ((splitD || tune.subgroups) && !sg) throw new NibbleError('bad-argument', 'attention: subgroups requested on a device without them');
  if (splitD && DS === 1) throw new NibbleError('bad-argument', `attention: split-D needs head_dim a multiple of 8 (${D})`);
  const WG = splitD ? DS : (tune.wg ?? (cpu ? 4 : 64));
  const DL = splitD ? D4 / DS : D4;
  // unrolled vec4 state per lane (ROWS · DL): decode rows are the group's heads, prefill rows
  // add a tile of queries
  const budget = cpu ? 32 : 16;
  const HC = Math.ceil(G / Math.max(1, Math.min(G, tune.heads ?? Math.floor(budget / DL))));
  const R = Math.ceil(G / HC);
  const TQ = Math.max(1, tune.tq ?? (prefill ? Math.min(8, Math.floor((cpu ? 64 : 16) / (R * DL))) : 1));
  let mode: AttnPlan['mode'] = 'splitD';
  let MC = DL;
  if (!splitD) {
    const sgMin = rt.ctx.adapterInfo.subgroupMinSize ?? 4; // WebGPU subgroups have ≥ 4 lanes
    mode = (tune.subgroups ?? (sg && WG <= sgMin)) ? 'mergeSG' : 'mergeWG';
    if (mode === 'mergeWG') {
      // workgroup memory of the merge: 2 · WG · ROWS f32 + WG · MC vec4
      const free = rt.ctx.limits.maxComputeWorkgroupStorageSize - 2 * WG * TQ * R * 4;
      MC = Math.min(DL, Math.floor(free / (WG * 16)));
      if (MC < 1) throw new NibbleError('gpu-limit', `attention: ${WG} lanes do not fit the workgroup memory (${rt.ctx.limits.maxComputeWorkgroupStorageSize} bytes)`);
    }
  }
  return { D4, DL, MC, R, HC, TQ, WG, mode };
}

const attnSources = new Map<string, string>();

/**
 * Expands the attention.wgsl template for a plan: `//#if FLAG` / `//#else` / `//#endif` blocks,
 * `//#for r|t|d|c` … `//#end` repetitions, and {r} {t} {h} {d} {e} {c0} {CL} and the plan's
 * numbers in code (not in comments).
 */
export function attentionSource(p: Pick<AttnPlan, 'D4' | 'DL' | 'MC' | 'R' | 'TQ' | 'mode'>, kv16 = false): string {
  const key = JSON.stringify([p.D4, p.DL, p.MC, p.R, p.TQ, p.mode, kv16]);
  const hit = attnSources.get(key);
  if (hit) return hit;
  const consts: Record<string, number> = { D4: p.D4, DL: p.DL, MC: p.MC, R: p.R, TQ: p.TQ, ROWS: p.R * p.TQ };
  const flags: Record<string, boolean> = {
    SUBGROUPS: p.mode !== 'mergeWG',
    SPLITD: p.mode === 'splitD',
    MERGE_SG: p.mode === 'mergeSG',
    MERGE_WG: p.mode === 'mergeWG',
    KV16: kv16,
  };
  const fail = (m: string): never => {
    throw new NibbleError('gpu-error', `attention.wgsl template: ${m}`);
  };
  // conditionals
  const kept: string[] = [];
  const conds: boolean[] = [];
  for (const line of attentionSrc.split('\n')) {
    const m = /^\s*\/\/#(if|else|endif)\b\s*(!?)(\w*)/.exec(line);
    if (!m) {
      if (conds.every(Boolean)) kept.push(line);
      continue;
    }
    if (m[1] === 'if') {
      if (!(m[3] in flags)) fail(`unknown flag ${m[3]}`);
      conds.push(flags[m[3]] !== (m[2] === '!'));
    } else if (!conds.length) fail(`#${m[1]} without #if`);
    else if (m[1] === 'else') conds.push(!conds.pop()!);
    else conds.pop();
  }
  if (conds.length) fail('#if without #endif');
  // repetitions
  const rows: Array<{ t: number; h: number }> = [];
  for (let t = 0; t < p.TQ; t++) for (let h = 0; h < p.R; h++) rows.push({ t, h });
  const sub = (line: string, env: Record<string, number>) => {
    const c = line.indexOf('//');
    const code = c < 0 ? line : line.slice(0, c);
    const out = code.replace(/\{(r|t|h|d|e|c0|CL|D4|DL|MC|R|TQ|ROWS)\}/g, (_, k: string) => String(env[k] ?? consts[k] ?? fail(`{${k}} outside its #for`)));
    return c < 0 ? out : out + line.slice(c);
  };
  const expand = (lines: string[], env: Record<string, number>): string[] => {
    const out: string[] = [];
    for (let i = 0; i < lines.length; i++) {
      const m = /^\s*\/\/#(for|end)\b\s*(\w*)/.exec(lines[i]);
      if (!m) {
        out.push(sub(lines[i], env));
        continue;
      }
      if (m[1] === 'end') fail('#end without #for');
      let depth = 1;
      let j = i + 1;
      for (; j < lines.length; j++) {
        const n = /^\s*\/\/#(for|end)\b/.exec(lines[j]);
        if (n) depth += n[1] === 'for' ? 1 : -1;
        if (depth === 0) break;
      }
      if (j === lines.length) fail('#for without #end');
      const body = lines.slice(i + 1, j);
      if (m[2] === 'r') rows.forEach((r, k) => out.push(...expand(body, { ...env, r: k, t: r.t, h: r.h })));
      else if (m[2] === 't') for (let t = 0; t < p.TQ; t++) out.push(...expand(body, { ...env, t }));
      else if (m[2] === 'd') {
        // the whole slice, or the current merge chunk
        const d0 = env.c0 ?? 0;
        const n = env.CL ?? p.DL;
        for (let d = d0; d < d0 + n; d++) out.push(...expand(body, { ...env, d, e: d - d0 }));
      } else if (m[2] === 'c') {
        for (let c0 = 0; c0 < p.DL; c0 += p.MC) out.push(...expand(body, { ...env, c0, CL: Math.min(p.MC, p.DL - c0) }));
      } else fail(`#for ${m[2]}`);
      i = j;
    }
    return out;
  };
  const code = expand(kept, {}).join('\n');
  attnSources.set(key, code);
  return code;
}

function attnOp(rt: Runtime, a: AttnShape & { q: GPUBuffer; out: GPUBuffer; k: GPUBuffer; v: GPUBuffer }, label: string, p: AttnPlan): Op {
  const constants = { NH: a.nHeads, NKV: a.nKvHeads, D: a.headDim, CTX: a.ctx, WG: p.WG, HC: p.HC };
  const pipe = rt.pipelineAsync('attention', attentionSource(p, !!a.kv16), 'main', constants);
  const x = a.nKvHeads * p.HC;
  return rt.op(label, pipe, [a.q, a.out, a.k, a.v], (s) => [x, Math.ceil(s.T / p.TQ), 1] as const);
}

/**
 * Causal GQA attention of the pass's T queries (positions pos0..) over the cache: the decode
 * kernel, one query (and R heads of a KV head) per workgroup, the keys split over the lanes
 * (split-D on CPU adapters). Correct for any T; prompt passes are faster with attentionPrefillOp.
 * Throws NibbleError('unsupported-architecture') for head_dim not a multiple of 4 or above 256.
 */
export function attentionOp(
  rt: Runtime,
  a: AttnShape & { q: GPUBuffer; out: GPUBuffer; k: GPUBuffer; v: GPUBuffer },
  label = 'attention',
  tune?: AttnTuning,
): Op {
  return attnOp(rt, a, label, attnPlan(rt, a, false, tune));
}

/**
 * Same bindings and result as attentionOp, with queries tiled (TQ per workgroup) so every k/v row
 * a lane loads serves TQ · R rows: for prompt passes (T > 1). Correct for any T.
 */
export function attentionPrefillOp(
  rt: Runtime,
  a: AttnShape & { q: GPUBuffer; out: GPUBuffer; k: GPUBuffer; v: GPUBuffer },
  label = 'attention_prefill',
  tune?: AttnTuning,
): Op {
  return attnOp(rt, a, label, attnPlan(rt, a, true, tune));
}

export function swigluOp(rt: Runtime, a: { gateUp: GPUBuffer; out: GPUBuffer; I: number }, label = 'swiglu'): Op {
  const p = rt.pipelineAsync('swiglu', swigluSrc, 'main', { I: a.I });
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
