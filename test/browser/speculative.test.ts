import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { openHarness, type Caller } from './page.ts';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { synthModel } from '../../src/node/synth.ts';
import { chiSquare, chiSquareCritical } from '../ref/sample.ts';

/**
 * Speculative decoding: greedy output equals plain greedy token for token (stories260K with an f32
 * and an nf4 self-draft, a synthetic SmolLM2-shaped model), acceptance statistics are sane (a draft
 * identical to the target accepts everything), sampled speculative decoding with the target as its
 * own draft reproduces plain sampling, and the acceptance rule keeps the target's distribution
 * (chi-square on a tiny case through spec_accept.wgsl).
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const golden = JSON.parse(readFileSync(join(modelsDir(), 'stories260K', 'golden.json'), 'utf8')) as {
  prompts: Array<{ prompt: string; hf_input_ids: number[]; generated_ids: number[]; generated_text: string }>;
};
const STORIES = '/models/stories260K';

describe('speculative decoding on stories260K', () => {
  afterAll(async () => {
    await call('disposeEngine', { key: 'spec' });
  });

  // this engine queues each next round's first draft pass before the verify's readback (pipeline:
  // off by default on SwiftShader, so the synthetic model's test below runs without it)
  it('f32 self-draft, k = 4, pipelined rounds: greedy output equals golden greedy; every proposal accepted', async () => {
    const info = await call('loadEngine', { key: 'spec', model: STORIES, load: { draft: { quant: 'f32', tokens: 4, pipeline: true } } });
    expect(info.draft?.pipeline).toBe(true);
    const prompts = golden.prompts.slice(1, 2);
    const runs = await call('generateRuns', {
      key: 'spec',
      runs: prompts.map((g) => ({ prompt: g.prompt, opts: { maxNewTokens: 48, ignoreEos: true } })),
    });
    runs.forEach((r, i) => {
      expect(r.error).toBeNull();
      expect(r.tokenIds, prompts[i].prompt).toEqual(prompts[i].generated_ids);
      expect(r.text).toBe(prompts[i].generated_text);
      expect(r.pieces.join('')).toBe(prompts[i].generated_text);
      expect(r.speculative.acceptanceRate).toBe(1);
      expect(r.speculative.tokensPerTargetPass).toBeGreaterThan(4.5);
      expect(r.speculative.tokensPerTargetPass).toBeLessThanOrEqual(5);
    });
    console.log('stories260K f32 self-draft k=4:', JSON.stringify(runs[0].speculative), `${runs[0].wallMs.toFixed(0)} ms`);
  });

  it('sampling with the target as its own draft reproduces plain sampling (same seed)', async () => {
    const opts = { maxNewTokens: 20, ignoreEos: true, temperature: 0.9, topK: 40, seed: 11 };
    const runs = await call('generateRuns', {
      key: 'spec',
      runs: [
        { prompt: 'Once upon a time', opts },
        { prompt: 'Once upon a time', opts: { ...opts, speculative: false } },
      ],
    });
    expect(runs[0].error).toBeNull();
    expect(runs[0].tokenIds).toEqual(runs[1].tokenIds);
    expect(runs[0].speculative.acceptanceRate).toBeGreaterThan(0.95);
    expect(runs[1].speculative).toBeUndefined();
  });

  it('a stop string and maxNewTokens end a speculative round mid-way', async () => {
    const g = golden.prompts[0];
    const runs = await call('generateRuns', {
      key: 'spec',
      runs: [
        { prompt: g.prompt, opts: { maxNewTokens: 7, ignoreEos: true } },
        { prompt: g.prompt, opts: { maxNewTokens: 48, ignoreEos: true, stop: g.generated_text.slice(20, 26) } },
      ],
    });
    expect(runs[0].tokenIds).toEqual(g.generated_ids.slice(0, 7));
    expect(runs[0].finishReason).toBe('length');
    expect(runs[1].finishReason).toBe('stop');
    expect(runs[1].text).toBe(g.generated_text.slice(0, 20));
  });

  it('nf4 self-draft (the same checkpoint at a cheaper format): greedy output equals golden greedy', async () => {
    const formats = await call('formats', undefined as never);
    expect(formats, 'the nf4 weight format is not registered (src/quant): the nf4 self-draft cannot run').toContain('nf4');
    // pipelined: rounds that reject a draft roll the queued pass back
    await call('loadEngine', { key: 'spec', model: STORIES, load: { draft: { quant: 'nf4', tokens: 4, pipeline: true } } });
    const prompts = golden.prompts.slice(3, 4);
    const runs = await call('generateRuns', {
      key: 'spec',
      runs: prompts.map((g) => ({ prompt: g.prompt, opts: { maxNewTokens: 48, ignoreEos: true } })),
    });
    runs.forEach((r, i) => {
      expect(r.error).toBeNull();
      expect(r.tokenIds, prompts[i].prompt).toEqual(prompts[i].generated_ids);
      expect(r.speculative.acceptanceRate).toBeGreaterThan(0);
      expect(r.speculative.acceptanceRate).toBeLessThanOrEqual(1);
      expect(r.speculative.tokensPerTargetPass).toBeGreaterThanOrEqual(1);
    });
    console.log('stories260K nf4 self-draft k=4:', runs.map((r) => JSON.stringify(r.speculative)).join(' '));
  });
});

describe('speculative decoding on a synthetic SmolLM2-135M-shaped model (2 layers)', () => {
  const dir = resolve(repoRoot(), '.cache', 'test-models', 'synth-smollm2-135m-2l');
  const url = '/cache/test-models/synth-smollm2-135m-2l';
  beforeAll(async () => {
    await synthModel({ shape: 'smollm2-135m', dtype: 'bf16', out: dir, layers: 2, seed: 7 });
  });
  afterAll(async () => {
    await call('disposeEngine', { key: 'synth' });
  });

  // SwiftShader runs the k + 1-row verify pass through the tiled gemm (a 49152-row LM head): the
  // smallest case that still has a full round of accepted proposals keeps this test affordable.
  it('greedy speculative (f32 self-draft, k = 2) equals plain greedy token for token', async () => {
    const info = await call('loadEngine', { key: 'synth', model: url, load: { contextLength: 32, draft: { quant: 'f32', tokens: 2 } } });
    expect(info.draft?.pipeline, 'SwiftShader: no pipelined rounds by default').toBe(false);
    const promptIds = [1, 345, 2000];
    const runs = await call('generateRuns', {
      key: 'synth',
      runs: [
        { opts: { promptIds, maxNewTokens: 4, ignoreEos: true, speculative: false } },
        { opts: { promptIds, maxNewTokens: 4, ignoreEos: true } },
      ],
    });
    expect(runs[0].error).toBeNull();
    expect(runs[0].tokenIds).toHaveLength(4);
    expect(runs[1].tokenIds).toEqual(runs[0].tokenIds);
    expect(runs[1].speculative.acceptanceRate).toBe(1);
    expect(runs[1].speculative.proposed).toBe(2);
    expect(runs[1].speculative.tokensPerTargetPass).toBe(3);
    console.log('synth smollm2 f32 self-draft k=2:', JSON.stringify(runs[1].speculative), `plain ${runs[0].wallMs.toFixed(0)} ms, speculative ${runs[1].wallMs.toFixed(0)} ms`);
  });
});

describe('spec_accept.wgsl keeps the target distribution', () => {
  it('emitted tokens follow p (chi-square over 3000 trials), acceptance rate = Σ min(p, q)', async () => {
    const target = [1.5, 0.2, -0.4, 0.9, 0.0, -1.2];
    const draft = [0.1, 1.4, -0.2, 0.9, 0.6, -0.3];
    const n = 3000;
    const r = await call('specTrials', { target, draft, trials: n, settings: { temperature: 1, seed: 2024 } });
    const V = target.length;
    // the token at the drafted position: the draft's if accepted, else the residual draw
    const emitted = r.accepted.map((a, i) => (a === 1 ? r.drafts[i] : r.next[i]));
    const h = new Array(V).fill(0);
    for (const t of emitted) h[t]++;
    const { stat, df } = chiSquare(h, r.p);
    expect(stat, `chi-square ${stat.toFixed(2)}, df ${df}`).toBeLessThan(chiSquareCritical(df, 0.001));
    // the drafts themselves follow q (so the test is not vacuous: q differs from p)
    const hq = new Array(V).fill(0);
    for (const t of r.drafts) hq[t]++;
    expect(chiSquare(hq, r.q).stat).toBeLessThan(chiSquareCritical(V - 1, 0.001));
    expect(chiSquare(hq, r.p).stat).toBeGreaterThan(chiSquareCritical(V - 1, 0.001));
    // acceptance probability Σ_v min(p_v, q_v): binomial z-score within 3.3 (p ≈ 0.001 two-sided)
    const pa = r.p.reduce((s, p, v) => s + Math.min(p, r.q[v]), 0);
    const acc = r.accepted.reduce((a, b) => a + b, 0);
    const z = (acc - n * pa) / Math.sqrt(n * pa * (1 - pa));
    expect(Math.abs(z), `accepted ${acc} of ${n}, expected ${(n * pa).toFixed(0)}`).toBeLessThan(3.3);
  });
});
