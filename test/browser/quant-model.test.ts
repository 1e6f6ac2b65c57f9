import type { FormatName, QuantPlan } from '../../src/quant/plan.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openHarness, type Caller } from './page.ts';
import { modelsDir } from '../../src/node/paths.ts';
import * as q from '../ref/quant.ts';

/**
 * Quantized loads of stories260K (a real trained Llama: GQA 8:4, tied embeddings) end to end:
 * perplexity of test/fixtures/story.txt (~320 tokens, teacher forced) against f32, int8 greedy
 * generation against golden.json, bits per weight from the shapes, quantization plans, and the
 * loader's host-memory bound on a chunked load.
 */
const MODEL = '/models/stories260K';
const text = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'story.txt'), 'utf8');
const golden = JSON.parse(readFileSync(join(modelsDir(), 'stories260K', 'golden.json'), 'utf8')) as {
  prompts: Array<{ prompt: string; generated_ids: number[] }>;
};

let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

/**
 * The 2-D weights of stories260K as nibble loads them ([rows, K]; q|k|v and gate|up fused; the
 * embedding is also the LM head, tied, so it is stored once).
 */
const EMBED: [number, number] = [512, 64];
const LAYER: Array<[number, number]> = [
  [128, 64], // q|k|v: 64 + 32 + 32 rows
  [64, 64], // o
  [344, 64], // gate|up: 172 + 172
  [64, 172], // down: K = 172 is not a multiple of 64
];
const WEIGHTS: Array<[number, number]> = [EMBED, ...Array.from({ length: 5 }, () => LAYER).flat()];
const PARAMS = WEIGHTS.reduce((a, [r, k]) => a + r * k, 0); // 259 328

/**
 * GPU bytes of one weight, from its shape (test/ref/quant.ts's formatBytes). Every row of codes is
 * padded to 16 bytes, and blocks stay inside rows, so a row of K = 172 holds ceil(172/64) = 3
 * blocks (the last one 44 wide) and 4 · ceil(172/32) = 24 nf4 code words (20 padding codes),
 * 4 · ceil(172/16) = 44 int8 words (4 padding bytes), 4 · ceil(172/8) = 88 f16 words (4 padding
 * halves): down_proj pays a little more than K·bits. Where K is a multiple of 64 (every other
 * weight here, and real models) the formulas give exactly 8.5 (int8), 4.5 (nf4), 16 (f16) and
 * ≈4.127 (nf4-dq) bits per weight; f32 rows (K % 4 = 0 here) are not padded.
 */
const weightBytes = (format: string, rows: number, K: number) => q.formatBytes(format, rows, K);
const bitsPerWeight = (format: (i: number) => string) => (WEIGHTS.reduce((a, [r, k], i) => a + weightBytes(format(i), r, k), 0) * 8) / PARAMS;

type Result = Awaited<ReturnType<Caller>> & { perplexity: number; tokens: number; info: { bitsPerWeight: number; formats: Record<string, number>; loaderPeakHostBytes: number } };
const results: Record<string, Result> = {};
async function perplexity(quant: FormatName): Promise<Result> {
  results[quant] ??= (await call('perplexity', { model: MODEL, text, load: { quant } })) as Result;
  return results[quant];
}

describe('stories260K quantized: perplexity of a story vs f32', () => {
  const bounds: Array<[FormatName, number]> = [
    ['int8', 0.01],
    ['nf4', 0.25], // a 64-wide toy model is far more sensitive to 4 bits than real models
    ['nf4-dq', 0.27],
    ['f16', 0.001],
  ];
  it('f32 baseline', async () => {
    const r = await perplexity('f32');
    expect(r.tokens).toBeGreaterThan(250);
    expect(r.perplexity).toBeGreaterThan(1);
    expect(r.perplexity).toBeLessThan(10);
    expect(r.info.bitsPerWeight).toBe(32);
  });
  for (const [quant, bound] of bounds) {
    it(`${quant} within ${bound * 100}% of f32; bits per weight and parameter counts`, async () => {
      const f32 = await perplexity('f32');
      const r = await perplexity(quant);
      console.log(`${quant}: perplexity ${r.perplexity.toFixed(4)} (f32 ${f32.perplexity.toFixed(4)}, ${((r.perplexity / f32.perplexity - 1) * 100).toFixed(2)}%), ${r.info.bitsPerWeight.toFixed(4)} bits/weight`);
      expect(r.tokens).toBe(f32.tokens);
      expect(Math.abs(r.perplexity / f32.perplexity - 1)).toBeLessThan(bound);
      expect(r.info.bitsPerWeight).toBeCloseTo(bitsPerWeight(() => quant), 9);
      // tied embeddings: the one quantized table serves the lookup and the head (no second copy)
      expect(r.info.formats).toEqual({ [quant]: PARAMS });
    });
  }
});

describe('stories260K quantized: generation, plans, bounded host memory', () => {
  it('int8 greedy output equals golden.json (f32) for the first 24 tokens of every prompt', async () => {
    const { results: res, info } = await call('golden', { model: MODEL, prompts: golden.prompts.map((p) => p.prompt), maxNewTokens: 24, load: { quant: 'int8' } });
    expect(info.formats).toEqual({ int8: PARAMS });
    golden.prompts.forEach((g, i) => {
      expect(res[i].tokenIds, `int8 tokens of ${JSON.stringify(g.prompt)}`).toEqual(g.generated_ids.slice(0, 24));
    });
  });

  it('plan nf4 + int8 embeddings (also the tied head); host memory bounded by a chunk', async () => {
    const plan: QuantPlan = { default: 'nf4', overrides: [{ pattern: 'embed_tokens', format: 'int8' }] };
    // the loader's smallest chunk (64 KiB), one read at a time, a budget of one chunk: the
    // checkpoint (1 MiB) streams through the GPU builders, which keep nothing on the host
    const chunk = 1 << 16;
    const load = { quant: plan, chunkBytes: chunk, parallelReads: 1, hostMemoryBudget: chunk };
    const r = (await call('perplexity', { model: MODEL, text, load })) as Result;
    expect(r.info.formats).toEqual({ int8: EMBED[0] * EMBED[1], nf4: PARAMS - EMBED[0] * EMBED[1] });
    expect(r.info.bitsPerWeight).toBeCloseTo(bitsPerWeight((i) => (i === 0 ? 'int8' : 'nf4')), 9);
    // requests hold whole rows: at most a chunk, or one row where a row is larger
    const widestRow = Math.max(...WEIGHTS.map(([, k]) => k * 4));
    expect(r.info.loaderPeakHostBytes).toBeGreaterThan(0);
    expect(r.info.loaderPeakHostBytes).toBeLessThanOrEqual(chunk + widestRow);
    const f32 = await perplexity('f32');
    expect(Math.abs(r.perplexity / f32.perplexity - 1)).toBeLessThan(0.25);
  });
});
