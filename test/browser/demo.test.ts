import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import puppeteer, { type Browser, type Page, type WebWorker } from 'puppeteer-core';
import { copyFileSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { startHubServer, type HubServer } from '../../src/node/hub-server.ts';
import { editJson } from '../helpers/model-variants.ts';

/**
 * The chat demo (demo/index.html on the Vite dev server), driven as a person would: stories260K is
 * served by a local Hub mirror (`?hub=`), loads with a visible progress bar, chats in raw mode to
 * golden.json's greedy continuation, Stop stops a reply, a reload loads from the browser cache
 * (the mirror serves no weight bytes the second time), Clear empties the cache, and a copy of
 * stories260K with a ChatML chat template renders user / assistant turns. Everything runs under
 * the demo's Content-Security-Policy (`script-src 'self'`, sent by the dev server for the page and
 * its worker) with no violation. Screenshots (desktop and phone width) go to test-artifacts/.
 */
const golden = JSON.parse(readFileSync(join(modelsDir(), 'stories260K', 'golden.json'), 'utf8')) as {
  prompts: Array<{ prompt: string; generated_ids: number[]; generated_text: string }>;
};
const once = golden.prompts.find((p) => p.prompt === 'Once upon a time')!;

// Qwen2-Instruct's ChatML template (as in chat.test.ts / worker.test.ts)
const CHATML =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const ARTIFACTS = resolve(repoRoot(), 'test-artifacts');
const CSP = "script-src 'self'";

let browser: Browser;
let page: Page;
let hub: HubServer;
let mirrorDir: string;
const logs: string[] = [];
const workers: WebWorker[] = [];
const cspMessages: string[] = [];

/** A Hub mirror folder in a temp dir: org/stories260K (hard links) and org/chatml260K (its ChatML copy). */
function makeMirror(): string {
  const dir = mkdtempSync(join(tmpdir(), 'nibble-demo-hub-'));
  const src = join(modelsDir(), 'stories260K');
  for (const name of ['stories260K', 'chatml260K']) {
    const to = join(dir, 'org', name);
    mkdirSync(to, { recursive: true });
    for (const f of readdirSync(src)) {
      if (name === 'chatml260K' && f === 'tokenizer_config.json') copyFileSync(join(src, f), join(to, f));
      else {
        try {
          linkSync(join(src, f), join(to, f));
        } catch {
          copyFileSync(join(src, f), join(to, f));
        }
      }
    }
  }
  editJson(join(dir, 'org', 'chatml260K', 'tokenizer_config.json'), (j) => {
    j.chat_template = CHATML;
  });
  return dir;
}

/** Range GETs of weight bytes (past the safetensors header) the mirror served. */
const STORIES_DATA_START = (() => {
  const b = readFileSync(join(modelsDir(), 'stories260K', 'model.safetensors'));
  return 8 + Number(b.readBigUInt64LE(0));
})();
const weightGets = () =>
  hub.requests.filter((r) => {
    if (r.method !== 'GET' || !r.path.endsWith('.safetensors')) return false;
    const m = /bytes=(\d+)-(\d*)/.exec(r.range ?? '');
    if (!m) return true;
    return Number(m[2] || Infinity) >= STORIES_DATA_START;
  });

function recordCsp(p: Page): void {
  p.on('console', (m) => {
    logs.push(`${m.type()}: ${m.text()}`);
    if (/Content Security Policy/i.test(m.text())) cspMessages.push(m.text());
  });
  p.on('pageerror', (e) => logs.push(`pageerror: ${String(e)}`));
  p.on('response', (r) => {
    if (r.status() >= 400) logs.push(`HTTP ${r.status()} ${r.url()}`);
  });
  p.on('workercreated', (w) => {
    workers.push(w);
    w.on('console', (m) => {
      logs.push(`worker ${m.type()}: ${m.text()}`);
      if (/Content Security Policy/i.test(m.text())) cspMessages.push(`worker: ${m.text()}`);
    });
    // violations inside the worker fire on its global scope
    void w
      .evaluate(() => {
        const g = globalThis as unknown as { __csp: string[] };
        g.__csp = [];
        globalThis.addEventListener('securitypolicyviolation', (e) => g.__csp.push(`${(e as SecurityPolicyViolationEvent).violatedDirective} ${(e as SecurityPolicyViolationEvent).blockedURI}`));
      })
      .catch(() => {});
  });
}

function installViolationListener() {
  const g = globalThis as unknown as { __csp: string[] };
  g.__csp = [];
  document.addEventListener('securitypolicyviolation', (e) => g.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
}

async function openDemo(p: Page, query = `?hub=${encodeURIComponent(hub.url)}`): Promise<void> {
  const res = await p.goto(`${inject('viteUrl')}/demo/${query}`);
  expect(res?.headers()['content-security-policy']).toBe(CSP);
  await p.waitForSelector('body[data-ready]', { timeout: 60_000 }).catch((e: Error) => {
    throw new Error(`the demo did not start: ${e.message}\n${logs.slice(-30).join('\n')}`);
  });
}

async function setValue(selector: string, value: string): Promise<void> {
  await page.$eval(
    selector,
    (el, v) => {
      const e = el as HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
      e.value = v;
      e.dispatchEvent(new Event('input', { bubbles: true }));
      e.dispatchEvent(new Event('change', { bubbles: true }));
    },
    value,
  );
}

const text = (selector: string) => page.$eval(selector, (e) => e.textContent ?? '');

async function loadHub(id: string, format = 'f32'): Promise<void> {
  await page.click('#hub-id', { count: 3 });
  await page.type('#hub-id', id);
  await setValue('#format', format);
  expect(await page.$eval('#src-hub', (e) => (e as HTMLInputElement).checked)).toBe(true);
  await page.click('#load');
  // the progress bar shows as soon as the load starts
  await page.waitForSelector('#load-progress', { visible: true, timeout: 10_000 });
  await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('load-progress')!.dataset.state ?? ''), { timeout: 180_000 });
  const state = await page.$eval('#load-progress', (e) => (e as HTMLElement).dataset.state);
  if (state !== 'done') throw new Error(`load failed: ${await text('#status')}\n${logs.slice(-20).join('\n')}`);
}

/** Sends a message with Enter; resolves with the assistant bubble's state once the reply ended. */
async function sendMessage(message: string): Promise<void> {
  const before = await page.$$eval('#messages li.assistant', (l) => l.length);
  await page.focus('#input');
  await page.keyboard.type(message);
  await page.keyboard.press('Enter');
  await page.waitForFunction((n) => document.querySelectorAll('#messages li.assistant').length > n, {}, before);
}

async function waitReplyEnded(): Promise<{ text: string; state: string; tokens: number; finish: string; stats: string; decodeTps: number }> {
  await page.waitForFunction(() => {
    const li = [...document.querySelectorAll<HTMLElement>('#messages li.assistant')].pop();
    return li && li.dataset.state !== 'streaming';
  }, { timeout: 180_000 });
  return page.$eval('#messages li.assistant:last-of-type', (li) => {
    const e = li as HTMLElement;
    return {
      text: e.querySelector('.text')!.textContent ?? '',
      state: e.dataset.state ?? '',
      tokens: Number(e.dataset.tokens ?? NaN),
      finish: e.dataset.finish ?? '',
      stats: e.querySelector('.stats')?.textContent ?? '',
      decodeTps: Number(e.dataset.decodeTps ?? NaN),
    };
  });
}

async function cacheEntries(): Promise<string[]> {
  await page.click('#cache-refresh');
  await new Promise((r) => setTimeout(r, 300));
  return page.$$eval('#cache-list li', (l) => l.map((e) => e.textContent ?? ''));
}

async function screenshot(name: string, p: Page = page): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const [label, viewport] of [
    ['desktop', { width: 1280, height: 900 }],
    // (isMobile / hasTouch would make puppeteer reload the page, and lose the engine)
    ['phone', { width: 390, height: 844, deviceScaleFactor: 2 }],
  ] as const) {
    await p.setViewport(viewport);
    await new Promise((r) => setTimeout(r, 200));
    await p.screenshot({ path: join(ARTIFACTS, `demo-${name}-${label}.png`) as `${string}.png`, fullPage: true });
  }
  await p.setViewport({ width: 1280, height: 900 });
}

beforeAll(async () => {
  mirrorDir = makeMirror();
  hub = await startHubServer({ dir: mirrorDir });
  browser = await puppeteer.connect({ browserWSEndpoint: inject('wsEndpoint'), protocolTimeout: 0 });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  recordCsp(page);
  await page.evaluateOnNewDocument(installViolationListener);
  await openDemo(page);
  // start from an empty cache (the browser profile is shared by the test run)
  await page.click('#cache-clear').catch(() => {});
  await page.waitForFunction(() => document.querySelectorAll('#cache-list li').length === 0);
}, 180_000);

afterAll(async () => {
  await page?.close();
  await browser?.disconnect();
  await hub?.close();
  if (mirrorDir) rmSync(mirrorDir, { recursive: true, force: true });
});

describe('chat demo', () => {
  it('loads stories260K from the Hub mirror with a visible progress bar, from the network', async () => {
    expect(await page.$eval('body', (b) => b.dataset.ready)).toBe('yes');
    expect(await text('#hub-endpoint')).toContain(hub.url);
    expect(await text('#gpu-info')).toMatch(/WebGPU adapter/);
    hub.resetStats();
    await loadHub('org/stories260K');
    const p = await page.$eval('#load-progress', (e) => ({ from: (e as HTMLElement).dataset.from, phases: (e as HTMLElement).dataset.phases, value: (e.querySelector('progress') as HTMLProgressElement).value }));
    expect(p.from).toBe('network');
    expect(p.value).toBe(1);
    expect(p.phases!.split(' ')).toEqual(expect.arrayContaining(['metadata', 'weights', 'quantize', 'done']));
    expect(await text('#progress-text')).toMatch(/Loaded from the network/);
    expect(weightGets().length).toBeGreaterThan(0);
    expect(await text('#model-info')).toMatch(/8 layers|layers/);
    expect(await text('#gpu-info')).toMatch(/WebGPU adapter \(worker\)/);
  });

  it('chats in raw mode: the shown reply is golden.json greedy continuation, with token counts and tok/s', async () => {
    await setValue('#mode', 'raw');
    expect(await page.$eval('#system-row', (e) => (e as HTMLElement).hidden)).toBe(true);
    await setValue('#temperature', '0');
    await setValue('#max-tokens', String(once.generated_ids.length));
    await sendMessage(once.prompt);
    const r = await waitReplyEnded();
    expect(r.state).toBe('done');
    expect(r.text).toBe(once.generated_text);
    expect(r.tokens).toBe(once.generated_ids.length);
    expect(r.finish).toBe('stopped at max tokens');
    expect(r.decodeTps).toBeGreaterThan(0);
    expect(r.stats).toMatch(/48 tokens · decode [\d.]+ tok\/s · prompt \d+ tokens.*prefill [\d.]+ tok\/s/);
    expect(await page.$$eval('#messages li.user .text', (l) => l.map((e) => e.textContent))).toEqual([once.prompt]);
    await screenshot('raw');
  });

  it('Shift+Enter adds a line, Enter sends; model and user text are never HTML', async () => {
    await page.click('#new-chat');
    expect(await page.$$eval('#messages li', (l) => l.length)).toBe(0);
    await page.focus('#input');
    await page.keyboard.type('<img src=x id=injected>');
    await page.keyboard.down('Shift');
    await page.keyboard.press('Enter');
    await page.keyboard.up('Shift');
    await page.keyboard.type('Lily');
    expect(await page.$eval('#input', (e) => (e as HTMLTextAreaElement).value)).toBe('<img src=x id=injected>\nLily');
    expect(await page.$$eval('#messages li', (l) => l.length)).toBe(0);
    await setValue('#max-tokens', '8');
    await page.keyboard.press('Enter');
    const r = await waitReplyEnded();
    expect(r.state).toBe('done');
    expect(await page.$eval('#messages li.user .text', (e) => e.textContent)).toBe('<img src=x id=injected>\nLily');
    expect(await page.$('#injected')).toBeNull();
    expect(await page.$$eval('#messages img', (l) => l.length)).toBe(0);
  });

  it('Stop stops a reply; the engine goes on', async () => {
    await page.click('#new-chat');
    await setValue('#max-tokens', '400');
    await sendMessage('The dog');
    await page.waitForFunction(() => ([...document.querySelectorAll('#messages li.assistant .text')].pop()?.textContent ?? '').length > 0, { timeout: 60_000, polling: 'mutation' });
    await page.click('#stop');
    const r = await waitReplyEnded();
    expect(r.state).toBe('stopped');
    expect(r.finish).toBe('stopped');
    expect(r.tokens).toBeLessThan(400);
    expect(r.text.length).toBeGreaterThan(0);
    expect(await page.$eval('#stop', (e) => (e as HTMLButtonElement).disabled)).toBe(true);
    // and the next message runs to its end
    await setValue('#max-tokens', '4');
    await sendMessage(' He');
    expect((await waitReplyEnded()).state).toBe('done');
  });

  it('the cache panel lists the model with its size; a reload loads from the cache (no weight bytes served)', async () => {
    const listed = await cacheEntries();
    expect(listed.length).toBe(1);
    expect(listed[0]).toMatch(/stories260K.*\d+(\.\d+)? (KiB|MiB)/);
    await page.reload();
    await page.waitForSelector('body[data-ready]', { timeout: 120_000 });
    hub.resetStats();
    await loadHub('org/stories260K');
    const p = await page.$eval('#load-progress', (e) => ({ from: (e as HTMLElement).dataset.from, phases: (e as HTMLElement).dataset.phases }));
    expect(p.from).toBe('cache');
    expect(p.phases!.split(' ')).toContain('cache');
    expect(p.phases!.split(' ')).not.toContain('weights');
    expect(await text('#progress-text')).toMatch(/from the browser cache/);
    expect(weightGets()).toEqual([]);
    expect(hub.requests.length).toBeGreaterThan(0); // metadata still came from the mirror
    // and it still gives the golden reply
    await setValue('#mode', 'raw');
    await setValue('#temperature', '0');
    await setValue('#max-tokens', '16');
    await sendMessage(once.prompt);
    const r = await waitReplyEnded();
    expect(once.generated_text.startsWith(r.text)).toBe(true);
    expect(r.tokens).toBe(16);
  });

  it('Clear empties the cache panel', async () => {
    await page.click('#cache-clear');
    await page.waitForFunction(() => document.querySelectorAll('#cache-list li').length === 0);
    expect(await text('#cache-total')).toMatch(/Nothing cached/);
    expect(await cacheEntries()).toEqual([]);
  });

  it('a picked local folder loads (no cache) and chats', async () => {
    const dir = join(modelsDir(), 'stories260K');
    // a directory path: Chromium fills a webkitdirectory input with the folder's files (webkitRelativePath stories260K/…)
    const input = await page.$('#folder');
    await (input as unknown as { uploadFile: (...p: string[]) => Promise<void> }).uploadFile(dir);
    await page.waitForFunction(() => (document.getElementById('src-folder') as HTMLInputElement).checked, { timeout: 10_000 });
    expect(await page.$eval('#catalogue', (e) => (e as HTMLSelectElement).value)).toBe('-1'); // "Other"
    hub.resetStats();
    await page.click('#load');
    await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('load-progress')!.dataset.state ?? ''), { timeout: 180_000 });
    expect(await page.$eval('#load-progress', (e) => (e as HTMLElement).dataset.from)).toBe('local');
    expect(await text('#progress-text')).toMatch(/from the local files/);
    expect(hub.requests).toEqual([]);
    await setValue('#mode', 'raw');
    await setValue('#temperature', '0');
    await setValue('#max-tokens', '16');
    await sendMessage(once.prompt);
    const r = await waitReplyEnded();
    expect(once.generated_text.startsWith(r.text)).toBe(true);
    expect(r.tokens).toBe(16);
    expect(await cacheEntries()).toEqual([]); // only Hub models are cached
  });

  it('a chat-template model renders user and assistant turns (system prompt, two turns, KV reuse)', async () => {
    await loadHub('org/chatml260K');
    await setValue('#mode', 'auto');
    expect(await page.$eval('#system-row', (e) => (e as HTMLElement).hidden)).toBe(false);
    await setValue('#system', 'You are a storyteller.');
    await setValue('#temperature', '0');
    await setValue('#max-tokens', '24');
    await sendMessage('Tell me a story about a cat.');
    const a = await waitReplyEnded();
    expect(a.state).toBe('done');
    await sendMessage('And then?');
    const b = await waitReplyEnded();
    expect(b.state).toBe('done');
    const turns = await page.$$eval('#messages li', (l) => l.map((e) => ({ role: (e as HTMLElement).dataset.role, who: e.querySelector('.role')?.textContent, text: e.querySelector('.text')?.textContent })));
    expect(turns.map((t) => t.role)).toEqual(['user', 'assistant', 'user', 'assistant']); // no "no chat template" note
    expect(turns.map((t) => t.who)).toEqual(['You', 'Assistant', 'You', 'Assistant']);
    expect(turns[0]!.text).toBe('Tell me a story about a cat.');
    expect(a.tokens).toBeGreaterThan(0);
    expect(b.stats).toMatch(/\(\d+ cached\)/); // the second turn reused the first turn's KV cache
    await screenshot('chat');
  });

  it('a URL model with speculative decoding on (self-draft): the same greedy reply, with the draft acceptance shown', async () => {
    await page.$eval('#settings', (d) => ((d as HTMLDetailsElement).open = true));
    await page.click('#speculative');
    expect(await page.$eval('#speculative', (e) => (e as HTMLInputElement).checked)).toBe(true);
    await page.click('#url', { count: 3 });
    await page.type('#url', '/models/stories260K');
    expect(await page.$eval('#src-url', (e) => (e as HTMLInputElement).checked)).toBe(true);
    await setValue('#format', 'f32');
    await page.click('#load');
    await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('load-progress')!.dataset.state ?? ''), { timeout: 180_000 });
    expect(await text('#model-info')).toMatch(/draft nf4/);
    await setValue('#mode', 'raw');
    await setValue('#temperature', '0');
    await setValue('#max-tokens', String(once.generated_ids.length));
    await sendMessage(once.prompt);
    const r = await waitReplyEnded();
    expect(r.text).toBe(once.generated_text);
    expect(r.stats).toMatch(/draft acceptance \d+%/);
    await screenshot('speculative');
    await page.click('#speculative');
  });

  it('ran under the CSP with no violation, in the page and in its worker', async () => {
    const pageViolations = await page.evaluate(() => (globalThis as unknown as { __csp: string[] }).__csp);
    const live = workers.filter((w) => page.workers().includes(w));
    expect(live.length).toBeGreaterThan(0); // the engine runs in a worker
    const workerViolations = (await Promise.all(live.map((w) => w.evaluate(() => (globalThis as unknown as { __csp?: string[] }).__csp ?? []).catch(() => [])))).flat();
    expect(pageViolations).toEqual([]);
    expect(workerViolations).toEqual([]);
    expect(cspMessages).toEqual([]);
    // the policy is in force in both: a script from a data: URL is refused
    // (a string: vitest would rewrite an import() in a function)
    const importData = "import('data:text/javascript,export default 1').then(() => 'loaded', () => 'refused')";
    expect(await page.evaluate(importData)).toBe('refused');
    expect(await live[0]!.evaluate(importData)).toBe('refused');
    expect(
      await page.evaluate(() => {
        const s = document.createElement('script');
        s.textContent = 'globalThis.__inline = 1';
        document.head.append(s);
        return (globalThis as { __inline?: number }).__inline ?? 'refused';
      }),
    ).toBe('refused');
  });

  it('says what to do when the browser has no WebGPU', async () => {
    const p = await browser.newPage();
    try {
      await p.evaluateOnNewDocument(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true }));
      await openDemo(p);
      expect(await p.$eval('body', (b) => b.dataset.ready)).toBe('no-webgpu');
      const alert = await p.$eval('#no-webgpu', (e) => ({ hidden: (e as HTMLElement).hidden, text: e.textContent ?? '', role: e.getAttribute('role') }));
      expect(alert.hidden).toBe(false);
      expect(alert.role).toBe('alert');
      expect(alert.text).toMatch(/WebGPU is not available/);
      expect(alert.text).toMatch(/Chrome or Edge 113/);
      expect(await p.$eval('#load', (e) => (e as HTMLButtonElement).disabled)).toBe(true);
      await screenshot('no-webgpu', p);
    } finally {
      await p.close();
    }
  });
});
