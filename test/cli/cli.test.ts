import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { dropTensor, editJson, modelVariant } from '../helpers/model-variants.ts';

/**
 * The CLI end to end (`node bin/nibble.js`), hosting the engine in headless Chromium on WebGPU:
 * golden output for "Zoo", JSON shape, and clear errors with non-zero exit codes.
 */
const bin = resolve(repoRoot(), 'bin', 'nibble.js');
const stories = join(modelsDir(), 'stories260K');
const golden = JSON.parse(readFileSync(join(stories, 'golden.json'), 'utf8')) as {
  prompts: Array<{ prompt: string; hf_input_ids: number[]; generated_ids: number[]; generated_text: string }>;
};

function nibble(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 240_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('nibble CLI', () => {
  it('generate --json reproduces golden.json for "Zoo"', () => {
    const r = nibble('generate', '--model', stories, '--prompt', 'Zoo', '--max-new-tokens', '48', '--json');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    const g = golden.prompts.find((p) => p.prompt === 'Zoo')!;
    expect(out.promptTokenIds).toEqual(g.hf_input_ids);
    expect(out.tokenIds).toEqual(g.generated_ids);
    expect(out.text).toBe(g.generated_text);
    for (const k of ['loadMs', 'prefillMs', 'decodeMs', 'decodeTokensPerSecond']) {
      expect(typeof out.timings[k]).toBe('number');
      expect(out.timings[k]).toBeGreaterThan(0);
    }
    expect(typeof out.adapter).toBe('string');
    expect(out.adapter.length).toBeGreaterThan(0);
  });

  it('generate streams text without --json', () => {
    const r = nibble('generate', '--model', stories, '--prompt', 'Once upon a time', '--max-new-tokens', '12');
    expect(r.code).toBe(0);
    const g = golden.prompts.find((p) => p.prompt === 'Once upon a time')!;
    expect(g.generated_text.startsWith(r.stdout.trimEnd())).toBe(true);
    expect(r.stdout.trim().length).toBeGreaterThan(10);
    expect(r.stderr).toMatch(/tok\/s/);
  });

  it('a missing model folder is a clear error on stderr with exit code != 0', () => {
    const r = nibble('generate', '--model', '/nonexistent/model', '--prompt', 'x', '--json');
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/nonexistent\/model/);
  });

  it('an unsupported architecture names the supported ones', () => {
    const dir = modelVariant('cli-gpt2', (d) => editJson(join(d, 'config.json'), (j) => (j.model_type = 'gpt2')));
    const r = nibble('generate', '--model', dir, '--prompt', 'x', '--json');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unsupported-architecture/);
    expect(r.stderr).toMatch(/gpt2/);
    expect(r.stderr).toMatch(/llama/);
  });

  it('a missing tensor is named', () => {
    const dir = modelVariant('cli-missing-tensor', (d) => dropTensor(d, 'model.layers.2.mlp.up_proj.weight'));
    const r = nibble('generate', '--model', dir, '--prompt', 'x', '--json');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/missing-tensor/);
    expect(r.stderr).toMatch(/model\.layers\.2\.mlp\.up_proj\.weight/);
  });

  it('usage errors exit with code 2', () => {
    expect(nibble('generate', '--prompt', 'x').code).toBe(2);
    expect(nibble('frobnicate').code).toBe(2);
    const r = nibble('generate', '--model', stories, '--prompt', 'x', '--max-new-tokens', 'lots');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/max-new-tokens/);
  });
});
