import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openHarness, type Caller } from './page.ts';
import { modelsDir } from '../../src/node/paths.ts';
import { TextTokenizer } from '../../src/tokenizer.ts';
import { editJson, modelVariant } from '../helpers/model-variants.ts';

/**
 * Generation surface on stories260K: stop strings across token boundaries, KV-cache reuse between
 * calls, the context-length policy, abort, and the OpenAI-style chat / completions API (shapes of
 * chat.completion and chat.completion.chunk, usage, timings; chat on a model without a template is
 * a no-chat-template error; a copy of stories260K with a ChatML template chats).
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
  await call('loadEngine', { key: 'stories', model: '/models/stories260K' });
});
afterAll(async () => {
  await call('disposeEngine', { key: 'stories' });
  await close?.();
});

const storiesDir = join(modelsDir(), 'stories260K');
const golden = JSON.parse(readFileSync(join(storiesDir, 'golden.json'), 'utf8')) as {
  prompts: Array<{ prompt: string; hf_input_ids: number[]; generated_ids: number[]; generated_text: string }>;
};
const tok = new TextTokenizer(
  JSON.parse(readFileSync(join(storiesDir, 'tokenizer.json'), 'utf8')),
  JSON.parse(readFileSync(join(storiesDir, 'tokenizer_config.json'), 'utf8')),
);

describe('generate: stop strings, cache reuse, context, abort', () => {
  it('a stop string spanning a token boundary ends generation and is never emitted', async () => {
    const g = golden.prompts[1];
    // find a boundary between generated tokens i and i+1 with text on both sides
    const d = tok.streamDecoder(g.hf_input_ids);
    const pieces = g.generated_ids.map((id) => d.push(id));
    let at = 0;
    let stop = '';
    for (let i = 4; i < pieces.length - 1; i++) {
      if (pieces[i].length >= 2 && pieces[i + 1].length >= 3) {
        at = pieces.slice(0, i + 1).join('').length;
        stop = pieces[i].slice(-2) + pieces[i + 1].slice(0, 3);
        break;
      }
    }
    expect(stop.length).toBe(5);
    const want = g.generated_text.slice(0, g.generated_text.indexOf(stop));
    expect(want.length).toBeLessThanOrEqual(at - 2);
    const [r, multi] = await call('generateRuns', {
      key: 'stories',
      runs: [
        { prompt: g.prompt, opts: { maxNewTokens: 48, ignoreEos: true, stop } },
        { prompt: g.prompt, opts: { maxNewTokens: 48, ignoreEos: true, stop: ['no such text', stop, 'zzzz'] } },
      ],
    });
    expect(r.finishReason).toBe('stop');
    expect(r.stopString).toBe(stop);
    expect(r.text).toBe(want);
    expect(r.pieces.join('')).toBe(want);
    expect(r.tokenIds).toEqual(g.generated_ids.slice(0, r.tokenIds.length));
    expect(multi.text).toBe(want);
  });

  it('the KV cache is reused: a continuation recomputes only the new tokens, with the same output', async () => {
    const g = golden.prompts[2];
    const [a] = await call('generateRuns', { key: 'stories', runs: [{ prompt: g.prompt, opts: { maxNewTokens: 8, ignoreEos: true } }] });
    expect(a.tokenIds).toEqual(g.generated_ids.slice(0, 8));
    const next = [...g.hf_input_ids, ...a.tokenIds];
    const [b, other, fresh] = await call('generateRuns', {
      key: 'stories',
      runs: [
        { opts: { promptIds: next, maxNewTokens: 8, ignoreEos: true } },
        { prompt: 'Zoo', opts: { maxNewTokens: 2 } },
        { opts: { promptIds: next, maxNewTokens: 8, ignoreEos: true } },
      ],
    });
    // the last generated token was never fed back, so it (alone) is recomputed
    expect(b.cachedPromptTokens).toBe(next.length - 1);
    expect(b.tokenIds).toEqual(g.generated_ids.slice(8, 16));
    expect(other.cachedPromptTokens).toBe(1); // shares only BOS
    expect(fresh.cachedPromptTokens).toBe(1);
    expect(fresh.tokenIds).toEqual(b.tokenIds);
    // the same prompt again: everything cached but the last token (its logits are needed)
    const [c] = await call('generateRuns', { key: 'stories', runs: [{ opts: { promptIds: next, maxNewTokens: 1, ignoreEos: true } }] });
    expect(c.cachedPromptTokens).toBe(next.length - 1);
  });

  it("the context length ends generation with 'length'; a longer prompt is context-overflow; abort stops", async () => {
    await call('loadEngine', { key: 'small', model: '/models/stories260K', load: { contextLength: 24 } });
    try {
      const long = golden.prompts[0].hf_input_ids.concat(golden.prompts[0].generated_ids).slice(0, 30);
      const [full, over, aborted] = await call('generateRuns', {
        key: 'small',
        runs: [
          { opts: { promptIds: long.slice(0, 10), maxNewTokens: 100, ignoreEos: true } },
          { opts: { promptIds: long, maxNewTokens: 4 } },
          { opts: { promptIds: long.slice(0, 5), maxNewTokens: 12, ignoreEos: true }, abortAfter: 2 },
        ],
      });
      expect(full.finishReason).toBe('length');
      expect(full.promptTokenIds.length + full.tokenIds.length).toBe(24);
      expect(over.error?.code).toBe('context-overflow');
      expect(aborted.finishReason).toBe('abort');
      expect(aborted.tokenIds.length).toBeLessThan(12);
    } finally {
      await call('disposeEngine', { key: 'small' });
    }
  });
});

// Qwen2-Instruct's ChatML template, written into a copy of stories260K
const CHATML =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

describe('OpenAI-style API', () => {
  it('chat on a model without a chat template is a no-chat-template error; completions work', async () => {
    const [chat, comp, stream] = await call('openaiRuns', {
      key: 'stories',
      requests: [
        { kind: 'chat', req: { messages: [{ role: 'user', content: 'Hi' }] } },
        { kind: 'completion', req: { prompt: 'Once upon a time', max_tokens: 6, temperature: 0 } },
        { kind: 'completion', req: { prompt: 'Once upon a time', max_tokens: 6, temperature: 0, stream: true } },
      ],
    });
    expect(chat.error?.code).toBe('no-chat-template');
    expect(chat.error?.message).toMatch(/chat template/);
    const c = comp.response as Record<string, any>;
    expect(c.object).toBe('text_completion');
    expect(c.id).toMatch(/^cmpl-/);
    expect(c.choices).toHaveLength(1);
    expect(c.choices[0]).toMatchObject({ index: 0, logprobs: null, finish_reason: 'length' });
    const g = golden.prompts[2];
    expect(g.prompt).toBe('Once upon a time');
    expect(g.generated_text.startsWith(c.choices[0].text)).toBe(true);
    const n = g.hf_input_ids.length;
    expect(c.usage).toEqual({ prompt_tokens: n, completion_tokens: 6, total_tokens: n + 6, prompt_tokens_details: { cached_tokens: expect.any(Number) } });
    expect(c.timings.prefillMs).toBeGreaterThan(0);
    const chunks = stream.chunks as Array<Record<string, any>>;
    expect(chunks.map((k) => k.choices[0].text).join('')).toBe(c.choices[0].text);
    expect(chunks.at(-1)!.choices[0].finish_reason).toBe('length');
    expect(chunks.at(-1)!.usage.completion_tokens).toBe(6);
    for (const k of chunks.slice(0, -1)) expect(k.choices[0].finish_reason).toBeNull();
  });

  describe('with a ChatML template', () => {
    beforeAll(async () => {
      modelVariant('chatml-stories', (d) =>
        editJson(join(d, 'tokenizer_config.json'), (j) => {
          j.chat_template = CHATML;
        }),
      );
      await call('loadEngine', { key: 'chat', model: '/cache/test-models/chatml-stories' });
    });
    afterAll(async () => {
      await call('disposeEngine', { key: 'chat' });
    });

    it('chat.completion and chat.completion.chunk shapes, usage, timings; streaming = non-streaming', async () => {
      const messages = [{ role: 'user', content: 'Tell me a story about a cat.' }];
      const rendered = await call('renderChat', { key: 'chat', messages });
      expect(rendered.text).toBe('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nTell me a story about a cat.<|im_end|>\n<|im_start|>assistant\n');
      const promptTokens = tok.encode(rendered.text!, false).length;
      const [full, streamed] = await call('openaiRuns', {
        key: 'chat',
        requests: [
          { kind: 'chat', req: { messages, max_tokens: 12, temperature: 0.8, top_p: 0.9, seed: 5 } },
          { kind: 'chat', req: { messages, max_tokens: 12, temperature: 0.8, top_p: 0.9, seed: 5, stream: true } },
        ],
      });
      expect(full.error).toBeNull();
      const r = full.response as Record<string, any>;
      expect(r).toMatchObject({ object: 'chat.completion', model: '/cache/test-models/chatml-stories', seed: 5 });
      expect(r.id).toMatch(/^chatcmpl-/);
      expect(Number.isInteger(r.created)).toBe(true);
      expect(typeof r.system_fingerprint).toBe('string');
      expect(r.choices).toHaveLength(1);
      expect(r.choices[0].message.role).toBe('assistant');
      expect(typeof r.choices[0].message.content).toBe('string');
      expect(['stop', 'length']).toContain(r.choices[0].finish_reason);
      expect(r.usage.prompt_tokens).toBe(promptTokens);
      expect(r.usage.total_tokens).toBe(r.usage.prompt_tokens + r.usage.completion_tokens);
      expect(r.usage.completion_tokens).toBeLessThanOrEqual(12);
      for (const k of ['loadMs', 'prefillMs', 'decodeMs', 'decodeTokensPerSecond', 'prefillTokensPerSecond']) expect(typeof r.timings[k]).toBe('number');

      const chunks = streamed.chunks as Array<Record<string, any>>;
      expect(chunks.length).toBeGreaterThanOrEqual(3);
      for (const k of chunks) {
        expect(k.object).toBe('chat.completion.chunk');
        expect(k.id).toBe(chunks[0].id);
        expect(k.created).toBe(chunks[0].created);
        expect(k.choices).toHaveLength(1);
        expect(k.choices[0].index).toBe(0);
      }
      expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
      const last = chunks.at(-1)!;
      expect(last.choices[0].delta).toEqual({});
      expect(last.choices[0].finish_reason).toBe(r.choices[0].finish_reason);
      expect(last.usage.prompt_tokens).toBe(r.usage.prompt_tokens);
      expect(last.usage.completion_tokens).toBe(r.usage.completion_tokens);
      expect(last.timings).toBeDefined();
      for (const k of chunks.slice(0, -1)) {
        expect(k.usage).toBeNull();
        expect(k.choices[0].finish_reason).toBeNull();
      }
      expect(chunks.map((k) => k.choices[0].delta.content ?? '').join('')).toBe(r.choices[0].message.content);
    });

    it('a second turn reuses the first turn\'s KV cache; stop and max_tokens map to finish_reason', async () => {
      const turn1 = [{ role: 'user', content: 'Hi there.' }];
      const [a] = await call('openaiRuns', { key: 'chat', requests: [{ kind: 'chat', req: { messages: turn1, max_tokens: 8, temperature: 0 } }] });
      const r1 = a.response as Record<string, any>;
      const turn2 = [...turn1, { role: 'assistant', content: r1.choices[0].message.content }, { role: 'user', content: 'And then?' }];
      const [b, stopped] = await call('openaiRuns', {
        key: 'chat',
        requests: [
          { kind: 'chat', req: { messages: turn2, max_tokens: 8, temperature: 0 } },
          { kind: 'chat', req: { messages: turn2, max_tokens: 40, temperature: 0, stop: [' '] } },
        ],
      });
      const r2 = b.response as Record<string, any>;
      // (the reply re-tokenized inside the longer text may differ at its very first tokens)
      expect(r2.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(r1.usage.prompt_tokens - 2);
      expect(r2.usage.prompt_tokens - r2.usage.prompt_tokens_details.cached_tokens).toBeLessThan(r2.usage.prompt_tokens - r1.usage.prompt_tokens);
      expect(r2.choices[0].finish_reason).toBe('length');
      const s = stopped.response as Record<string, any>;
      expect(s.choices[0].finish_reason).toBe('stop');
      expect(s.choices[0].message.content).not.toContain(' ');
      // the same conversation again: all of it is cached (but the last token)
      expect(s.usage.prompt_tokens_details.cached_tokens).toBe(s.usage.prompt_tokens - 1);
    });
  });
});
