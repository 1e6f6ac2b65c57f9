import type { FormatName } from '../../src/quant/plan.ts';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { editJson, modelVariant } from '../helpers/model-variants.ts';
import type { WorkerHarnessApi } from './harness-worker.ts';

/**
 * WorkerEngine (`nibble/worker`): the Engine API with the engine in a dedicated worker, driven from
 * test/browser/harness-worker.html, a page that imports only WorkerEngine. stories260K loads with
 * progress events on the page and reproduces golden.json's greedy tokens, streamed; an abort
 * mid-stream ends the generation and the engine goes on; errors cross back as NibbleErrors with
 * their codes (not-found, aborted, bad-argument, no-chat-template, a worker that does not start);
 * chat.completions.create streams chunks; several engines share a page-made Worker; the built
 * dist/worker.js runs too. The page's navigator.gpu is spied on from before any script runs: the
 * page never asks for an adapter or device, and never fetches model files or engine modules.
 */
const golden = JSON.parse(readFileSync(join(modelsDir(), 'stories260K', 'golden.json'), 'utf8')) as {
  prompts: Array<{ prompt: string; hf_input_ids: number[]; generated_ids: number[]; generated_text: string }>;
};
const MODEL = '/models/stories260K';

// Qwen2-Instruct's ChatML template, written into a copy of stories260K (as in chat.test.ts)
const CHATML =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

type Api = WorkerHarnessApi;
let browser: Browser;
let page: Page;
const logs: string[] = [];

/** Spies on the page's WebGPU entry points; runs before any script of the page. */
function installGpuSpy() {
  const w = globalThis as unknown as { __gpuCalls: string[] };
  w.__gpuCalls = [];
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (gpu) {
    const requestAdapter = gpu.requestAdapter.bind(gpu);
    gpu.requestAdapter = (o?: GPURequestAdapterOptions) => {
      w.__gpuCalls.push('requestAdapter');
      return requestAdapter(o);
    };
  }
  const A = (globalThis as { GPUAdapter?: { prototype: GPUAdapter } }).GPUAdapter;
  if (A) {
    const requestDevice = A.prototype.requestDevice;
    A.prototype.requestDevice = function (this: GPUAdapter, d?: GPUDeviceDescriptor) {
      w.__gpuCalls.push('requestDevice');
      return requestDevice.call(this, d);
    };
  }
}

async function call<K extends keyof Api>(name: K, arg: Parameters<Api[K]>[0]): Promise<Awaited<ReturnType<Api[K]>>> {
  try {
    return (await page.evaluate((n, a) => (globalThis as unknown as { nibbleWorkerTest: Record<string, (x: unknown) => unknown> }).nibbleWorkerTest[n](a), name, arg as never)) as never;
  } catch (e) {
    throw new Error(`${String(name)} failed in the page: ${(e as Error).message}\n${logs.slice(-20).join('\n')}`);
  }
}

beforeAll(async () => {
  browser = await puppeteer.connect({ browserWSEndpoint: inject('wsEndpoint'), protocolTimeout: 0 });
  page = await browser.newPage();
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${String(e)}`));
  await page.evaluateOnNewDocument(installGpuSpy);
  await page.goto(`${inject('viteUrl')}/test/browser/harness-worker.html`);
  await page.waitForFunction(() => (globalThis as { nibbleWorkerTest?: unknown }).nibbleWorkerTest !== undefined, { timeout: 120_000 });
});
afterAll(async () => {
  await page?.close();
  await browser?.disconnect();
});

describe('WorkerEngine on stories260K', () => {
  it('loads in the worker with progress events on the page', async () => {
    const r = await call('load', { key: 'stories', model: MODEL });
    expect(r.isWorkerEngine).toBe(true);
    expect(r.workerIsWorker).toBe(true);
    expect(r.info.config.numKvHeads).toBe(4);
    expect(r.info.quantKey).toBe('f32');
    expect(r.info.weightBytes).toBeGreaterThan(0);
    const phases = new Set(r.progress.map((p) => p.phase));
    expect(phases.has('weights')).toBe(true);
    const last = r.progress.at(-1)!;
    expect(last.tensorsDone).toBe(last.tensorsTotal);
    expect(last.tensorsTotal).toBeGreaterThan(0);
  });

  it('reproduces golden.json: prompt ids, 48 greedy tokens, text, streamed in pieces', async () => {
    const results = await call('generate', { key: 'stories', prompts: golden.prompts.map((p) => p.prompt), opts: { maxNewTokens: 48, ignoreEos: true } });
    expect(results).toHaveLength(golden.prompts.length);
    golden.prompts.forEach((g, i) => {
      const r = results[i];
      expect(r.promptTokenIds, `prompt ids of ${JSON.stringify(g.prompt)}`).toEqual(g.hf_input_ids);
      expect(r.tokenIds, `generated ids of ${JSON.stringify(g.prompt)}`).toEqual(g.generated_ids);
      expect(r.text).toBe(g.generated_text);
      expect(r.pieces.join('')).toBe(g.generated_text);
      expect(r.pieces.length).toBeGreaterThan(10); // streamed as it was produced, not in one message
      expect(r.finishReason).toBe('length');
      expect(r.timings.decodeTokensPerSecond).toBeGreaterThan(0);
    });
  });

  it('an abort mid-stream ends the generation (finishReason abort); the engine goes on, correct', async () => {
    const [a, b] = golden.prompts;
    const r = await call('abortMidStream', { key: 'stories', prompt: a.prompt, afterPieces: 3, next: { prompt: b.prompt, opts: { maxNewTokens: 48, ignoreEos: true } } });
    expect(r.error).toBeNull();
    expect(r.iterError).toBeNull();
    expect(r.finishReason).toBe('abort');
    expect(r.pieces).toBeGreaterThanOrEqual(3);
    expect(r.tokens).toBeGreaterThanOrEqual(3);
    expect(r.tokens).toBeLessThan(400);
    expect(r.preError).toBeNull();
    expect(r.preFinish).toBe('abort');
    expect(r.preTokens).toBeLessThan(400);
    expect(r.after.tokenIds).toEqual(b.generated_ids);
    expect(r.after.finishReason).toBe('length');
  });

  it('tokenizer and perplexity calls run in the worker; optimized resolves', async () => {
    const g = golden.prompts[0];
    const r = await call('tokens', { key: 'stories', text: g.prompt, pplText: g.prompt + g.generated_text });
    expect(r.optimized).toBe('resolved');
    expect(r.ids).toEqual(g.hf_input_ids);
    expect(r.text).toBe(g.prompt);
    expect(r.perplexity.tokens).toBeGreaterThan(40);
    expect(r.perplexity.perplexity).toBeGreaterThan(1);
  });
});

describe('errors cross the worker boundary with their code', () => {
  it('a model path that does not exist is not-found', async () => {
    const e = await call('loadError', { model: '/models/no-such-model' });
    expect(e).not.toBeNull();
    expect(e!.code).toBe('not-found');
    expect(e!.name).toBe('NibbleError');
    expect(e!.isNibbleError).toBe(true);
    expect(e!.message).toMatch(/config\.json/);
  });

  it('an aborted load is aborted; options that cannot cross are bad-argument', async () => {
    const aborted = await call('loadError', { model: MODEL, abort: true });
    expect(aborted?.code).toBe('aborted');
    expect(aborted?.isNibbleError).toBe(true);
    const cache = await call('loadError', { model: MODEL, load: { cache: { some: 'object' } as never } });
    expect(cache?.code).toBe('bad-argument');
    expect(cache?.message).toMatch(/cache/);
    const badQuant = await call('loadError', { model: MODEL, load: { quant: 'q3' as FormatName } });
    expect(badQuant?.code).toBe('bad-argument');
    expect(badQuant?.message).toMatch(/q3/);
  });

  it('a worker script that does not load is an error, not a hang', async () => {
    const e = await call('loadError', { model: MODEL, load: { worker: '/no/such/worker.js' } });
    expect(e?.code).toBe('network');
    expect(e?.message).toMatch(/worker/);
  });

  it("generate's argument checks in the worker come back as bad-argument", async () => {
    const r = await call('generateError', { key: 'stories', prompt: 'Hi', opts: { maxNewTokens: '5' } });
    expect(r.result?.code).toBe('bad-argument');
    expect(r.result?.message).toMatch(/maxNewTokens/);
    expect(r.result?.isNibbleError).toBe(true);
    expect(r.iterError?.code).toBe('bad-argument');
  });
});

describe('chat.completions.create through the worker', () => {
  it('without a chat template: no-chat-template', async () => {
    const r = await call('chat', { key: 'stories', req: { messages: [{ role: 'user', content: 'Hi' }], stream: true } });
    expect(r.error?.code).toBe('no-chat-template');
    expect(r.error?.isNibbleError).toBe(true);
  });

  it('with a ChatML template: streamed chunks add up to the non-streamed reply; abort ends a stream', async () => {
    modelVariant('worker-chatml-stories', (d) =>
      editJson(join(d, 'tokenizer_config.json'), (j) => {
        j.chat_template = CHATML;
      }),
    );
    await call('load', { key: 'chat', model: '/cache/test-models/worker-chatml-stories' });
    const req = { messages: [{ role: 'user', content: 'Tell me a story about a cat.' }], max_tokens: 12, temperature: 0 };
    const full = await call('chat', { key: 'chat', req });
    expect(full.error).toBeNull();
    const resp = full.response as Record<string, any>;
    expect(resp.object).toBe('chat.completion');
    const streamed = await call('chat', { key: 'chat', req: { ...req, stream: true } });
    expect(streamed.error).toBeNull();
    const chunks = streamed.chunks as Array<Record<string, any>>;
    expect(chunks.length).toBeGreaterThan(2);
    for (const c of chunks) expect(c.object).toBe('chat.completion.chunk');
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    expect(content).toBe(resp.choices[0].message.content);
    const last = chunks.at(-1)!;
    expect(last.choices[0].finish_reason).toBe(resp.choices[0].finish_reason);
    expect(last.usage.prompt_tokens).toBe(resp.usage.prompt_tokens);
    expect(last.usage.completion_tokens).toBe(resp.usage.completion_tokens);

    const aborted = await call('chat', { key: 'chat', req: { ...req, max_tokens: 300, stream: true }, abortAfterChunks: 3 });
    expect(aborted.error?.code).toBe('aborted');
    expect(aborted.chunks!.length).toBeLessThan(300);
  });
});

describe('worker lifecycle', () => {
  it('engines on a Worker the page made share it; dispose() leaves that worker running', async () => {
    const g = golden.prompts[2];
    const r = await call('sharedWorker', { model: MODEL, prompt: g.prompt, maxNewTokens: 16 });
    expect(r.x).toEqual(g.generated_ids.slice(0, 16));
    expect(r.z).toEqual(g.generated_ids.slice(0, 16));
    expect(r.y2).toEqual(r.y);
    expect(r.yQuant).toBe('int8');
  });

  it('dispose() ends a running call with aborted; later calls are bad-argument', async () => {
    await call('dispose', { key: 'chat' });
    const r = await call('dispose', { key: 'stories' });
    expect(r.pieces).toBeGreaterThanOrEqual(2);
    expect(r.running?.code).toBe('aborted');
    expect(r.iterError?.code).toBe('aborted');
    expect(r.later?.code).toBe('bad-argument');
    expect(r.later?.message).toMatch(/disposed/);
  });

  it('the built package (dist/worker.js + dist/nibble-worker.js) runs the golden test', async () => {
    for (const f of ['dist/worker.js', 'dist/nibble-worker.js']) {
      if (!existsSync(join(repoRoot(), f))) throw new Error(`${f} is missing: run \`npm run build\` before this test`);
    }
    const src = readFileSync(join(repoRoot(), 'dist', 'worker.js'), 'utf8');
    // the pattern an app's bundler recognizes and follows into the worker's module graph
    expect(src).toMatch(/new Worker\(new URL\("\.\/nibble-worker\.js", import\.meta\.url\), \{\s*type: "module"/);
    const r = await call('load', { key: 'bundle', model: MODEL, bundle: true });
    expect(r.isWorkerEngine).toBe(true);
    const g = golden.prompts[0];
    const [res] = await call('generate', { key: 'bundle', prompts: [g.prompt], opts: { maxNewTokens: 48, ignoreEos: true } });
    expect(res.tokenIds).toEqual(g.generated_ids);
    expect(res.pieces.join('')).toBe(g.generated_text);
    const e = await call('loadError', { model: '/models/no-such-model' });
    expect(e?.code).toBe('not-found');
  });
});

describe('the page thread', () => {
  it('never requested a GPU adapter or device, fetched no model file and ran no engine code', async () => {
    const r = await call('pageActivity', undefined);
    expect(r.spyInstalled).toBe(true);
    expect(r.gpuCalls).toEqual([]);
    // the page's own modules are listed (Chromium also lists the workers' module graphs here, which
    // a module worker's parent fetches for it), but no model file: the workers fetched those
    const paths = r.resources.map((x) => x.path);
    expect(paths).toContain('/src/worker/client.ts');
    expect(paths.filter((p) => p.startsWith('/models/') || p.startsWith('/cache/'))).toEqual([]);
    // the scripts compiled in the page's own JavaScript context (workers are targets of their own):
    // WorkerEngine's modules, no kernels, model, loader, tokenizer or engine code
    const cdp = await page.createCDPSession();
    const scripts: string[] = [];
    cdp.on('Debugger.scriptParsed', (e) => {
      if (e.url) scripts.push(new URL(e.url).pathname);
    });
    await cdp.send('Debugger.enable');
    await cdp.send('Debugger.disable');
    await cdp.detach();
    expect(scripts).toContain('/src/worker/client.ts');
    expect(scripts).toContain('/dist/worker.js'); // the bundle test's page side
    const engineCode = scripts.filter((p) => /\/src\/(kernels|model|loader|quant|generate|gpu|api|cache|source)\/|\/src\/tokenizer\.ts|\/src\/worker\/(host|worker)\.ts|huggingface|\/dist\/(engine|nibble-worker|nibble)[-.]/.test(p));
    expect(engineCode).toEqual([]);
    // the spy does see page-side calls
    expect(await call('probeSpy', undefined)).toContain('requestAdapter');
  });
});
