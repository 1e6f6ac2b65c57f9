import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openHarness, type Caller } from './page.ts';
import { modelsDir } from '../../src/node/paths.ts';
import { randn } from '../ref/cpu.ts';
import { chiSquare, chiSquareCritical, refDraw, refKept, refProcess, type RefSampling } from '../ref/sample.ts';

/**
 * GPU sampling (shaders/sample.wgsl) against the softmax: chi-square goodness of fit over many
 * seeded draws at significance 0.001, the kept sets of top-k / top-p / min-p (also on a 151936-token
 * vocabulary), penalties and logit bias, exact agreement with the CPU reference's draws (same RNG),
 * and reproducibility.
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const ALPHA = 0.001;
const LOGITS = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, 0.3, 1.2, -2.0];

/** |mass above v − p·Z| / Z: how close token v is to the top-p cut (0 = exactly on it). */
function topPMargin(logits: number[], s: RefSampling, v: number): number {
  if ((s.topP ?? 1) >= 1) return Infinity;
  const z = logits.map((x) => x / s.temperature);
  let m = -Infinity;
  for (const x of z) if (x > m) m = x;
  const sorted = [...z].sort((a, b) => b - a);
  const tauK = (s.topK ?? 0) > 0 ? sorted[s.topK! - 1] : -Infinity;
  let Z = 0;
  let above = 0;
  for (const x of z) {
    if (x < tauK || x < m - 64) continue;
    Z += Math.exp(x - m);
    if (x > z[v]) above += Math.exp(x - m);
  }
  return Math.abs(above - s.topP! * Z) / Z;
}

function histogram(tokens: number[], V: number): number[] {
  const h = new Array(V).fill(0);
  for (const t of tokens) h[t]++;
  return h;
}

function expectFits(tokens: number[], probs: number[], what: string) {
  const h = histogram(tokens, probs.length);
  for (let v = 0; v < probs.length; v++) if (probs[v] === 0) expect(h[v], `${what}: token ${v} is excluded but was drawn`).toBe(0);
  const { stat, df } = chiSquare(h, probs);
  if (df > 0) expect(stat, `${what}: chi-square ${stat.toFixed(2)} over ${df} df (critical ${chiSquareCritical(df, ALPHA).toFixed(2)} at p = ${ALPHA})`).toBeLessThan(chiSquareCritical(df, ALPHA));
}

function expectKept(gpu: number[], want: number[], what: string) {
  for (let v = 0; v < want.length; v++) {
    expect(gpu[v] > 0, `${what}: token ${v} kept?`).toBe(want[v] > 0);
    expect(Math.abs(gpu[v] - want[v]), `${what}: p[${v}]`).toBeLessThan(2e-5);
  }
}

describe('sample.wgsl', () => {
  it('draws from softmax(logits / T): chi-square over 12000 draws, and the same tokens as the CPU reference', async () => {
    const s: RefSampling = { temperature: 0.8 };
    const r = await call('sampleDraws', { logits: LOGITS, rows: 3000, reps: 4, settings: { temperature: 0.8, seed: 1234 } });
    const probs = refKept(LOGITS, s);
    expectKept(r.kept, probs, 'T=0.8');
    expectFits(r.tokens, probs, 'T=0.8');
    // the first 2000 draws, token for token, against the CPU reference with the same RNG
    let same = 0;
    for (let i = 0; i < 2000; i++) if (refDraw(LOGITS, s, 1234, i + 1) === r.tokens[i]) same++;
    expect(same).toBeGreaterThanOrEqual(1995);
  });

  it('top-k, top-p, min-p keep exactly their sets (HF semantics) and sample within them', async () => {
    const cases: Array<{ name: string; s: RefSampling }> = [
      { name: 'top-k 3', s: { temperature: 1, topK: 3 } },
      { name: 'top-p 0.7', s: { temperature: 1, topP: 0.7 } },
      { name: 'min-p 0.2', s: { temperature: 1, minP: 0.2 } },
      { name: 'top-k 6 + top-p 0.8 + min-p 0.05, T 0.7', s: { temperature: 0.7, topK: 6, topP: 0.8, minP: 0.05 } },
      { name: 'top-p 0.999, T 2', s: { temperature: 2, topP: 0.999 } },
    ];
    for (const c of cases) {
      const r = await call('sampleDraws', { logits: LOGITS, rows: 3000, reps: 1, settings: { ...c.s, seed: 77 } });
      const probs = refKept(LOGITS, c.s);
      expectKept(r.kept, probs, c.name);
      expectFits(r.tokens, probs, c.name);
    }
    // the sets themselves, by hand: top-k 3 → the 3 largest; top-p 0.7 → {2.0, 1.5, 1.2, 1.0}
    expect(refKept(LOGITS, { temperature: 1, topK: 3 }).map((p) => p > 0)).toEqual([true, true, false, false, false, false, false, false, true, false]);
    expect(refKept(LOGITS, { temperature: 1, topP: 0.7 }).map((p) => p > 0)).toEqual([true, true, true, false, false, false, false, false, true, false]);
  });

  it('ties at the k-th value are all kept; top-k 1 and temperature 0 are the argmax', async () => {
    const tied = [3, 2, 2, 2, 1, 0, -1, 2];
    const r = await call('sampleDraws', { logits: tied, rows: 2000, reps: 1, settings: { temperature: 1, topK: 2, seed: 5 } });
    expect(r.kept.map((p: number) => p > 0)).toEqual([true, true, true, true, false, false, false, true]);
    expectFits(r.tokens, refKept(tied, { temperature: 1, topK: 2 }), 'tied top-k');
    for (const settings of [{ temperature: 0.9, topK: 1, seed: 1 }, { temperature: 0, seed: 2 }]) {
      const g = await call('sampleDraws', { logits: LOGITS, rows: 64, reps: 1, settings });
      expect(new Set(g.tokens)).toEqual(new Set([0]));
    }
  });

  it('penalties (from seeded counts) and logit bias change the distribution as the CPU reference says', async () => {
    const counts = [3, 0, 1, 0, 0, 0, 2, 0, 0, 0];
    const s: RefSampling = { temperature: 1, repetitionPenalty: 1.3, presencePenalty: 0.2, frequencyPenalty: 0.3, logitBias: { 4: 2.5, 8: -1e30 } };
    const u = refProcess(LOGITS, s, counts);
    const probs = refKept(u, s);
    expect(probs[8]).toBe(0);
    const r = await call('sampleDraws', { logits: LOGITS, rows: 3000, reps: 1, counts, settings: { ...s, seed: 99 } as never });
    expectKept(r.kept, probs, 'penalties + bias');
    expectFits(r.tokens, probs, 'penalties + bias');
    // greedy with penalties: the argmax of the penalized, biased logits
    const g = await call('sampleDraws', { logits: LOGITS, rows: 8, reps: 1, counts, settings: { ...s, temperature: 0, seed: 1 } as never });
    expect(g.tokens[0]).toBe(u.indexOf(Math.max(...u)));
  });

  it('works on a 151936-token vocabulary without sorting: the kept sets equal the reference', async () => {
    const V = 151936;
    const logits = Array.from(randn(V, 42, 2.5));
    logits[777] = 14; // a clear top token plus a long tail
    const cases: RefSampling[] = [
      { temperature: 1, topK: 50 },
      { temperature: 0.9, topP: 0.9 },
      { temperature: 1.1, topK: 1000, topP: 0.95, minP: 0.001 },
    ];
    for (const s of cases) {
      const r = await call('sampleDraws', { logits, rows: 4, reps: 2, settings: { ...s, seed: 3 } });
      const want = refKept(logits, s);
      let nGpu = 0;
      let nRef = 0;
      const mismatch: number[] = [];
      for (let v = 0; v < V; v++) {
        if (r.kept[v] > 0) nGpu++;
        if (want[v] > 0) nRef++;
        if (r.kept[v] > 0 !== want[v] > 0) mismatch.push(v);
      }
      // f32 / fixed-point masses may decide a token whose top-p margin is within rounding differently
      for (const v of mismatch) expect(topPMargin(logits, s, v), `${JSON.stringify(s)}: token ${v} (kept ${nGpu} on the GPU, ${nRef} in the reference)`).toBeLessThan(1e-5);
      expect(mismatch.length).toBeLessThanOrEqual(2);
      for (const t of r.tokens) expect(want[t]).toBeGreaterThan(0);
    }
  });

  it('is reproducible: the same seed gives the same tokens, another seed other tokens', async () => {
    const a = await call('sampleDraws', { logits: LOGITS, rows: 200, reps: 1, settings: { temperature: 1, seed: 42 } });
    const b = await call('sampleDraws', { logits: LOGITS, rows: 200, reps: 1, settings: { temperature: 1, seed: 42 } });
    const c = await call('sampleDraws', { logits: LOGITS, rows: 200, reps: 1, settings: { temperature: 1, seed: 43 } });
    expect(b.tokens).toEqual(a.tokens);
    expect(c.tokens).not.toEqual(a.tokens);
  });
});

const golden = JSON.parse(readFileSync(join(modelsDir(), 'stories260K', 'golden.json'), 'utf8')) as {
  prompts: Array<{ prompt: string; hf_input_ids: number[]; generated_ids: number[]; generated_text: string }>;
};

describe('sampled generation on stories260K', () => {
  beforeAll(async () => {
    await call('loadEngine', { key: 'stories', model: '/models/stories260K' });
  });
  afterAll(async () => {
    await call('disposeEngine', { key: 'stories' });
  });

  it('top-k 1 and temperature 0 reproduce greedy decoding (golden ids)', async () => {
    const g = golden.prompts[0];
    const runs = await call('generateRuns', {
      key: 'stories',
      runs: [
        { prompt: g.prompt, opts: { maxNewTokens: 24, ignoreEos: true, topK: 1, temperature: 0.8, seed: 1 } },
        { prompt: g.prompt, opts: { maxNewTokens: 24, ignoreEos: true, temperature: 0, topP: 0.5 } },
      ],
    });
    for (const r of runs) expect(r.tokenIds).toEqual(g.generated_ids.slice(0, 24));
  });

  it('seeded sampling: same seed → same ids, another seed → other ids', async () => {
    const opts = { maxNewTokens: 20, ignoreEos: true, temperature: 1, topP: 0.95 };
    const runs = await call('generateRuns', {
      key: 'stories',
      runs: [
        { prompt: 'Once upon a time', opts: { ...opts, seed: 7 } },
        { prompt: 'Once upon a time', opts: { ...opts, seed: 7 } },
        { prompt: 'Once upon a time', opts: { ...opts, seed: 8 } },
        { prompt: 'Once upon a time', opts: { ...opts, repetitionPenalty: 1.5, seed: 7 } },
        { prompt: 'Once upon a time', opts: { ...opts, repetitionPenalty: 1.5, seed: 7 } },
      ],
    });
    expect(runs[0].error).toBeNull();
    expect(runs[0].tokenIds).toHaveLength(20);
    expect(runs[1].tokenIds).toEqual(runs[0].tokenIds);
    expect(runs[2].tokenIds).not.toEqual(runs[0].tokenIds);
    expect(runs[0].seed).toBe(7);
    // penalties: counts live on the GPU and are re-seeded from the prompt per request
    expect(runs[4].tokenIds).toEqual(runs[3].tokenIds);
    expect(runs[3].tokenIds).not.toEqual(runs[0].tokenIds);
  });
});
