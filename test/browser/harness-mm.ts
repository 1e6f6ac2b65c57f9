/**
 * Matmul timing for `npm run bench:kernels` (test/perf/matmul.perf.ts): one weight of a format,
 * quantized on the page from seeded random values, and `reps` dispatches of one pass shape in one
 * submission. Timings, not checks (the kernels' correctness is test/browser/kernels.test.ts).
 */
import type { Op } from '../../src/kernels/runtime.ts';
import { chooseMatmulVariant, linearOps, type LinearMode, type MatmulChoice } from '../../src/kernels/linear.ts';
import { getFormat } from '../../src/quant/format.ts';
import { rt, scoped } from './harness-gen.ts';
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
}

export const mmApi = {
  async matmulBench(a: MatmulBenchCase) {
    const r = await rt();
    return scoped(r, async () => {
      const b = getFormat(a.format)!.create(r, a.N, a.K, 'W');
      const rowsPer = Math.max(1, Math.floor((1 << 20) / a.K));
      for (let r0 = 0; r0 < a.N; r0 += rowsPer) {
        const n = Math.min(rowsPer, a.N - r0);
        const w = randn(n * a.K, 1000 + r0, 0.05);
        b.write(r0, 'F32', new Uint8Array(w.buffer));
      }
      const w = b.finish();
      const x = r.upload(randn(a.M * a.K, 7), 'x');
      const y = r.buffer(a.M * a.N * 4, 'y');
      const v = chooseMatmulVariant(r.ctx, a.variant ?? 'auto');
      const ops = linearOps(r, w, a.mode, { x, y, rows: a.M, tile: a.tile }, 'mm', v);
      await r.ready();
      const shape = { T: a.M, pos0: 0, headRows: 1 };
      r.run(ops, shape);
      await r.device.queue.onSubmittedWorkDone();
      const all: Op[] = [];
      for (let i = 0; i < a.reps; i++) all.push(...ops);
      let best = Infinity;
      for (let i = 0; i < (a.rounds ?? 2); i++) {
        const t0 = performance.now();
        r.run(all, shape);
        await r.device.queue.onSubmittedWorkDone();
        best = Math.min(best, (performance.now() - t0) / a.reps);
      }
      for (const buf of w.buffers) buf.destroy();
      return { ms: best, weightBytes: w.bytes };
    });
  },
};
