import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { RuntimeHost } from '../../src/node/host.ts';
import { repoRoot } from '../../src/node/paths.ts';
import { denoEnv, findDeno } from '../../src/node/deno.ts';
import { maxAbsDiff } from '../ref/cpu.ts';
import { loadGolden, STORIES } from '../helpers/golden.ts';

/**
 * The second host: the built bundle (dist/runner.js) in a Deno process on wgpu's WebGPU, driven by
 * RuntimeHost exactly as `nibble generate --runtime deno` does, on SwiftShader's Vulkan driver.
 * golden.json (every prompt's ids, the 48 greedy tokens, text and logits), an nf4 load, speculative
 * decoding with an nf4 and an f32 self-draft, and the CLI's --json output against the Chromium
 * runtime's (and the directory weight cache).
 */
const stories = STORIES;
const golden = loadGolden();
// ~120 tokens of test/fixtures/story.txt: enough to tell nf4 from f32, cheap on SwiftShader
const storyText = readFileSync(resolve(repoRoot(), 'test', 'fixtures', 'story.txt'), 'utf8').slice(0, 500);

let host: RuntimeHost;
beforeAll(async () => {
  host = await RuntimeHost.start({ runtime: 'deno', gpu: 'swiftshader' });
});
afterAll(async () => host?.close());

describe('the Deno host', () => {
  it('finds the deno binary of the npm devDependency and maps --gpu swiftshader onto the Vulkan ICD', () => {
    const deno = findDeno({ PATH: '' });
    expect(deno).toMatch(/node_modules\/(@deno\/[^/]+|deno)\/deno$/);
    const env = denoEnv('swiftshader', {});
    expect(env.VK_ICD_FILENAMES).toMatch(/vk_swiftshader_icd\.json$/);
    expect(denoEnv('native', {}).VK_ICD_FILENAMES).toBeUndefined();
    expect(() => findDeno({ NIBBLE_DENO: '/nonexistent/deno' })).toThrow(/NIBBLE_DENO/);
  });

  it('golden.json: every prompt, ids, 48 greedy tokens, text and logits (SwiftShader)', async () => {
    const info = await host.run({ kind: 'load', model: host.modelUrl(stories), load: { quant: 'f32' } });
    expect(info.adapter.summary).toMatch(/SwiftShader/);
    for (const g of golden.prompts) {
      const r = await host.run({ kind: 'generate', prompt: g.prompt, maxNewTokens: 48, stream: false, ignoreEos: true });
      expect(r.promptTokenIds).toEqual(g.hf_input_ids);
      expect(r.tokenIds, g.prompt).toEqual(g.generated_ids);
      expect(r.text).toBe(g.generated_text);
      const [first] = await host.run({ kind: 'logits', ids: g.hf_input_ids, rows: 1 });
      expect(maxAbsDiff(first, g.logits_first_generated_position.values)).toBeLessThan(1e-3);
      const all = [...g.hf_input_ids, ...g.generated_ids];
      const [last] = await host.run({ kind: 'logits', ids: all.slice(0, -1), rows: 1 });
      expect(maxAbsDiff(last, g.logits_last_position.values)).toBeLessThan(1e-3);
    }
  });

  it('streams text events and reports a missing model folder by its path', async () => {
    const texts: string[] = [];
    const off = host.on((ev) => {
      if (ev.type === 'text') texts.push(ev.text);
    });
    const g = golden.prompts[2];
    const r = await host.run({ kind: 'generate', prompt: g.prompt, maxNewTokens: 12, stream: true, ignoreEos: true });
    off();
    expect(texts.join('')).toBe(r.text);
    expect(r.tokenIds).toEqual(g.generated_ids.slice(0, 12));
    const empty = mkdtempSync(join(tmpdir(), 'nibble-deno-empty-'));
    try {
      const err = await host.run({ kind: 'load', model: host.modelUrl(empty), load: {} }).then(
        () => null,
        (e: Error & { code?: string }) => e,
      );
      expect(err?.code).toBe('not-found');
      expect(err?.message).toContain(`config.json not found in ${empty}`);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('nf4: perplexity close to f32, bits per weight of nf4 (the quantized case)', async () => {
    await host.run({ kind: 'load', model: host.modelUrl(stories), load: { quant: 'f32' } });
    const f32 = await host.run({ kind: 'eval', text: storyText });
    await host.run({ kind: 'load', model: host.modelUrl(stories), load: { quant: 'nf4' } });
    const nf4 = await host.run({ kind: 'eval', text: storyText });
    expect(nf4.tokens).toBe(f32.tokens);
    expect(nf4.tokens).toBeGreaterThan(80);
    expect(nf4.quant).toBe('nf4');
    expect(nf4.bitsPerWeight).toBeGreaterThan(4.5);
    expect(nf4.bitsPerWeight).toBeLessThan(4.7); // rows of K = 172 are padded to whole 16-byte chunks
    expect(nf4.perplexity).not.toBe(f32.perplexity);
    expect(Math.abs(nf4.perplexity / f32.perplexity - 1)).toBeLessThan(0.25);
  });

  it('speculative: an nf4 and an f32 self-draft reproduce golden greedy; the f32 draft is always accepted', async () => {
    for (const draft of ['nf4', 'f32'] as const) {
      await host.run({ kind: 'load', model: host.modelUrl(stories), load: { quant: 'f32', draft: { quant: draft, tokens: 4 } } });
      for (const g of golden.prompts.slice(2, 4)) {
        const r = await host.run({ kind: 'generate', prompt: g.prompt, maxNewTokens: 48, stream: false, ignoreEos: true });
        expect(r.tokenIds, `${draft} draft: ${g.prompt}`).toEqual(g.generated_ids);
        expect(r.speculative).toBeDefined();
        expect(r.speculative!.acceptanceRate).toBeGreaterThan(0);
        if (draft === 'f32') expect(r.speculative!.acceptanceRate).toBe(1);
        expect(r.speculative!.tokensPerTargetPass).toBeGreaterThan(1);
      }
    }
  });
});

describe('the CLI with --runtime deno', () => {
  const bin = resolve(repoRoot(), 'bin', 'nibble.js');
  const cache = mkdtempSync(join(tmpdir(), 'nibble-deno-cache-'));
  afterAll(() => rmSync(cache, { recursive: true, force: true }));
  const cli = (args: string[]) => {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, NIBBLE_CACHE_DIR: cache } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return JSON.parse(r.stdout) as { tokenIds: number[]; text: string; adapter: string; perplexity: number };
  };
  const generate = (runtime: string) =>
    cli(['generate', '--runtime', runtime, '--gpu', 'swiftshader', '--model', stories, '--prompt', 'Zoo', '--max-new-tokens', '48', '--json']);
  /** The weight cache's files and their modification times. */
  const cacheFiles = () => {
    const out: Record<string, number> = {};
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (p.endsWith('.bin')) out[p] = statSync(p).mtimeMs; // (model.json records the last use)
      }
    };
    walk(cache);
    return out;
  };

  it('generate --json gives the same tokenIds as --runtime chromium (golden.json), the second run from the directory cache', () => {
    const g = golden.prompts.find((p) => p.prompt === 'Zoo')!;
    const deno = generate('deno');
    expect(deno.adapter).toMatch(/SwiftShader/);
    expect(deno.tokenIds).toEqual(g.generated_ids);
    const stored = cacheFiles();
    expect(Object.keys(stored).length).toBeGreaterThan(5);
    const again = generate('deno');
    expect(again.tokenIds).toEqual(deno.tokenIds);
    expect(cacheFiles()).toEqual(stored); // a hit reads the weights and rewrites none
    const chromium = generate('chromium');
    expect(chromium.tokenIds).toEqual(deno.tokenIds);
    expect(chromium.text).toBe(deno.text);
  });

  it('--runtime must be chromium or deno (usage error, exit 2)', () => {
    const r = spawnSync(process.execPath, [bin, 'generate', '--runtime', 'bun', '--model', stories, '--prompt', 'x'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--runtime must be one of chromium, deno, got "bun"');
  });
});
