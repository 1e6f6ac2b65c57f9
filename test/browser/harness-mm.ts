/**
 * Matmul timing for `npm run bench:kernels` (test/perf/matmul.perf.ts): `copies` weights of a format,
 * quantized on the page from seeded random values, and `reps` dispatches of one pass shape in one
 * submission. Timings, not checks (the kernels' correctness is test/browser/kernels.test.ts).
 */
import type { Op } from '../../src/kernels/runtime.ts';
import { chooseMatmulVariant, linearOps, type LinearMode, type MatmulChoice } from '../../src/kernels/linear.ts';
import { getFormat } from '../../src/quant/format.ts';
import { bestMsPerRep, rt, scoped } from './harness-gen.ts';
import { randn } from '../ref/cpu.ts';

export interface MatmulBenchCase {
  format: string;
  N: number;
  K: number;
  mode: LinearMode;
  /** activation rows (decode 1, verify k + 1, prefill the prompt) */
  M: number;
  reps: number;
  rounds?: number;
  variant?: MatmulChoice;
  tile?: { mr?: number; rq?: number };
  /** distinct weights used in turn (default 1: a weight the CPU's caches may hold) */
  copies?: number;
  /** the RMSNorm fused into the prologue (as gate_up and qkv have it) */
  norm?: boolean;
  /** standard deviations of the random weights (default 0.05) and activations (default 1) */
  wStd?: number;
  xStd?: number;
}

export const mmApi = {
  async matmulBench(a: MatmulBenchCase) {
    const r = await rt();
    return scoped(r, async () => {
      // `copies` distinct weights, used in turn: more bytes than the CPU's caches hold, as in a model
      const weights = [];
      for (let copy = 0; copy < (a.copies ?? 1); copy++) {
        const b = getFormat(a.format)!.create(r, a.N, a.K, 'W');
        const rowsPer = Math.max(1, Math.floor((1 << 20) / a.K));
        for (let r0 = 0; r0 < a.N; r0 += rowsPer) {
          const n = Math.min(rowsPer, a.N - r0);
          const w = randn(n * a.K, 1000 + r0 + copy, a.wStd ?? 0.05);
          b.write(r0, 'F32', new Uint8Array(w.buffer));
        }
        weights.push(b.finish());
      }
      const x = r.upload(randn(a.M * a.K, 7, a.xStd ?? 1), 'x');
      const y = r.buffer(a.M * a.N * 4, 'y');
      const v = chooseMatmulVariant(r.ctx, a.variant ?? 'auto');
      const norm = a.norm ? { weight: r.upload(randn(a.K, 9), 'g'), eps: 1e-5 } : undefined;
      const opsOf = weights.map((wi) => linearOps(r, wi, a.mode, { x, y, rows: a.M, tile: a.tile, norm }, 'mm', v));
      const shape = { T: a.M, pos0: 0, headRows: 1 };
      const all: Op[] = [];
      for (let i = 0; i < a.reps; i++) all.push(...opsOf[i % opsOf.length]!);
      const best = await bestMsPerRep(r, opsOf[0]!, all, shape, a.reps, a.rounds);
      for (const wi of weights) for (const buf of wi.buffers) buf.destroy();
      return { ms: best, weightBytes: weights[0]!.bytes };
    });
  },
};
