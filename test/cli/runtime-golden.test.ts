import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { RuntimeHost } from '../../src/node/host.ts';
import { repoRoot } from '../../src/node/paths.ts';
import { maxAbsDiff } from '../ref/cpu.ts';
import { loadGolden, STORIES } from '../helpers/golden.ts';

/**
 * golden.json through the CLI's runtime (the built bundle dist/runner.js in headless Chromium,
 * driven by RuntimeHost exactly as `nibble generate` does): every prompt's ids, every generated id,
 * the recorded logits within 1e-3; and `nibble eval` end to end.
 */
const stories = STORIES;
const golden = loadGolden();

let host: RuntimeHost;
beforeAll(async () => {
  host = await RuntimeHost.start({ gpu: 'auto' });
});
afterAll(async () => host?.close());

describe("golden.json through the CLI's runtime", () => {
  it('every prompt: ids, 48 greedy tokens, text and logits', async () => {
    await host.run({ kind: 'load', model: host.modelUrl(stories), load: { quant: 'f32' } });
    for (const g of golden.prompts) {
      const r = await host.run({
        kind: 'generate',
        prompt: g.prompt,
        maxNewTokens: 48,
        stream: false,
        ignoreEos: true,
      });
      expect(r.promptTokenIds).toEqual(g.hf_input_ids);
      expect(r.tokenIds).toEqual(g.generated_ids);
      expect(r.text).toBe(g.generated_text);
      const [first] = await host.run({ kind: 'logits', ids: g.hf_input_ids, rows: 1 });
      expect(maxAbsDiff(first, g.logits_first_generated_position.values)).toBeLessThan(1e-3);
      const all = [...g.hf_input_ids, ...g.generated_ids];
      const [last] = await host.run({ kind: 'logits', ids: all.slice(0, -1), rows: 1 });
      expect(maxAbsDiff(last, g.logits_last_position.values)).toBeLessThan(1e-3);
    }
  });

  it('nibble eval --json reports perplexity, tokens, quant, bits per weight and weight bytes', () => {
    const bin = resolve(repoRoot(), 'bin', 'nibble.js');
    const text = resolve(repoRoot(), 'test', 'fixtures', 'story.txt');
    const run = (quant: string) => {
      const r = spawnSync(process.execPath, [bin, 'eval', '--model', stories, '--quant', quant, '--text-file', text, '--json'], {
        encoding: 'utf8',
        timeout: 240_000,
      });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      return JSON.parse(r.stdout) as { perplexity: number; tokens: number; quant: string; bitsPerWeight: number; weightBytes: number };
    };
    const f32 = run('f32');
    const int8 = run('int8');
    expect(f32.tokens).toBeGreaterThan(200);
    expect(f32.perplexity).toBeGreaterThan(1);
    expect(f32.perplexity).toBeLessThan(10);
    expect(f32.bitsPerWeight).toBe(32);
    expect(int8.quant).toBe('int8');
    expect(int8.bitsPerWeight).toBeGreaterThan(8.4);
    expect(int8.bitsPerWeight).toBeLessThan(8.6);
    expect(int8.weightBytes).toBeLessThan(f32.weightBytes / 2);
    expect(Math.abs(int8.perplexity / f32.perplexity - 1)).toBeLessThan(0.01);
  });
});
