import { createServer, type Server } from 'node:http';
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { launchChromium, type GpuMode } from './browser.ts';
import { repoRoot } from './paths.ts';
import { serveDir } from './static.ts';
import type { Job } from '../runner.ts';

/**
 * The CLI's runtime host: a loopback HTTP server for the built bundle (dist/) and local model
 * folders, and a headless Chromium page that runs the engine on WebGPU (SwiftShader where there is
 * no GPU, the machine's Vulkan GPU where there is one). Node only moves jobs and results.
 */
export interface HostEvent {
  type: string;
  [k: string]: unknown;
}

export class RuntimeHost {
  private server: Server;
  private browser: Browser;
  private page: Page;
  readonly url: string;
  private locals: string[];
  private listeners = new Set<(ev: HostEvent) => void>();
  readonly pageLog: string[] = [];

  private constructor(server: Server, url: string, browser: Browser, page: Page, locals: string[]) {
    this.server = server;
    this.url = url;
    this.browser = browser;
    this.page = page;
    this.locals = locals;
  }

  static async start(opts: { gpu?: GpuMode } = {}): Promise<RuntimeHost> {
    const root = repoRoot();
    const dist = resolve(root, 'dist');
    if (!existsSync(resolve(dist, 'runner.js'))) {
      throw new Error(`the browser bundle is missing (${dist}/runner.js): run \`npm run build\``);
    }
    const locals: string[] = [];
    const distHandler = serveDir(dist);
    const server = createServer((req, res) => {
      const url = req.url ?? '/';
      if (url === '/' || url.startsWith('/?')) {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
        res.end(RUNNER_HTML);
        return;
      }
      if (url.startsWith('/dist/')) {
        req.url = url.slice('/dist'.length);
        distHandler(req, res);
        return;
      }
      const m = /^\/local\/(\d+)(\/.*)$/.exec(url);
      if (m && locals[Number(m[1])]) {
        req.url = m[2];
        serveDir(locals[Number(m[1])])(req, res);
        return;
      }
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
    });
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(0, '127.0.0.1', () => ok());
    });
    const addr = server.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const url = `http://127.0.0.1:${port}`;
    let browser: Browser;
    try {
      browser = await launchChromium({ gpu: opts.gpu });
    } catch (e) {
      server.close();
      throw e;
    }
    const page = await browser.newPage();
    const host = new RuntimeHost(server, url, browser, page, locals);
    page.on('console', (msg) => host.pageLog.push(`${msg.type()}: ${msg.text()}`));
    page.on('pageerror', (err) => host.pageLog.push(`pageerror: ${String(err)}`));
    await page.exposeFunction('nibbleEmit', (ev: HostEvent) => {
      for (const l of host.listeners) l(ev);
    });
    await page.goto(`${url}/`);
    await page.waitForFunction(() => (globalThis as { nibbleRunner?: unknown }).nibbleRunner !== undefined, { timeout: 60_000 });
    return host;
  }

  /**
   * What the page should load for a --model argument: an existing local folder is served by this
   * host; a URL or a Hub id ("org/name") passes through. Anything else is an error.
   */
  modelUrl(model: string): string {
    if (existsSync(model) && statSync(model).isDirectory()) return this.serveLocal(model);
    if (/^https?:\/\//.test(model) || /^[\w.-]+\/[\w.-]+$/.test(model)) return model;
    throw new Error(`model "${model}" is neither a local folder, a URL nor a Hub id (org/name)`);
  }

  /** A local model folder → a URL the page can load it from. */
  serveLocal(dir: string): string {
    const abs = resolve(dir);
    if (!existsSync(abs) || !statSync(abs).isDirectory()) throw new Error(`model directory not found: ${abs}`);
    let i = this.locals.indexOf(abs);
    if (i < 0) {
      this.locals.push(abs);
      i = this.locals.length - 1;
    }
    return `${this.url}/local/${i}`;
  }

  on(listener: (ev: HostEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Runs a job in the page; rejects with an Error carrying the engine's error code. */
  async run<T>(job: Job): Promise<T> {
    const r = (await this.page.evaluate((j) => (globalThis as unknown as { nibbleRunner: { run: (j: unknown) => unknown } }).nibbleRunner.run(j), job as never)) as
      | { ok: T }
      | { error: { code: string | null; message: string } };
    if ('error' in r) {
      const e = new Error(r.error.message) as Error & { code?: string | null };
      e.code = r.error.code;
      throw e;
    }
    return r.ok;
  }

  async close(): Promise<void> {
    await this.browser.close().catch(() => {});
    await new Promise<void>((ok) => this.server.close(() => ok()));
  }
}

const RUNNER_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>nibble runtime</title></head>
<body><script type="module">
import '/dist/runner.js';
</script></body></html>`;
