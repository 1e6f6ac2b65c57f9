import { getFormat, type GpuWeight, type SplitWeight, type WeightFormat } from '../quant/format.ts';
import { NibbleError } from '../errors.ts';
import type { GpuContext } from '../gpu/context.ts';
import { split2d, type Op, type Runtime } from './runtime.ts';
import matmulSrc from '../../shaders/matmul.wgsl?raw';
import laneSumSrc from '../../shaders/lane_sum.wgsl?raw';
import embedSrc from '../../shaders/embed.wgsl?raw';
import dequantSrc from '../../shaders/dequant.wgsl?raw';

/**
 * y = x · Wᵀ for every weight format, through one skeleton (shaders/matmul.wgsl) with the format's
 * decoder prepended. Three pass shapes, one kernel:
 *   decode:  1 activation row (a decode step)                    MR = 1
 *   verify:  a few rows (speculative verify), each weight read once   MR = rows
 *   prefill: the prompt, in tiles of 8 rows per lane group       MR = 8
 * and one of three lane reductions, chosen per adapter at load (`chooseMatmulVariant`). On CPU
 * adapters a prefill pass decodes nf4 weights to an f32 copy first (`dequantOp`, PREFILL_DEQUANT)
 * and runs the f32 kernel on it.
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
  /**
   * One lane per row group (LANES = 1) reads the activations with one load per vec4 shared over a
   * subgroup (lane i loads component i, subgroupBroadcast hands it to all), instead of every lane
   * loading the same vec4: needs subgroups of ≥ 4 lanes. Every lane of a subgroup then walks the
   * same chunks, so the broadcast is in subgroup-uniform control flow.
   */
  xBroadcast: boolean;
  /**
   * Weights (rows × cols) from which a prefill matmul gets the large tile (PREFILL_LARGE) once
   * Runtime.upgrade has compiled it in the background; Infinity: never (GPUs).
   */
  prefillUpgradeMin: number;
  /** Weights (rows × cols) from which verify gives each invocation 16 weight rows (rowQuads); Infinity on GPUs. */
  wideVerifyMin: number;
  /**
   * CPU adapters ('row'): a prefill pass decodes each layer weight of a PREFILL_DEQUANT format to
   * f32 once (shaders/dequant.wgsl) and runs the f32 matmul on it (LinearArgs.dequant).
   */
  prefillDequant: boolean;
}

/** A requested variant: a lane reduction, 'row-plain' ('row' without xBroadcast), or 'auto'. */
export type MatmulChoice = MatmulReduce | 'row-plain' | 'auto';

/**
 * Quads of output rows each lane group computes (RQ in matmul.wgsl, R = 4 · RQ). On CPU adapters
 * ('row') 2 in decode and prefill, so each activation load and broadcast serves 8 weight rows; in
 * verify 4 (nf4: 2) for weights of wideVerifyMin (2^18) or more, so each activation quad of the
 * pass's rows serves 16 weight rows, and for smaller ones 2 for int8, else 1 (the wide tile's
 * compile made a tiny model's speculative load several seconds longer, for nothing).
 * Measured on SwiftShader (SmolLM2-135M gate_up and down_proj, same run, against RQ = 1): decode f32
 * 1.06–1.21×, int8 1.03–1.09×, nf4 1.05–1.24×; prefill int8 ≈ 1.4×, f32 ≈ 1.2×, nf4 1.23–1.28× (8
 * rows); RQ = 4 within ±5 % of 2 for int8 and f32 in decode. Verify (5 rows), best of 4–5 rounds
 * (2026-12-07): RQ = 4 against 1: f32 1.38–1.48×, int8 1.7×, f16 1.43×; nf4 1.25–1.3× at RQ = 2,
 * 1.17–1.26× at 4 (an earlier, noisier run had f32 and nf4 at 0.9–1.23× for RQ = 2). Else 1
 * (GPUs: lanes share rows instead).
 */
export function rowQuads(v: MatmulVariant, mode: LinearMode, cpw: number, weights = Infinity): number {
  if (v.reduce !== 'row') return 1;
  if (mode === 'verify') return weights >= v.wideVerifyMin ? (cpw === 32 ? 2 : 4) : cpw === 16 ? 2 : 1;
  return 2;
}
/**
 * Activation rows per lane group in prefill passes (MR of the prefill variant), the tile a load
 * compiles. A prompt is cut into tiles of MR rows (the last one partial: its missing rows repeat
 * the last row and are not stored).
 */
export const PREFILL_ROWS = 8;
/**
 * The prefill tile of CPU adapters ('row') for weights of PREFILL_UPGRADE_MIN or more: 16
 * activation rows × 16 weight rows per invocation (MR 16, RQ 4), compiled after the load, in the
 * background (Runtime.upgrade, started by the engine), and swapped in for the 8 × 8 tile when ready.
 * Measured on SwiftShader (SmolLM2-135M gate_up / down_proj, 64 rows, ns per weight and row, same
 * run, 2026-12-07): f32 0.69 → 0.44 and 0.58 → 0.39, int8 0.67 → 0.50 and 0.44 → 0.37, nf4 0.93 →
 * 0.67 and 0.71 → 0.51 (32 × 8 came in between). Its straight-line code compiles slowly (one
 * session compiled it at load: the 135M f32 load went from 5.6–8.6 to 13.8–16.1 s, and CI from 11.5
 * to 20.7 minutes), hence after the load, and not for small weights (the tests' models).
 */
export const PREFILL_LARGE = { mr: 16, rq: 4 } as const;
/** Weights (rows × cols) from which prefill gets PREFILL_LARGE on CPU adapters (SmolLM2-135M's smallest, o_proj, is 331,776). */
export const PREFILL_UPGRADE_MIN = 1 << 18;
/** Most activation rows of a verify pass (the multi-row decode variant). */
export const MAX_VERIFY_ROWS = 8;
const WG = 64;

/**
 * The matmul variant for an adapter. GPUs split each weight row over the lanes of a subgroup
 * (coalesced 16-byte loads, subgroupShuffleXor), or without subgroups over workgroup memory. CPU
 * adapters (SwiftShader: a subgroup is its 4 SIMD lanes) give each invocation whole rows ('row'):
 * the 4 lanes of a SIMD group then read the same activations, which with subgroups come in one
 * load per vec4 and a broadcast (xBroadcast), and no lane sum is needed; measured on SwiftShader
 * (smollm2-135m gate_up, CPU time per weight): f32 2.7 → 2.3 ns, int8 1.95 → 1.4 ns against the
 * subgroup variant. A barrier costs more there than a small kernel, so 'workgroup' is never
 * chosen for them. `requested` forces one (the tests run every variant).
 */
export function chooseMatmulVariant(ctx: GpuContext, requested: MatmulChoice = 'auto'): MatmulVariant {
  const sgMin = ctx.adapterInfo.subgroupMinSize ?? 0;
  const sgLanes = ctx.features.subgroups && sgMin >= 2 ? Math.min(32, 2 ** Math.floor(Math.log2(sgMin))) : 0;
  const cpu = ctx.adapterInfo.cpuBacked;
  let reduce: MatmulReduce;
  if (requested === 'row-plain') reduce = 'row';
  else if (requested !== 'auto') reduce = requested;
  else if (cpu) reduce = 'row';
  else reduce = sgLanes ? 'subgroup' : 'workgroup';
  if (reduce === 'subgroup' && !sgLanes) {
    throw new NibbleError('bad-argument', `matmul variant 'subgroup' needs the subgroups feature (this adapter: ${ctx.adapterInfo.summary})`);
  }
  const maxLanes = reduce === 'row' ? 1 : reduce === 'subgroup' ? sgLanes : 32;
  const xBroadcast = requested !== 'row-plain' && ctx.features.subgroups && sgMin >= 4;
  return {
    reduce,
    maxLanes,
    prefillLanes: !cpu,
    xBroadcast,
    prefillUpgradeMin: reduce === 'row' ? PREFILL_UPGRADE_MIN : Infinity,
    wideVerifyMin: reduce === 'row' ? PREFILL_UPGRADE_MIN : Infinity,
    prefillDequant: reduce === 'row' && cpu,
  };
}

/**
 * Decoders whose prefill on CPU adapters goes through an f32 copy of the weight (prefillDequant):
 * nf4's codebook lookup is a per-lane gather in SwiftShader's JIT, which the tile repeats for every
 * 16 activation rows. Measured on SwiftShader (SmolLM2-135M gate_up / down_proj, 64 rows, 16 × 16
 * tile, ns per weight and row, same run, 2026-12-07): nf4 0.65 / 0.57, f32 0.28 / 0.29, int8
 * 0.24 / 0.22 (int8 decodes with integer multiplies and a conversion: it stays direct).
 */
export const PREFILL_DEQUANT = new Set(['nf4', 'nf4dq']);
/** Largest f32 copy a prefill dequantizes into (bigger weights keep the direct kernel). */
export const PREFILL_DEQUANT_MAX = 128 * 2 ** 20;

/**
 * Bytes of a model's f32 dequant scratch: the largest f32 copy of its layer weights (rows × cols ×
 * 4) in a PREFILL_DEQUANT format that fits `bindLimit` and PREFILL_DEQUANT_MAX; 0 when none does or
 * `enabled` (MatmulVariant.prefillDequant) is false. LlamaModel.load and the memory preflight size it alike.
 */
export function prefillDequantBytes(enabled: boolean, weights: ReadonlyArray<{ format: string; rows: number; cols: number }>, bindLimit: number): number {
  if (!enabled) return 0;
  const cap = Math.min(bindLimit, PREFILL_DEQUANT_MAX);
  let most = 0;
  for (const w of weights) {
    const f = getFormat(w.format);
    const bytes = w.rows * w.cols * 4;
    if (f && PREFILL_DEQUANT.has(f.decoder.name) && bytes <= cap) most = Math.max(most, bytes);
  }
  return most;
}

/** Fewest workgroups a decode or verify matmul is split into on CPU adapters (see matmulWorkgroup). */
const MIN_CPU_GROUPS = 16;

/**
 * Invocations per workgroup (WG in matmul.wgsl): 64, or on CPU adapters ('row': one invocation per
 * R = 4 · rq rows) the largest of 64, 32, … 4 (one SIMD group of SwiftShader) whose workgroups
 * cover the rows with little waste (≤ 1/16 of them: rows past N are computed and dropped) and, in
 * decode and verify, still make MIN_CPU_GROUPS workgroups: a software adapter runs a workgroup on one
 * core, so few workgroups leave a core idle at the end of the dispatch (prefill has ceil(M / MR)
 * workgroups per row slice as well). Without such a size, the one with the least waste (ties: the
 * smaller).
 * Measured on SwiftShader (SmolLM2-135M, 2 cores, ns per weight and row, same run): the 576-row
 * down_proj in decode made 5 workgroups of 16 (8 rows each), now 18 of 4: int8 1.58 → 1.22, f32
 * 2.45 → 2.01; gate_up (3072 rows) 24 of 16 instead of 12 of 32: int8 1.31 → 1.26, f32 2.15 → 2.09;
 * down_proj's prefill computed 1024 rows (2 workgroups of 64) for its 576.
 */
export function matmulWorkgroup(v: MatmulVariant, lanes: number, mode: LinearMode, rows: number, rq: number): number {
  if (v.reduce !== 'row' || lanes !== 1) return WG;
  const R = 4 * rq;
  let least = { wg: WG, waste: Infinity };
  for (let wg = WG; wg >= 4; wg /= 2) {
    const groups = Math.ceil(rows / (wg * R));
    const waste = groups * wg * R - rows;
    if (waste * 16 <= rows && (mode === 'prefill' || groups >= MIN_CPU_GROUPS)) return wg;
    if (waste <= least.waste) least = { wg, waste }; // ties: the smaller, more workgroups
  }
  return least.wg;
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
export function chunkHelpers(cv: number, broadcast = false): string {
  const j = [...Array(cv).keys()];
  const list = (f: (i: number) => string, sep = ', ') => j.map(f).join(sep);
  // broadcast: lane XL of the subgroup loads component XL (0..3) of each vec4, subgroupBroadcast shares it
  const ld = (buf: string, i: number) => (broadcast ? `xb(${buf}[b + ${i}u][XL])` : `${buf}[b + ${i}u]`);
  return [
    broadcast
      ? 'var<private> XL: u32;\n' +
        'fn xb(s: f32) -> vec4<f32> { return vec4<f32>(subgroupBroadcast(s, 0u), subgroupBroadcast(s, 1u), subgroupBroadcast(s, 2u), subgroupBroadcast(s, 3u)); }'
      : '',
    `struct XC { ${list((i) => `v${i}: vec4<f32>`)} }`,
    `fn x_load(b: u32) -> XC { return XC(${list((i) => ld('x4', i))}); }`,
    `fn x_quad(b: u32) -> vec4<f32> { return ${broadcast ? 'xb(x4[b][XL])' : 'x4[b]'}; }`,
    `fn g_quad(b: u32) -> vec4<f32> { return ${broadcast ? 'xb(g4[b][XL])' : 'g4[b]'}; }`,
    // activations k0 … k0 + 3 with those at or past K zeroed (the row's last, partial chunk)
    'fn q_mask(x: vec4<f32>, k0: u32) -> vec4<f32> { return select(vec4<f32>(0.0), x, vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(K)); }',
    `fn x_mask(x: XC, k0: u32) -> XC { return XC(${list((i) => `q_mask(x.v${i}, k0 + ${4 * i}u)`)}); }`,
    `fn x_sumsq(x: XC) -> f32 { return ${list((i) => `dot(x.v${i}, x.v${i})`, ' + ')}; }`,
    `fn g_load(b: u32) -> XC { return XC(${list((i) => ld('g4', i))}); }`,
    `fn xc_mul(a: XC, b: XC) -> XC { return XC(${list((i) => `a.v${i} * b.v${i}`)}); }`,
    `fn w_decode(w: WC) -> XC { return XC(${list((i) => `w_quad(w, ${i}u)`)}); }`,
    `fn xc_dot(a: XC, b: XC) -> f32 { return ${list((i) => `dot(a.v${i}, b.v${i})`, ' + ')}; }`,
  ].join('\n');
}

const TAGS_RE = /\s*\/\/((?: @[A-Z0-9]+)+)$/;
/**
 * The tags of matmul.wgsl's lines a build keeps: XB (xBroadcast), SC / NS (scaled or unscaled
 * format), R1 / RL (one lane per row group, or lanes sharing rows), M1 / MN (one activation row, or
 * several), CH (lanes sharing rows: whole chunks at a time) or, one lane per row group (CPU
 * adapters), a chunk quad by quad for one activation row (QM) or several (QN).
 */
export function skeletonTags(xb: boolean, scaled: boolean, lanes: number, mr: number): Set<string> {
  const tags = [scaled ? 'SC' : 'NS', lanes === 1 ? 'R1' : 'RL', mr === 1 ? 'M1' : 'MN', lanes !== 1 ? 'CH' : mr === 1 ? 'QM' : 'QN'];
  if (xb) tags.push('XB');
  return new Set(tags);
}

/**
 * Keeps the lines whose end tags (`// @XB @RL`: every tag named) are all in `on`, without the tags,
 * and drops the other tagged lines. Untagged lines stay.
 */
export function tagged(src: string, on: ReadonlySet<string>): string {
  const out: string[] = [];
  for (const line of src.split('\n')) {
    const m = TAGS_RE.exec(line);
    if (!m) {
      out.push(line);
      continue;
    }
    const tags = m[1]!.trim().split(' ').map((t) => t.slice(1));
    if (tags.every((t) => on.has(t))) out.push(line.slice(0, m.index));
  }
  return out.join('\n');
}

const QUAD_RE = /^([ \t]*)\/\/\{quad\n([\s\S]*?)^[ \t]*\/\/\}quad\n/gm;
/**
 * Emits the lines between each `//{quad` and `//}quad` once per quad j < cv of a chunk, in that
 * order, each copy in its own block (`{ … }`, so its names are its own), `$j` (and `$ju`, as a u32
 * literal) replaced by j. A body the build's tags emptied is dropped.
 */
export function expandQuads(src: string, cv: number): string {
  return src.replace(QUAD_RE, (_all, indent: string, body: string) => {
    if (!body.trim()) return '';
    const copy = (j: number) => body.replaceAll('$ju', `${j}u`).replaceAll('$j', String(j));
    return [...Array(cv).keys()].map((j) => `${indent}{\n${copy(j)}${indent}}\n`).join('');
  });
}

/**
 * Emits each code line containing `$q` once per weight-row quad q < rq, then each line containing
 * `$m` once per activation row m < mr ($qu, $mu: the index as a u32 literal).
 */
export function expandRows(src: string, mr: number, rq = 1): string {
  const rep = (lines: string[], tag: '$q' | '$m', n: number) => {
    const out: string[] = [];
    for (const line of lines) {
      if (!line.includes(tag) || line.trimStart().startsWith('//')) {
        out.push(line);
        continue;
      }
      for (let i = 0; i < n; i++) out.push(line.replaceAll(`${tag}u`, `${i}u`).replaceAll(tag, String(i)));
    }
    return out;
  };
  return rep(rep(src.split('\n'), '$q', rq), '$m', mr).join('\n');
}

const SCALED_RE = /const SCALED = (true|false);/;
/** Whether a format's decoder has scale blocks (w_bscale), else its weights are used as decoded. */
export function scaledFormat(f: WeightFormat): boolean {
  const m = SCALED_RE.exec(f.decoder.code);
  if (!m) throw new NibbleError('gpu-error', `decoder ${f.decoder.name} declares no SCALED`);
  return m[1] === 'true';
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
  /** Kernel timing only (test/perf): activation rows (MR) and weight-row quads (RQ) per lane group instead of the mode's. */
  tile?: { mr?: number; rq?: number };
  /** This weight is a row part of a split one: its rows are y columns first … of a y row of `of` columns. */
  columns?: { of: number; first: number };
  /**
   * prefill: the model's f32 scratch (prefillDequantBytes). A weight in a PREFILL_DEQUANT format
   * that fits it is decoded there (dequantOp) and the f32 matmul runs on the copy: two ops.
   */
  dequant?: { scratch: GPUBuffer; bytes: number };
}

/** A weight as the model holds it: whole, or in row parts (SplitWeight) when it exceeds a binding. */
export type ModelWeight = GpuWeight | SplitWeight;

/** The parts of a weight with their first rows (one part, row 0, for a whole weight). */
export function weightParts(w: ModelWeight): Array<{ part: GpuWeight; row0: number }> {
  if (!('parts' in w)) return [{ part: w, row0: 0 }];
  return w.parts.map((part, i) => ({ part, row0: w.rowStarts[i]! }));
}

/**
 * The matmul ops of a weight for one pass shape: one op, or one per row part of a split weight,
 * each writing its own columns of y (in one compute pass; the parts are independent).
 */
export function linearOps(rt: Runtime, w: ModelWeight, mode: LinearMode, a: LinearArgs, label: string, v: MatmulVariant): Op[] {
  const parts = weightParts(w);
  if (parts.length === 1) return partOps(rt, parts[0]!.part, mode, a, label, v);
  return parts.flatMap(({ part, row0 }, i) => partOps(rt, part, mode, { ...a, columns: { of: w.rows, first: row0 } }, `${label}#${i}`, v));
}

/** One weight's matmul: its op, or with `a.dequant` (prefill) the dequant op and the f32 matmul on the copy. */
function partOps(rt: Runtime, w: GpuWeight, mode: LinearMode, a: LinearArgs, label: string, v: MatmulVariant): Op[] {
  const f = formatOf(w);
  const { dequant, ...rest } = a;
  if (mode !== 'prefill' || !dequant || a.tile || !PREFILL_DEQUANT.has(f.decoder.name) || w.rows * w.cols * 4 > dequant.bytes) {
    return [linearOp(rt, w, mode, rest, label, v)];
  }
  const flat: GpuWeight = { format: 'f32', rows: w.rows, cols: w.cols, buffers: [dequant.scratch], bytes: w.rows * w.cols * 4, constants: {} };
  return [dequantOp(rt, w, dequant.scratch, `${label}:${w.format}`), linearOp(rt, flat, mode, rest, `${label}:${w.format}`, v)];
}

/**
 * out = the weight decoded to f32 rows (shaders/dequant.wgsl; the f32 format's layout, so the f32
 * matmul reads it as a weight): one invocation per 16-byte chunk of codes.
 */
export function dequantOp(rt: Runtime, w: GpuWeight, out: GPUBuffer, label: string): Op {
  if (w.cols % 4 !== 0) {
    throw new NibbleError('unsupported-architecture', `${label}: matmul rows of ${w.cols} inputs are not a multiple of 4`);
  }
  const f = formatOf(w);
  const cpw = chunkWeights(f);
  const code = f.decoder.code + '\n' + expandQuads(dequantSrc, cpw / 4);
  const pipeline = rt.pipelineAsync(`dequant_${f.decoder.name}`, code, 'main', { K: w.cols, N: w.rows, ...w.constants });
  const [gx, gy] = split2d(Math.ceil((w.rows * Math.ceil(w.cols / cpw)) / WG));
  return rt.op(`${label}:dequant`, pipeline, [out, ...w.buffers], () => [gx, gy, 1] as const);
}

/**
 * The matmul op of a weight for one pass shape (pipeline and bind group made here, once; on CPU
 * adapters a big weight's prefill op also registers PREFILL_LARGE with Runtime.deferUpgrade).
 */
export function linearOp(rt: Runtime, w: GpuWeight, mode: LinearMode, a: LinearArgs, label: string, v: MatmulVariant): Op {
  if (w.cols % 4 !== 0) {
    throw new NibbleError('unsupported-architecture', `${label}: matmul rows of ${w.cols} inputs are not a multiple of 4`);
  }
  const f = formatOf(w);
  const cpw = chunkWeights(f);
  const lanes = matmulLanes(v, w.cols, cpw, mode);
  const mr = a.tile?.mr ?? (mode === 'decode' ? 1 : mode === 'prefill' ? PREFILL_ROWS : Math.max(1, Math.min(MAX_VERIFY_ROWS, a.rows ?? MAX_VERIFY_ROWS)));
  const reduce = lanes === 1 ? 'none' : v.reduce === 'subgroup' ? 'subgroup' : 'workgroup';
  const xb = lanes === 1 && v.xBroadcast;
  const rq = a.tile?.rq ?? rowQuads(v, mode, cpw, w.rows * w.cols);
  const buffers = [a.x, a.y, a.bias ?? rt.dummyBuffer, a.norm?.weight ?? rt.dummyBuffer, ...w.buffers];
  /** The pipeline (compiling) and grid of an MR × RQ tile. */
  const build = (mr: number, rq: number) => {
    const wg = matmulWorkgroup(v, lanes, mode, w.rows, rq);
    const code = [
      reduce === 'subgroup' || xb ? 'enable subgroups;' : '',
      // LANES = 1: every invocation walks the same chunks, so the broadcasts are subgroup-uniform
      // (the analysis cannot see it through `lane = tid % LANES`)
      xb ? 'diagnostic(off, subgroup_uniformity);' : '',
      `const MR = ${mr}u;`,
      `const RQ = ${rq}u;`,
      laneSumSection(reduce),
      f.decoder.code,
      chunkHelpers(cpw / 4, xb),
      expandRows(expandQuads(tagged(matmulSrc, skeletonTags(xb, scaledFormat(f), lanes, mr)), cpw / 4), mr, rq),
    ].join('\n');
    const pipeline = rt.pipelineAsync(`matmul_${f.decoder.name}_${xb ? 'xb' : reduce}_mr${mr}_r${4 * rq}`, code, 'main', {
      K: w.cols,
      N: w.rows,
      LANES: lanes,
      HAS_BIAS: !!a.bias,
      ACCUM: !!a.accumulate,
      HEAD: !!a.head,
      NORM: !!a.norm,
      EPS: a.norm?.eps ?? 1e-5,
      ...(a.columns ? { YN: a.columns.of, Y0: a.columns.first } : {}),
      ...w.constants,
      WG: wg,
    });
    const groups = Math.ceil(w.rows / ((wg / lanes) * 4 * rq));
    const [gx, gz] = split2d(groups);
    const grid: Op['grid'] = (s) => [gx, Math.ceil((a.head ? s.headRows : s.T) / mr), gz] as const;
    return { pipeline, grid };
  };
  const base = build(mr, rq);
  const op = rt.op(`${label}:${w.format}:${mode}`, base.pipeline, buffers, base.grid);
  // CPU adapters: big prefill weights get the large tile once it has compiled (the LM head's
  // prefill pass has one row: not it)
  if (mode === 'prefill' && lanes === 1 && !a.tile && !a.head && w.rows * w.cols >= v.prefillUpgradeMin) {
    rt.deferUpgrade(op, buffers, () => build(PREFILL_LARGE.mr, PREFILL_LARGE.rq));
  }
  return op;
}

/**
 * out[t] = table[ids[t]] for any weight format (the table is [vocab, hidden]): one op, or one per
 * row part of a split table (each writes the ids in its rows).
 */
export function embedOps(rt: Runtime, table: ModelWeight, ids: GPUBuffer, out: GPUBuffer): Op[] {
  return weightParts(table).map(({ part, row0 }, i, all) => {
    const f = formatOf(part);
    const H = part.cols;
    const chunks = Math.ceil(H / chunkWeights(f));
    const split: Record<string, number> = all.length > 1 ? { R0: row0, RN: part.rows } : {};
    const pipeline = rt.pipelineAsync(`embed_${f.decoder.name}`, f.decoder.code + '\n' + embedSrc, 'main', { H, V: table.rows, ...split, ...part.constants });
    const label = all.length > 1 ? `embed#${i}:${part.format}` : `embed:${part.format}`;
    return rt.op(label, pipeline, [ids, out, ...part.buffers], (s) => [Math.ceil(chunks / WG), s.T, 1] as const);
  });
}
