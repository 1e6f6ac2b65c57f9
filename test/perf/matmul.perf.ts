import { afterAll, beforeAll, describe, it } from 'vitest';
import { openHarness, type Caller } from '../browser/page.ts';
import type { MatmulBenchCase } from '../browser/harness-mm.ts';

/** Matmul timings (not checks): `npm run bench:kernels`; NIBBLE_MM_FORMATS / NIBBLE_MM_MODES narrow them. */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const formats = (process.env.NIBBLE_MM_FORMATS ?? 'f32,int8,nf4').split(',');
const modes = (process.env.NIBBLE_MM_MODES ?? 'decode,verify,prefill').split(',');

describe('matmul timing', () => {
  it('SmolLM2-135M gate_up shape (N 3072, K 576) and down (N 576, K 1536)', async () => {
    const lines: string[] = [];
    for (const [name, N, K] of [
      ['gate_up', 3072, 576],
      ['down', 576, 1536],
    ] as const) {
      for (const mode of modes) {
        const M = mode === 'decode' ? 1 : mode === 'verify' ? 5 : 64;
        for (const format of formats) {
          const c: MatmulBenchCase = { format, N, K, mode: mode as MatmulBenchCase['mode'], M, reps: 1, rounds: 1, variant: (process.env.NIBBLE_MM_VARIANT ?? 'auto') as MatmulBenchCase['variant'] };
          const first = await call('matmulBench', c);
          const reps = Math.max(2, Math.min(100, Math.round(1500 / Math.max(first.ms, 0.05))));
          const r = await call('matmulBench', { ...c, reps, rounds: 3 });
          const nsPerWeight = (r.ms * 1e6) / (N * K);
          lines.push(`${name} ${mode} M=${M} ${format}: ${r.ms.toFixed(3)} ms, ${nsPerWeight.toFixed(3)} ns/weight, ${(r.weightBytes / r.ms / 1e6).toFixed(2)} GB/s of weights`);
          console.log(lines.at(-1));
        }
      }
    }
    console.log(lines.join('\n'));
  });
});
