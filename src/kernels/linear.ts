import { getFormat, type GpuWeight, type WeightFormat } from '../quant/format.ts';
import { NibbleError } from '../errors.ts';
import type { GpuContext } from '../gpu/context.ts';
import { split2d, type Op, type Runtime } from './runtime.ts';
import matmulSrc from '../../shaders/matmul.wgsl?raw';
import laneSumSrc from '../../shaders/lane_sum.wgsl?raw';
import embedSrc from '../../shaders/embed.wgsl?raw';

/**
 * y = x · Wᵀ for every weight format, through one skeleton (shaders/matmul.wgsl) with the format's
 * decoder prepended. Three pass shapes, one kernel:
 *   decode:  1 activation row (a decode step)                    MR = 1
 *   verify:  a few rows (speculative verify), each weight read once   MR = rows
 *   prefill: the prompt, in tiles of 8 rows per lane group       MR = 8
 * and one of three lane reductions, chosen per adapter at load (`chooseMatmulVariant`).
 */
export type LinearMode = 'decode' | 'verify' | 'prefill';

/** How lanes share a weight row: 'subgroup' (subgroupShuffleXor), 'workgroup' (workgroup memory), 'row' (one lane per row group). */
export type MatmulReduce = 'subgroup' | 'workgroup' | 'row';

export interface MatmulVariant {
  reduce: MatmulReduce;
  /** Most lanes per row group (a power of two); 1 for 'row'. */
  maxLanes: number;
  /** Prefill also splits rows over lanes (GPUs) or gives each invocation whole rows (CPU adapters). */
  prefillLanes: boolean;
}

/** Output rows each lane group computes (R in matmul.wgsl). */
export const ROWS_PER_GROUP = 4;
/** Activation rows per lane group in prefill passes (MR of the prefill variant). */
export const PREFILL_ROWS = 8;
/** Most activation rows of a verify pass (the multi-row decode variant). */
export const MAX_VERIFY_ROWS = 8;
const WG = 64;

/**
 * The matmul variant for an adapter: GPUs (and SwiftShader, whose 4-wide subgroups are its SIMD
 * lanes) split each weight row over the lanes of a subgroup (coalesced 16-byte loads,
 * subgroupShuffleXor); without subgroups over workgroup memory (GPUs) or not at all (CPU adapters,
 * where a barrier costs more than a small kernel). Prefill on CPU adapters gives each invocation
 * whole rows (measured faster there). `requested` forces one (the tests run every variant).
 */
export function chooseMatmulVariant(ctx: GpuContext, requested: MatmulReduce | 'auto' = 'auto'): MatmulVariant {
  const sgMin = ctx.adapterInfo.subgroupMinSize ?? 0;
  const sgLanes = ctx.features.subgroups && sgMin >= 2 ? Math.min(32, 2 ** Math.floor(Math.log2(sgMin))) : 0;
  const cpu = ctx.adapterInfo.cpuBacked;
  let reduce: MatmulReduce;
  if (requested !== 'auto') reduce = requested;
  else if (sgLanes) reduce = 'subgroup';
  else reduce = cpu ? 'row' : 'workgroup';
  if (reduce === 'subgroup' && !sgLanes) {
    throw new NibbleError('bad-argument', `matmul variant 'subgroup' needs the subgroups feature (this adapter: ${ctx.adapterInfo.summary})`);
  }
  const maxLanes = reduce === 'row' ? 1 : reduce === 'subgroup' ? sgLanes : 32;
  return { reduce, maxLanes, prefillLanes: !cpu };
}

/** Lanes per row group for a K-long row: ≤ maxLanes and ≤ the row's chunks (every lane gets work). */
export function matmulLanes(v: MatmulVariant, K: number, cpw: number, mode: LinearMode): number {
  if (v.reduce === 'row' || (mode === 'prefill' && !v.prefillLanes)) return 1;
  const chunks = Math.ceil(K / cpw);
  let l = 1;
  while (l * 2 <= v.maxLanes && l * 2 <= chunks) l *= 2;
  return l;
}

function laneSumSection(name: 'none' | 'subgroup' | 'workgroup'): string {
  const m = laneSumSrc.split(/^\/\/#/m).find((s) => s.startsWith(name + '\n'));
  if (!m) throw new NibbleError('gpu-error', `lane_sum.wgsl has no section ${name}`);
  return m.slice(name.length + 1);
}

/**
 * The chunk helpers matmul.wgsl expects for a decoder with `cv` vec4s per chunk: a struct of cv
 * named vec4s (activations, or decoded weights) and straight-line functions over it (no arrays, so the whole hot loop
 * stays in registers on every compiler).
 */
export function chunkHelpers(cv: number): string {
  const j = [...Array(cv).keys()];
  const list = (f: (i: number) => string, sep = ', ') => j.map(f).join(sep);
  return [
    `struct XC { ${list((i) => `v${i}: vec4<f32>`)} }`,
    `fn x_load(b: u32) -> XC { return XC(${list((i) => `x4[b + ${i}u]`)}); }`,
    `fn x_mask(x: XC, k0: u32) -> XC { let k = vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u); return XC(${list((i) => `select(vec4<f32>(0.0), x.v${i}, k + vec4<u32>(${4 * i}u) < vec4<u32>(K))`)}); }`,
    `fn x_sumsq(x: XC) -> f32 { return ${list((i) => `dot(x.v${i}, x.v${i})`, ' + ')}; }`,
    `fn g_load(b: u32) -> XC { return XC(${list((i) => `g4[b + ${i}u]`)}); }`,
    `fn xc_mul(a: XC, b: XC) -> XC { return XC(${list((i) => `a.v${i} * b.v${i}`)}); }`,
    `fn w_decode(w: WC) -> XC { return XC(${list((i) => `w_quad(w, ${i}u)`)}); }`,
    `fn xc_dot(a: XC, b: XC) -> f32 { return ${list((i) => `dot(a.v${i}, b.v${i})`, ' + ')}; }`,
  ].join('\n');
}

/** Emits each code line containing `$m` once per activation row m < mr ($mu: the row as a u32 literal). */
export function expandRows(src: string, mr: number): string {
  const out: string[] = [];
  for (const line of src.split('\n')) {
    if (!line.includes('$m') || line.trimStart().startsWith('//')) {
      out.push(line);
      continue;
    }
    for (let m = 0; m < mr; m++) out.push(line.replaceAll('$mu', `${m}u`).replaceAll('$m', String(m)));
  }
  return out.join('\n');
}

const CPW_RE = /const CPW = (\d+)u;/;
/** Weights per 16-byte chunk of a format's decoder. */
export function chunkWeights(f: WeightFormat): number {
  const m = CPW_RE.exec(f.decoder.code);
  if (!m) throw new NibbleError('gpu-error', `decoder ${f.decoder.name} declares no CPW`);
  return Number(m[1]);
}

function formatOf(w: GpuWeight): WeightFormat {
  const f = getFormat(w.format);
  if (!f) throw new NibbleError('bad-argument', `unknown weight format "${w.format}"`);
  return f;
}

export interface LinearArgs {
  x: GPUBuffer;
  y: GPUBuffer;
  bias?: GPUBuffer;
  /** y += x·Wᵀ (the residual add, fused). */
  accumulate?: boolean;
  /** Rows come from step.headRows instead of step.T, reading the last headRows rows of x (the LM head). */
  head?: boolean;
  /** RMSNorm of x fused into the prologue: its weight and epsilon. */
  norm?: { weight: GPUBuffer; eps: number };
  /** verify: the most activation rows a pass has (≤ MAX_VERIFY_ROWS). */
  rows?: number;
}

/** The matmul op of a weight for one pass shape (pipeline and bind group made here, once). */
export function linearOp(rt: Runtime, w: GpuWeight, mode: LinearMode, a: LinearArgs, label: string, v: MatmulVariant): Op {
  if (w.cols % 4 !== 0) {
    throw new NibbleError('unsupported-architecture', `${label}: matmul rows of ${w.cols} inputs are not a multiple of 4`);
  }
  const f = formatOf(w);
  const cpw = chunkWeights(f);
  const lanes = matmulLanes(v, w.cols, cpw, mode);
  const mr = mode === 'decode' ? 1 : mode === 'prefill' ? PREFILL_ROWS : Math.max(1, Math.min(MAX_VERIFY_ROWS, a.rows ?? MAX_VERIFY_ROWS));
  const reduce = lanes === 1 ? 'none' : v.reduce === 'subgroup' ? 'subgroup' : 'workgroup';
  const code = [
    reduce === 'subgroup' ? 'enable subgroups;' : '',
    `const MR = ${mr}u;`,
    laneSumSection(reduce),
    f.decoder.code,
    chunkHelpers(cpw / 4),
    expandRows(matmulSrc, mr),
  ].join('\n');
  const pipeline = rt.pipeline(`matmul_${f.decoder.name}_${reduce}_mr${mr}`, code, 'main', {
    K: w.cols,
    N: w.rows,
    LANES: lanes,
    HAS_BIAS: !!a.bias,
    ACCUM: !!a.accumulate,
    HEAD: !!a.head,
    NORM: !!a.norm,
    EPS: a.norm?.eps ?? 1e-5,
    ...w.constants,
  });
  const buffers = [a.x, a.y, a.bias ?? rt.dummyBuffer, a.norm?.weight ?? rt.dummyBuffer, ...w.buffers];
  const groups = Math.ceil(w.rows / ((WG / lanes) * ROWS_PER_GROUP));
  const [gx, gz] = split2d(groups);
  const grid: Op['grid'] = (s) => [gx, Math.ceil((a.head ? s.headRows : s.T) / mr), gz] as const;
  return rt.op(`${label}:${w.format}:${mode}`, pipeline, buffers, grid);
}

/** out[t] = table[ids[t]] for any weight format (the table is [vocab, hidden]). */
export function embedOp(rt: Runtime, table: GpuWeight, ids: GPUBuffer, out: GPUBuffer): Op {
  const f = formatOf(table);
  const H = table.cols;
  const chunks = Math.ceil(H / chunkWeights(f));
  const pipeline = rt.pipeline(`embed_${f.decoder.name}`, f.decoder.code + '\n' + embedSrc, 'main', { H, V: table.rows, ...table.constants });
  return rt.op(`embed:${table.format}`, pipeline, [ids, out, ...table.buffers], (s) => [Math.ceil(chunks / WG), s.T, 1] as const);
}
