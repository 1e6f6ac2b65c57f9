import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RuntimeHost } from '../../src/node/host.ts';
import { ensureGguf, peerMounts, WllamaPeer } from '../../bench/peer/wllama.ts';
import { loadGolden, STORIES } from '../helpers/golden.ts';

/**
 * The GGUF conversion checked by the peer itself: stories260K written as F32 GGUF by bench/gguf.ts,
 * loaded by llama.cpp (@wllama/wllama, WebAssembly) in a second page of the CLI runtime's Chromium,
 * must reproduce golden.json: the prompt's token count (the tokenizer: scores, types, add-BOS,
 * space prefix), the 48 greedy token ids and their text (the q/k permutation, GQA, tied head, RoPE,
 * RMSNorm metadata), and the log-softmax of the two golden logit rows within 0.01.
 */

const stories = STORIES;
const golden = loadGolden();

const logSoftmax = (v: number[]) => {
  const m = Math.max(...v);
  const lse = m + Math.log(v.reduce((a, x) => a + Math.exp(x - m), 0));
  return v.map((x) => x - lse);
};

describe('wllama on the GGUF conversion of stories260K', () => {
  let host: RuntimeHost;
  let peer: WllamaPeer;
  let dir: string;
  let loaded: Awaited<ReturnType<WllamaPeer['load']>>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nibble-gguf-'));
    const file = await ensureGguf(stories, 'F32', dir);
    host = await RuntimeHost.start({ gpu: 'swiftshader', mounts: peerMounts(dir), crossOriginIsolated: true });
    peer = await WllamaPeer.open(host);
    loaded = await peer.load({ url: `/peer/gguf/${encodeURIComponent(file)}`, backend: 'wasm', nCtx: 512, nThreads: 2 });
  });

  afterAll(async () => {
    await peer?.close();
    await host?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs threaded in a crossOriginIsolated page, the weights on the CPU backend', async () => {
    const info = await peer.info();
    expect(info.crossOriginIsolated).toBe(true);
    expect(loaded.multithread).toBe(true);
    expect(loaded.buffers.length).toBeGreaterThan(0);
    expect(loaded.offloaded).toBe(false);
    expect(loaded.nVocab).toBe(512);
    expect(loaded.addBos).toBe(true);
  });

  for (const g of golden.prompts) {
    it(`greedy output of ${JSON.stringify(g.prompt)} equals golden.json`, async () => {
      const r = await peer.complete({ prompt: g.prompt, maxTokens: g.generated_ids.length, nProbs: 5, ignoreEos: true });
      expect(r.usage.prompt_tokens).toBe(g.hf_input_ids.length);
      expect(r.tokens!.map((t) => t.id)).toEqual(g.generated_ids);
      // llama.cpp's text keeps the space that the first piece's ▁ stands for when the prompt is
      // empty ("▁Once" → " Once"); golden's llama2.c-style decode drops it after BOS
      expect(r.text).toBe(g.prompt === '' ? ` ${g.generated_text}` : g.generated_text);
      const rows: [number, number[]][] = [
        [0, g.logits_first_generated_position.values],
        [g.generated_ids.length - 1, g.logits_last_position.values],
      ];
      for (const [i, logits] of rows) {
        const ref = logSoftmax(logits);
        const top = r.tokens![i]!.top;
        expect(top.length).toBe(5);
        for (const t of top) expect(Math.abs(t.logprob - ref[t.id]!), `token ${i}, id ${t.id}`).toBeLessThan(0.01);
      }
    });
  }
});
