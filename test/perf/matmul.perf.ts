import { afterAll, beforeAll, describe, it } from 'vitest';
import { openHarness, type Caller } from '../browser/page.ts';
import type { MatmulBenchCase } from '../browser/harness-mm.ts';

/**
 * Matmul timings (not checks): `npm run bench:kernels`. The formats of a shape are timed in
 * interleaved rounds and each keeps its best round, so a noisy machine skews them alike.
 * NIBBLE_MM_FORMATS / NIBBLE_MM_MODES / NIBBLE_MM_VARIANT / NIBBLE_MM_ROUNDS / NIBBLE_MM_SHAPES narrow or repeat them.
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const formats = (process.env.NIBBLE_MM_FORMATS ?? 'f32,int8,nf4').split(',');
const modes = (process.env.NIBBLE_MM_MODES ?? 'decode,verify,prefill').split(',') as Array<MatmulBenchCase['mode']>;
const variant = (process.env.NIBBLE_MM_VARIANT ?? 'auto') as MatmulBenchCase['variant'];
const rounds = Number(process.env.NIBBLE_MM_ROUNDS ?? 5);
/** NIBBLE_MM_COPIES: distinct weights per shape used in turn (default 8: out of the CPU's caches, as in a model). */
const copies = Number(process.env.NIBBLE_MM_COPIES ?? 8);
const norm = process.env.NIBBLE_MM_NORM === '1';
const xStd = Number(process.env.NIBBLE_MM_XSTD ?? 1);
const wStd = Number(process.env.NIBBLE_MM_WSTD ?? 0.05);
/** NIBBLE_MM_TILES=8x2,8x1,4x1: time each format at these MR x RQ tiles too (the first is the mode's own when empty). */
const tiles = (process.env.NIBBLE_MM_TILES ?? '').split(',').filter(Boolean).map((t) => { const [mr, rq] = t.split('x').map(Number); return { mr, rq }; });

/** NIBBLE_MM_SHAPES=name:N:K,…: the weight shapes (default SmolLM2-135M's gate_up and down_proj). */
const shapes = (process.env.NIBBLE_MM_SHAPES ?? 'gate_up:3072:576,down:576:1536').split(',').map((s) => {
  const [name, N, K, ...rest] = s.split(':');
  const n = Number(N);
  const k = Number(K);
  if (!name || rest.length || !Number.isInteger(n) || n < 1 || !Number.isInteger(k) || k < 4 || k % 4 !== 0) {
    throw new Error(`NIBBLE_MM_SHAPES: "${s}" is not name:N:K (N ≥ 1 rows, K a positive multiple of 4)`);
  }
  return [name, n, k] as const;
});

describe('matmul timing', () => {
  it(`weight shapes ${shapes.map(([name, N, K]) => `${name} (N ${N}, K ${K})`).join(', ')}`, async () => {
    const lines: string[] = [];
    for (const [name, N, K] of shapes) {
      for (const mode of modes) {
        const M = mode === 'decode' ? 1 : mode === 'verify' ? 5 : 64;
        const cases = formats.flatMap((format) => (tiles.length ? tiles : [undefined]).map((tile) => ({ format, N, K, mode, M, reps: 1, rounds: 1, variant, tile, copies, norm, xStd, wStd }) as MatmulBenchCase));
        const reps: number[] = [];
        for (const c of cases) {
          const first = await call('matmulBench', c);
          reps.push(Math.max(copies, Math.min(Math.max(60, copies), Math.round(400 / Math.max(first.ms, 0.05)))));
        }
        const best = cases.map(() => ({ ms: Infinity, weightBytes: 0 }));
        for (let r = 0; r < rounds; r++) {
          for (const [i, c] of cases.entries()) {
            const t = await call('matmulBench', { ...c, reps: reps[i]!, rounds: 1 });
            if (t.ms < best[i]!.ms) best[i] = t;
          }
        }
        for (const [i, c] of cases.entries()) {
          const t = best[i]!;
          const ratio = best[0]!.ms / t.ms;
          lines.push(`${name} ${mode} M=${M} ${c.format}${c.tile ? ` ${c.tile.mr}x${c.tile.rq}` : ''}: ${t.ms.toFixed(3)} ms, ${((t.ms * 1e6) / (N * K * M)).toFixed(3)} ns/weight/row, ${(t.weightBytes / t.ms / 1e6).toFixed(2)} GB/s of weights, ${ratio.toFixed(2)}× ${cases[0]!.format}`);
          console.log(lines.at(-1));
        }
      }
    }
    console.log(lines.join('\n'));
  });
});
