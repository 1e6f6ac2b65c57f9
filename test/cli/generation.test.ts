import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { editJson, modelVariant } from '../helpers/model-variants.ts';
import { openHarness, type Caller } from '../browser/page.ts';

/**
 * The CLI's generation surface: sampling flags (the same seed gives the same tokens in the CLI's
 * runtime as in the test page's), --stop, speculative decoding with --draft and its --json stats,
 * and `nibble chat` reading user lines from stdin (history, /reset, /exit; no template → error).
 */
const bin = resolve(repoRoot(), 'bin', 'nibble.js');
const stories = join(modelsDir(), 'stories260K');
const golden = JSON.parse(readFileSync(join(stories, 'golden.json'), 'utf8')) as {
  prompts: Array<{ prompt: string; hf_input_ids: number[]; generated_ids: number[]; generated_text: string }>;
};

function nibble(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 240_000, input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

describe('nibble generate: sampling and speculative flags', () => {
  it('seeded sampling with filters and --stop gives the same tokens as the engine in the test page', async () => {
    const flags = { temperature: 0.9, topK: 50, topP: 0.95, minP: 0.02, seed: 7 };
    const r = nibble([
      'generate', '--model', stories, '--prompt', 'Once upon a time', '--max-new-tokens', '40', '--json',
      '--temperature', '0.9', '--top-k', '50', '--top-p', '0.95', '--min-p', '0.02', '--seed', '7', '--stop', '.', '--stop', 'zzz',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.seed).toBe(7);
    expect(out.finishReason).toBe('stop');
    expect(out.stopString).toBe('.');
    expect(out.text).not.toContain('.');
    await call('loadEngine', { key: 'cli-cmp', model: '/models/stories260K' });
    try {
      const [page] = await call('generateRuns', { key: 'cli-cmp', runs: [{ prompt: 'Once upon a time', opts: { maxNewTokens: 40, ...flags, stop: ['.', 'zzz'] } }] });
      expect(out.tokenIds).toEqual(page.tokenIds);
      expect(out.text).toBe(page.text);
    } finally {
      await call('disposeEngine', { key: 'cli-cmp' });
    }
  });

  it('--draft self --draft-quant f32: golden greedy output, speculative stats in --json', () => {
    const g = golden.prompts.find((p) => p.prompt === 'Zoo')!;
    const r = nibble(['generate', '--model', stories, '--prompt', 'Zoo', '--max-new-tokens', '24', '--json', '--draft', 'self', '--draft-quant', 'f32', '--draft-tokens', '3']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.tokenIds).toEqual(g.generated_ids.slice(0, 24));
    expect(out.speculative.acceptanceRate).toBe(1);
    expect(out.speculative.tokensPerTargetPass).toBeGreaterThan(3);
  });

  it('--draft-tokens without --draft is a usage error', () => {
    const r = nibble(['generate', '--model', stories, '--prompt', 'x', '--draft-tokens', '3']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--draft/);
  });
});

describe('nibble chat', () => {
  it('reads user lines from stdin, keeps history, /reset and /exit', () => {
    const dir = modelVariant('chatml-stories-cli', (d) =>
      editJson(join(d, 'tokenizer_config.json'), (j) => {
        j.chat_template =
          "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
      }),
    );
    const r = nibble(['chat', '--model', dir, '--max-new-tokens', '8', '--seed', '3', '--stats'], 'Hello\nAnd then?\n/reset\n\nHello\n/exit\nnot read\n');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.length).toBe(4); // three replies, then the final newline
    for (const l of lines.slice(0, 3)) expect(l.length).toBeGreaterThan(0);
    expect(lines[3]).toBe('');
    // --stats: turn 2 carries turn 1 (history; its prefix is cached), /reset starts over
    const stats = [...r.stderr.matchAll(/\[prompt (\d+) tokens \((\d+) cached\), reply (\d+) tokens/g)].map((m) => m.slice(1, 4).map(Number));
    expect(stats).toHaveLength(3);
    const [t1, t2, t3] = stats;
    expect(t2[0]).toBeGreaterThan(t1[0] + t1[2]);
    expect(t2[1]).toBeGreaterThanOrEqual(t1[0] - 2);
    expect(t3[0]).toBe(t1[0]);
    expect(lines[2]).toBe(lines[0]); // same prompt after /reset, same seed → same reply
  });

  it('a model without a chat template is a clear error', () => {
    const r = nibble(['chat', '--model', stories], 'Hello\n');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no-chat-template/);
  });
});
