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

/** Knobs of the attention kernels (defaults come from the adapter; tests force each path). */
export interface AttnTuning {
  /** Lanes per workgroup, i.e. the split of the keys (default: 4 on a CPU adapter, else ≤ 64). */
  wg?: number;
  /** Query heads of one KV head per lane (default: all G of the group while rows · head_dim fit). */
  heads?: number;
  /** Queries per workgroup (default 1 for attentionOp, a tile for attentionPrefillOp). */
  tq?: number;
  /** Merge the lanes with subgroup operations (default: when available and wg ≤ the subgroup size). */
  subgroups?: boolean;
}

interface AttnPlan {
  D4: number;
  /** heads per lane, head chunks per KV head, queries per workgroup, lanes */
  R: number;
  HC: number;
  TQ: number;
  WG: number;
  SG: boolean;
}

/**
 * Shape of the attention kernel for a model. Every lane keeps ROWS = TQ · R rows of state
 * (q and the accumulator: 2 · head_dim floats each), so rows shrink as head_dim grows.
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
  // rows · head_dim per lane: on a CPU adapter the state lives in (spilled) registers either way
  // and sharing each loaded k/v row over more rows wins; on a GPU keep it within registers
  const budget = cpu ? 256 : 128;
  const HC = Math.ceil(G / Math.max(1, Math.min(G, tune.heads ?? Math.floor(budget / D))));
  const R = Math.ceil(G / HC);
  const TQ = Math.max(1, tune.tq ?? (prefill ? Math.floor((cpu ? 768 : 128) / (R * D)) : 1));
  const sgMin = rt.ctx.adapterInfo.subgroupMinSize ?? 4; // WebGPU subgroups are ≥ 4 lanes
  let WG = tune.wg ?? (cpu ? 4 : 64);
  const SG = tune.subgroups ?? (rt.ctx.features.subgroups && WG <= sgMin);
  if (SG && !rt.ctx.features.subgroups) throw new Error('attention: subgroups requested on a device without them');
  if (!SG) {
    // workgroup memory of the merge: WG · D4 vec4 + 2 · WG · ROWS f32
    const bytes = (wg: number) => wg * D4 * 16 + 2 * wg * TQ * R * 4;
    while (WG > 1 && bytes(WG) > rt.ctx.limits.maxComputeWorkgroupStorageSize) WG >>= 1;
  }
  return { D4, R, HC, TQ, WG, SG };
}

const attnSources = new Map<string, string>();

/**
 * Expands the attention.wgsl template for a plan: `//#if FLAG` / `//#else` / `//#endif` blocks,
 * `//#for r|t|d` … `//#end` repetitions and {r} {t} {h} {d} {D4} {R} {TQ} {ROWS} (in code, not in
 * comments). Exported for tests.
 */
export function attentionSource(p: { D4: number; R: number; TQ: number; SG: boolean }): string {
  const key = JSON.stringify([p.D4, p.R, p.TQ, p.SG]);
  const hit = attnSources.get(key);
  if (hit) return hit;
  const consts: Record<string, number> = { D4: p.D4, R: p.R, TQ: p.TQ, ROWS: p.R * p.TQ };
  const flags: Record<string, boolean> = { SUBGROUPS: p.SG };
  const fail = (m: string): never => {
    throw new Error(`attention.wgsl template: ${m}`);
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
    const out = code.replace(/\{(r|t|h|d|D4|R|TQ|ROWS)\}/g, (_, k: string) => String(env[k] ?? consts[k] ?? fail(`{${k}} outside its #for`)));
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
      else if (m[2] === 'd') for (let d = 0; d < p.D4; d++) out.push(...expand(body, { ...env, d }));
      else fail(`#for ${m[2]}`);
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
  const pipe = rt.pipeline('attention', attentionSource(p), 'main', constants);
  const x = a.nKvHeads * p.HC;
  return rt.op(label, pipe, [a.q, a.out, a.k, a.v], (s) => [x, Math.ceil(s.T / p.TQ), 1] as const);
}

/**
 * Causal GQA attention of the pass's T queries (positions pos0..) over the cache: the decode
 * kernel (one query per workgroup, keys split over the lanes). Correct for any T; prompt passes
 * are faster with attentionPrefillOp.
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
