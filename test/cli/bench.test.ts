import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { uncachedPrompt } from '../../bench/harness.ts';
import { kernelName } from '../../src/kernels/probe.ts';

/**
 * `nibble bench` end to end on the tiny stories260K (headless Chromium, WebGPU): the roofline
 * probe line, one JSON row per format with every field finite, uncached prefill, the per-kernel
 * profile, speculative rows, progress on stderr, usage errors. Short runs: a 128-token context
 * (prefill of 512 tokens is then skipped as null) and a 16 MiB probe.
 */
const bin = resolve(repoRoot(), 'bin', 'nibble.js');
const stories = join(modelsDir(), 'stories260K');
const QUICK = ['--prompt-tokens', '16', '--new-tokens', '8', '--runs', '1', '--context-length', '128', '--probe-mib', '16', '--json'];

function nibble(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 240_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

type Rec = Record<string, unknown> & { type: string };
const lines = (stdout: string): Rec[] =>
  stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Rec);

const ROW_FIELDS = [
  'prefillTokensPerSecond',
  'prefill64TokensPerSecond',
  'decodeTokensPerSecond',
  'decodeGBps',
  'rooflineGBps',
  'rooflinePercent',
  'dispatchesPerStep',
  'weightBytes',
  'kvBytes',
  'loadMs',
  'bitsPerWeight',
];

/** decodeOnly: a speculative row (no prefill timed: its prefill fields are null). */
function expectRow(row: Rec, decodeOnly = false) {
  expect(typeof row.model).toBe('string');
  expect(typeof row.format).toBe('string');
  expect(typeof row.adapter).toBe('string');
  for (const k of ROW_FIELDS) {
    if (decodeOnly && k.startsWith('prefill')) {
      expect(row[k], k).toBeNull();
      continue;
    }
    expect(typeof row[k], k).toBe('number');
    expect(Number.isFinite(row[k]), k).toBe(true);
  }
  expect('prefill512TokensPerSecond' in row).toBe(true);
  const p512 = row.prefill512TokensPerSecond;
  expect(p512 === null || (typeof p512 === 'number' && Number.isFinite(p512))).toBe(true);
  expect(row.dispatchesPerStep as number).toBeGreaterThan(0);
  expect(row.decodeTokensPerSecond as number).toBeGreaterThan(0);
  if (!decodeOnly) expect(row.prefill64TokensPerSecond as number).toBeGreaterThan(0);
  expect(row.rooflineGBps as number).toBeGreaterThan(0);
  expect(row.weightBytes as number).toBeGreaterThan(0);
  expect(row.kvBytes as number).toBeGreaterThan(0);
  // every timed prompt was prefilled whole (no prefix reused from the run before)
  expect(row.cachedPromptTokens).toBe(0);
}

describe('bench helpers', () => {
  it('timed prompts share no prefix with the one before, the same sequence for every load', () => {
    for (const vocab of [512, 49152]) {
      let prev: number[] | null = null;
      for (let i = 0; i < 600; i++) {
        const p = uncachedPrompt(i, 64, vocab);
        expect(p).toHaveLength(64);
        for (const id of p) expect(id >= 3 && id < vocab).toBe(true);
        if (prev) expect(p[0]).not.toBe(prev[0]);
        prev = p;
      }
      expect(uncachedPrompt(5, 16, vocab)).toEqual(uncachedPrompt(5, 16, vocab));
    }
  });

  it('profile kernels are op labels without the layer index', () => {
    expect(kernelName('layer3.qkv:nf4:gemv')).toBe('qkv:nf4:gemv');
    expect(kernelName('layer12.attention')).toBe('attention');
    expect(kernelName('lm_head:int8:decode')).toBe('lm_head:int8:decode');
    expect(kernelName('argmax')).toBe('argmax');
  });
});

describe('nibble bench', () => {
  it('--json: a probe line, one row per format, and with --profile a kernel table per format', () => {
    const r = nibble('bench', '--model', stories, '--quant', 'f32,int8', ...QUICK, '--profile');
    expect(r.code, r.stderr).toBe(0);
    const recs = lines(r.stdout);
    const probe = recs.filter((x) => x.type === 'probe');
    expect(probe).toHaveLength(1);
    expect(probe[0].rooflineGBps as number).toBeGreaterThan(0);
    expect(Array.isArray(probe[0].variants)).toBe(true);

    const rows = recs.filter((x) => x.type === 'row');
    expect(rows.map((x) => x.format)).toEqual(['f32', 'int8']);
    for (const row of rows) {
      expectRow(row);
      expect(row.prefill512TokensPerSecond).toBeNull(); // the 128-token context cannot hold 512
      expect(row.rooflineGBps).toBe(probe[0].rooflineGBps);
    }
    expect(rows[1].weightBytes as number).toBeLessThan(rows[0].weightBytes as number);

    const profiles = recs.filter((x) => x.type === 'profile');
    expect(profiles).toHaveLength(2);
    for (const p of profiles) {
      if (!p.available) {
        expect(String(p.reason)).toMatch(/timestamp-query/);
        continue;
      }
      const kernels = p.kernels as Array<{ kernel: string; callsPerStep: number; msPerStep: number; percent: number }>;
      expect(kernels.length).toBeGreaterThan(0);
      expect(p.steps as number).toBeGreaterThan(0);
      for (const k of kernels) {
        expect(k.kernel).not.toMatch(/layer\d/); // grouped over layers
        expect(Number.isFinite(k.msPerStep)).toBe(true);
        expect(k.callsPerStep).toBeGreaterThan(0);
      }
      const calls = kernels.reduce((a, k) => a + k.callsPerStep, 0);
      expect(calls).toBe(rows[0].dispatchesPerStep); // every dispatch of a decode step was timed
      expect(kernels.reduce((a, k) => a + k.percent, 0)).toBeCloseTo(100, 0);
    }

    // progress on stderr: phases and runs
    expect(r.stderr).toMatch(/roofline probe/);
    expect(r.stderr).toMatch(/f32: loading/);
    expect(r.stderr).toMatch(/warm-up/);
    expect(r.stderr).toMatch(/prefill 64 run 1\/1/);
    expect(r.stderr).toMatch(/decode run 1\/1: 8 tokens/);
  });

  it('--draft-quant adds a speculative row per format with its speed-up over interleaved plain runs', () => {
    // 2 runs: a prompt over 128 tokens is prefilled once (--prefill-runs), a shorter one --runs times
    const r = nibble('bench', '--model', stories, '--quant', 'f32', '--draft-quant', 'int8', '--draft-tokens', '2', '--draft-pipeline', 'on', ...QUICK, '--profile', '--runs', '2', '--prefill-lengths', '16,130', '--context-length', '160');
    expect(r.code, r.stderr).toBe(0);
    // with --profile the speculative row gets a profile of its passes: the draft's steps (int8
    // decode) and the target's verify passes (f32 verify), told apart by their labels
    const profiles = lines(r.stdout).filter((x) => x.type === 'profile');
    expect(profiles.map((p) => p.draft ?? null)).toEqual([null, 'int8']);
    if (profiles[1].available) {
      const names = (profiles[1].kernels as Array<{ kernel: string }>).map((k) => k.kernel);
      expect(names).toContain('gate_up:int8:decode');
      expect(names).toContain('gate_up:f32:verify');
    }
    const rows = lines(r.stdout).filter((x) => x.type === 'row');
    expect(rows).toHaveLength(2);
    const [plain, spec] = rows;
    expect(plain.draft).toBeUndefined();
    expect(r.stderr).toMatch(/prefill 16 run 2\/2/);
    expect(r.stderr).toMatch(/prefill 130 run 1\/1/);
    expect(r.stderr).not.toMatch(/prefill 130 run 1\/2/);
    expectRow(spec, true);
    expect(spec.format).toBe('f32');
    expect(spec.draft).toBe('int8');
    expect(spec.draftTokens).toBe(2);
    expect(spec.draftPipeline).toBe(true);
    expect(spec.acceptanceRate as number).toBeGreaterThanOrEqual(0);
    expect(spec.acceptanceRate as number).toBeLessThanOrEqual(1);
    // decode only: its prompt pass is the plain row's plus the draft's
    expect(spec.prefill64TokensPerSecond).toBeNull();
    // the same engine decoding plainly between the speculative runs
    expect(spec.plainDecodeTokensPerSecond as number).toBeGreaterThan(0);
    expect(spec.speedupVsPlain as number).toBeCloseTo((spec.decodeTokensPerSecond as number) / (spec.plainDecodeTokensPerSecond as number), 6);
    expect(spec.speedupVsPlainRow as number).toBeCloseTo((spec.decodeTokensPerSecond as number) / (plain.decodeTokensPerSecond as number), 6);
    expect(r.stderr).toMatch(/plain decode run 2\/2: 8 tokens/);
  });

  it('usage errors exit with code 2 before starting the runtime', () => {
    const a = nibble('bench', '--shape', 'no-such-shape');
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/--shape must be one of/);
    expect(nibble('bench', '--model', stories, '--shape', 'smollm2-135m').code).toBe(2);
    expect(nibble('bench', '--draft-tokens', '2').code).toBe(2);
    expect(nibble('bench', '--draft-pipeline', 'on').stderr).toMatch(/--draft-pipeline needs --draft-quant/);
    expect(nibble('bench', '--draft-quant', 'int8', '--draft-pipeline', 'yes').stderr).toMatch(/--draft-pipeline must be on or off/);
    expect(nibble('bench', '--new-tokens', '1').code).toBe(2);
    expect(nibble('bench', '--prefill-lengths', '64,x').code).toBe(2);
    const q = nibble('bench', '--quant', 'f32,q4_0');
    expect(q.code).toBe(2);
    expect(q.stderr).toMatch(/unknown format "q4_0"/);
  });
});
