import { afterAll, beforeAll, describe, it } from 'vitest';
import { openHarness, type Caller } from '../browser/page.ts';
import type { AttnCase } from '../browser/harness-attn.ts';

/** Kernel timings (not checks): run with `npm run bench:kernels` (vitest.perf.config.ts). */
let call: Caller;
let close: () => Promise<void>;
let browser: Awaited<ReturnType<typeof openHarness>>['browser'];
beforeAll(async () => {
  ({ call, close, browser } = await openHarness());
});
afterAll(async () => close?.());

/** CPU seconds used so far by the browser's GPU process (SwiftShader runs there). */
async function gpuCpu(): Promise<number> {
  const s = await browser.target().createCDPSession();
  const info = (await s.send('SystemInfo.getProcessInfo')) as { processInfo: Array<{ type: string; cpuTime: number }> };
  await s.detach();
  return info.processInfo.filter((p) => p.type.toLowerCase().includes('gpu')).reduce((a, p) => a + p.cpuTime, 0);
}

/**
 * Timing of one attention dispatch per layer (npm run bench:kernels): wall time per dispatch over
 * many dispatches in one pass, and the GPU process's CPU time per dispatch (on a software adapter
 * that is the work done, whatever else the machine runs).
 */
describe('attention timing', () => {
  it('decode and prefill, SmolLM2-135M and Llama-3.2-1B heads', async () => {
    const lines: string[] = [];
    const time = async (label: string, c: AttnCase) => {
      await call('attnBench', { ...c, reps: 1, rounds: 1 }); // compile
      const w = await call('attnBench', { ...c, reps: 1, rounds: 1 });
      const n = Math.max(1, Math.min(200, Math.round(1500 / Math.max(w.ms, 0.05))));
      let cpu = Infinity;
      let wall = Infinity;
      for (let i = 0; i < 2; i++) {
        const a = await gpuCpu();
        await call('attnBench', { ...c, reps: 1, rounds: 1 });
        const b = await gpuCpu();
        const r = await call('attnBench', { ...c, reps: n + 1, rounds: 1 });
        const d = await gpuCpu();
        cpu = Math.min(cpu, ((d - b - (b - a)) / n) * 1000);
        wall = Math.min(wall, r.ms);
      }
      lines.push(`${label}: ${wall.toFixed(3)} ms wall, ${cpu.toFixed(3)} ms GPU-process CPU`);
      console.log(lines.at(-1));
    };
    for (const [model, NH, NKV] of [
      ['135M', 9, 3],
      ['1B', 32, 8],
    ] as const) {
      for (const P of [64, 512, 2048]) await time(`${model} decode, ${P} positions`, { NH, NKV, D: 64, ctx: P, T: 1, pos0: P - 1, seed: 1 });
      for (const P of [512, 2048]) await time(`${model} decode, ${P} positions, f16 KV cache`, { NH, NKV, D: 64, ctx: P, T: 1, pos0: P - 1, seed: 1, kv16: true });
      for (const T of [64, 512]) {
        await time(`${model} prefill ${T} tokens (attentionPrefillOp)`, { NH, NKV, D: 64, ctx: T, T, pos0: 0, seed: 1, prefill: true });
        await time(`${model} prefill ${T} tokens (attentionOp)`, { NH, NKV, D: 64, ctx: T, T, pos0: 0, seed: 1 });
      }
    }
    console.log(lines.join('\n'));
  });
});
