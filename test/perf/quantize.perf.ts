import { afterAll, beforeAll, describe, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { openHarness, type Caller } from '../browser/page.ts';

let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

/**
 * Load-time quantization speed (not a check; run with `npm run bench:kernels`): builder.write in
 * 16 MiB chunks + finish + queue drained, for SmolLM2-135M-sized bf16 weights (an MLP matrix and
 * the 49152 × 576 embedding). Prints milliseconds per format and shape.
 */
/**
 * CPU time (user + system, ms) of this test run's Chromium GPU process (SwiftShader runs there), or
 * null where /proc is missing: wall time on a shared machine mostly measures the other processes.
 */
function gpuProcessCpuMs(): number | null {
  if (!existsSync('/proc/self/stat')) return null;
  const stat = (pid: string) => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  const mine = new Set([String(process.pid), String(process.ppid)]);
  let total = 0;
  let found = false;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('--type=gpu-process')) continue;
      let p = pid;
      for (let i = 0; i < 8 && p !== '0' && p !== '1' && !mine.has(p); i++) p = stat(p)[1]; // field 4: ppid
      if (!mine.has(p)) continue;
      const f = stat(pid);
      total += ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, in clock ticks (100 Hz)
      found = true;
    } catch {
      // the process ended
    }
  }
  return found ? total : null;
}

describe('quantization timing', () => {
  const shapes: Array<[number, number]> = [
    [576, 1536],
    [49152, 576],
  ];
  const formats = (process.env.NIBBLE_QUANT_TIMING_FORMATS ?? 'nf4,nf4-dq,int8,f16').split(',');
  for (const format of formats)
    it(`${format}: ${shapes.map(([r, c]) => `${r}×${c}`).join(', ')} bf16`, async () => {
      for (const [rows, cols] of shapes) {
        const reps = Number(process.env.NIBBLE_QUANT_TIMING_REPS ?? 1);
        const cpu0 = gpuProcessCpuMs();
        const { ms, all } = await call('timeQuantize', { format, rows, cols, dtype: 'BF16', reps });
        const cpu = cpu0 === null ? '' : `, GPU process CPU ${((gpuProcessCpuMs()! - cpu0) / reps).toFixed(0)} ms per build`;
        console.log(`quantize ${format} ${rows}×${cols} bf16: ${ms.toFixed(0)} ms (best of ${all.map((t) => t.toFixed(0)).join(', ')})${cpu}`);
      }
    });
});
