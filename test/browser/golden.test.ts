import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHarness, type Caller } from './page.ts';
import { maxAbsDiff } from '../ref/cpu.ts';
import { loadGolden } from '../helpers/golden.ts';

/**
 * stories260K (a real trained Llama: GQA 8:4, tied embeddings) reproduces golden.json through the
 * whole path in headless Chromium on a page Vite serves: tokenizer ids, every greedy token, and
 * the recorded logits within 1e-3.
 */
const golden = loadGolden();

let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

describe('stories260K golden (browser, f32)', () => {
  it('reproduces every prompt: ids, 48 greedy tokens, text, logits', async () => {
    const { results, info } = await call('golden', {
      model: '/models/stories260K',
      prompts: golden.prompts.map((p) => p.prompt),
      maxNewTokens: 48,
    });
    expect(info.config.numKvHeads).toBe(4);
    expect(results).toHaveLength(golden.prompts.length);
    golden.prompts.forEach((g, i) => {
      const r = results[i];
      expect(r.promptTokenIds, `prompt ids of ${JSON.stringify(g.prompt)}`).toEqual(g.hf_input_ids);
      expect(r.tokenIds, `generated ids of ${JSON.stringify(g.prompt)}`).toEqual(g.generated_ids);
      expect(r.text).toBe(g.generated_text);
      expect(r.streamed).toBe(g.generated_text);
      expect(maxAbsDiff(r.logitsFirst, g.logits_first_generated_position.values)).toBeLessThan(1e-3);
      expect(maxAbsDiff(r.logitsLast, g.logits_last_position.values)).toBeLessThan(1e-3);
      expect(r.timings.decodeTokensPerSecond).toBeGreaterThan(0);
    });
  });
});

describe('stories260K with an f16 KV cache', () => {
  // measured on SwiftShader: logits within 0.015 of golden.json (f32 cache: 1e-3), every greedy id the same
  it('the same greedy ids, logits within f16 rounding of the golden ones', async () => {
    const { results } = await call('golden', {
      model: '/models/stories260K',
      prompts: golden.prompts.map((p) => p.prompt),
      maxNewTokens: 48,
      load: { kvCache: 'f16' },
    });
    golden.prompts.forEach((g, i) => {
      const r = results[i];
      expect(r.tokenIds, `generated ids of ${JSON.stringify(g.prompt)}`).toEqual(g.generated_ids);
      const d1 = maxAbsDiff(r.logitsFirst, g.logits_first_generated_position.values);
      const d2 = maxAbsDiff(r.logitsLast, g.logits_last_position.values);
      expect(d1).toBeLessThan(2e-2);
      expect(d2).toBeLessThan(2e-2);
    });
  });
});
