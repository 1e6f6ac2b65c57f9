import { getFormat, type GpuWeight } from '../quant/format.ts';
import { NibbleError } from '../errors.ts';
import { split2d, type Op, type Runtime } from './runtime.ts';

export type LinearMode = 'gemv' | 'gemm';

/** Passes of up to this many rows go through the gemv variant (decode); others use gemm. */
export const GEMV_MAX_ROWS = 1;

export interface LinearArgs {
  x: GPUBuffer;
  y: GPUBuffer;
  bias?: GPUBuffer;
  /** y += x·Wᵀ (the residual add, fused). */
  accumulate?: boolean;
  /** Rows come from step.headRows instead of step.T (the LM head). */
  head?: boolean;
}

/**
 * y = x · Wᵀ (+ bias) for any weight format: picks the format's fused (dequant-)matmul shader.
 * gemv: a handful of rows, one pass over W; gemm: tiled, for the prompt.
 */
/** Output rows each gemv lane group computes (GEMV_R in the shaders). */
export const GEMV_ROWS_PER_GROUP = 4;

/** gemv lanes per output row: a power of two in 4..64 giving each lane ≥ ~16 products of K. */
export function gemvLanes(K: number): number {
  let l = 4;
  while (l < 64 && l * 32 <= K) l *= 2;
  return l;
}

export function linearOp(rt: Runtime, w: GpuWeight, mode: LinearMode, a: LinearArgs, label: string): Op {
  const f = getFormat(w.format);
  if (!f) throw new NibbleError('bad-argument', `unknown weight format "${w.format}"`);
  const lanes = gemvLanes(w.cols);
  const pipeline = rt.pipeline(f.linear.name, f.linear.code, mode, {
    K: w.cols,
    N: w.rows,
    HAS_BIAS: !!a.bias,
    ACCUM: !!a.accumulate,
    HEAD: !!a.head,
    ...(mode === 'gemv' ? { LANES: lanes } : {}),
    ...w.constants,
  });
  const buffers = [a.x, a.y, a.bias ?? rt.dummyBuffer, ...w.buffers];
  const N = w.rows;
  const grid: Op['grid'] =
    mode === 'gemv'
      ? () => {
          const [gx, gy] = split2d(Math.ceil(N / ((256 / lanes) * GEMV_ROWS_PER_GROUP)));
          return [gx, gy, 1] as const;
        }
      : (s) => [Math.ceil(N / 64), Math.ceil((a.head ? s.headRows : s.T) / 64), 1] as const;
  return rt.op(`${label}:${w.format}:${mode}`, pipeline, buffers, grid);
}

/** out[t] = table[ids[t]] for any weight format (the table is [vocab, hidden]). */
export function embedOp(rt: Runtime, table: GpuWeight, ids: GPUBuffer, out: GPUBuffer): Op {
  const f = getFormat(table.format);
  if (!f) throw new NibbleError('bad-argument', `unknown weight format "${table.format}"`);
  const H = table.cols;
  const pipeline = rt.pipeline(f.embed.name, f.embed.code, 'main', { H, V: table.rows, ...table.constants });
  return rt.op(`embed:${table.format}`, pipeline, [ids, out, ...table.buffers], (s) => [Math.ceil(H / 256), s.T, 1] as const);
}
