import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { openHarness, type Caller } from './page.ts';
import { repoRoot } from '../../src/node/paths.ts';
import { synthModel } from '../../src/node/synth.ts';
import { argmax, llamaForward, maxAbsDiff } from '../ref/cpu.ts';
import { loadRefModel } from '../ref/weights.ts';

/**
 * Synthetic checkpoints with the real shapes of SmolLM2-135M and Qwen2.5-0.5B (bf16, fewer
 * layers) through the whole engine, against the CPU reference forward: GQA 9:3 and 14:2, head_dim
 * 64, q/k/v biases (qwen2), bf16 → f32 conversion, large vocabularies.
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const dirOf = (name: string) => resolve(repoRoot(), '.cache', 'test-models', name);

describe('synthetic models of real shapes vs CPU reference (f32 compute)', () => {
  it('smollm2-135m shape, 2 layers: logits at every position and greedy continuation', async () => {
    const dir = dirOf('synth-smollm2-135m-2l');
    await synthModel({ shape: 'smollm2-135m', dtype: 'bf16', out: dir, layers: 2, seed: 7 });
    const ids = [1, 345, 2000, 17, 999, 31000];
    const got = await call('logitsAll', { model: '/cache/test-models/synth-smollm2-135m-2l', ids, generate: 4 });
    const { w, dims } = await loadRefModel(dir);
    const want = llamaForward(ids, w, dims);
    const V = dims.V;
    let scale = 0;
    for (const x of want) scale = Math.max(scale, Math.abs(x));
    for (let t = 0; t < ids.length; t++) {
      expect(maxAbsDiff(got.logits[t], want.subarray(t * V, (t + 1) * V))).toBeLessThan(1e-4 * Math.max(1, scale));
    }
    // greedy continuation = CPU argmax chain
    const seq = [...ids];
    for (let i = 0; i < 4; i++) {
      const l = llamaForward(seq, w, dims);
      seq.push(argmax(l.subarray((seq.length - 1) * V, seq.length * V)));
    }
    expect(got.generated).toEqual(seq.slice(ids.length));
  });

  it('qwen2.5-0.5b shape (q/k/v biases, 151936 vocab), 1 layer: logits', async () => {
    const dir = dirOf('synth-qwen2.5-0.5b-1l');
    await synthModel({ shape: 'qwen2.5-0.5b', dtype: 'bf16', out: dir, layers: 1, seed: 3 });
    const ids = [1, 77, 30001];
    const got = await call('logitsAll', { model: '/cache/test-models/synth-qwen2.5-0.5b-1l', ids });
    expect(got.info.config.attentionBias).toBe(true);
    const { w, dims } = await loadRefModel(dir);
    expect(w.layers[0].qBias).toBeDefined();
    const want = llamaForward(ids, w, dims);
    const V = dims.V;
    let scale = 0;
    for (const x of want) scale = Math.max(scale, Math.abs(x));
    for (let t = 0; t < ids.length; t++) {
      expect(maxAbsDiff(got.logits[t], want.subarray(t * V, (t + 1) * V))).toBeLessThan(1e-4 * Math.max(1, scale));
    }
  });
});
