import { createServer, type Server } from 'node:http';
import { existsSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { launchChromium, type GpuMode } from './browser.ts';
import { repoRoot } from './paths.ts';
import { sendStatus, serveDir } from './static.ts';
import type { Job } from '../runner.ts';
import type { LoadOptions } from '../api/engine.ts';
import { isHubId, onHubEndpoint } from '../api/resolve.ts';
import { NibbleError } from '../errors.ts';

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
  private locals: LocalFolder[];
  private readonly warn: (message: string) => void;
  private listeners = new Set<(ev: HostEvent) => void>();
  readonly pageLog: string[] = [];

  private constructor(server: Server, url: string, browser: Browser, page: Page, locals: LocalFolder[], warn: (message: string) => void) {
    this.server = server;
    this.warn = warn;
    this.url = url;
    this.browser = browser;
    this.page = page;
    this.locals = locals;
  }

  /** `handleSIGINT`: see launchChromium (false: the caller handles Ctrl-C). */
  static async start(opts: { gpu?: GpuMode; warn?: (message: string) => void; handleSIGINT?: boolean } = {}): Promise<RuntimeHost> {
    const root = repoRoot();
    const dist = resolve(root, 'dist');
    if (!existsSync(resolve(dist, 'runner.js'))) {
      throw new Error(`the browser bundle is missing (${dist}/runner.js): run \`npm run build\``);
    }
    const { server, url, locals } = await startRuntimeServer(dist);
    let browser: Browser;
    try {
      browser = await launchChromium({ gpu: opts.gpu, handleSIGINT: opts.handleSIGINT });
    } catch (e) {
      server.close();
      throw e;
    }
    const page = await browser.newPage();
    const host = new RuntimeHost(server, url, browser, page, locals, opts.warn ?? ((m) => process.stderr.write(`nibble: warning: ${m}\n`)));
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
    const k = classifyModel(model);
    return k.kind === 'local' ? this.serveLocal(model) : model;
  }

  /** A local model folder → a URL the page can load it from (errors name `dir` as given). */
  serveLocal(dir: string): string {
    return `${this.url}${addLocal(this.locals, dir)}`;
  }

  on(listener: (ev: HostEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Runs a job in the page; rejects with an Error carrying the engine's error code. A load's Hub
   * token goes only with models on the Hub (`hubToken`); error messages name local folders as the
   * user gave them, not by this host's internal URLs.
   */
  async run<T>(job: Job): Promise<T> {
    if (job.kind === 'load' && job.load.token) {
      const token = hubToken(job.model, job.load);
      if (token === undefined && isHubId(job.model)) {
        const draft = job.load.draft?.model;
        this.warn(`the Hub token is not sent: the draft model ${typeof draft === 'string' ? this.describe(draft) : ''} is not on the Hub endpoint`);
      }
      job = { ...job, load: { ...job.load, token } };
    }
    const r = (await this.page.evaluate((j) => (globalThis as unknown as { nibbleRunner: { run: (j: unknown) => unknown } }).nibbleRunner.run(j), job as never)) as
      | { ok: T }
      | { error: { code: string | null; message: string } };
    if ('error' in r) {
      const e = new Error(this.describe(r.error.message)) as Error & { code?: string | null };
      e.code = r.error.code;
      throw e;
    }
    return r.ok;
  }

  /** `text` with this host's URLs of local folders replaced by the folders' paths as the user gave them. */
  describe(text: string): string {
    let out = text;
    // longest index first: /local/1 must not eat the start of /local/12
    for (let i = this.locals.length - 1; i >= 0; i--) {
      const prefix = `${this.url}/local/${i}`;
      out = out.replace(new RegExp(`${escapeRegExp(prefix)}(?![0-9])(/[^\\s"'),]*)?`, 'g'), (_all, rest: string | undefined) => {
        let tail = rest ?? '';
        try {
          tail = decodeURIComponent(tail);
        } catch {
          // keep it encoded
        }
        return this.locals[i].given + (tail === '/' ? '' : tail);
      });
    }
    return out;
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

/**
 * The runtime host's loopback HTTP server: `/` the runner page, `/dist/*` the built bundle,
 * `/local/<i>/*` the local model folders in `locals` (see addLocal). Its only client is the host's own
 * page: no CORS headers, and a Host header other than this server's address is refused (a page of
 * another site rebinding its DNS name to 127.0.0.1 gets nothing). Bad paths are 4xx (static.ts).
 */
export async function startRuntimeServer(dist: string): Promise<{ server: Server; url: string; locals: LocalFolder[] }> {
  const locals: LocalFolder[] = [];
  const distHandler = serveDir(dist);
  let port = 0;
  const server = createServer((req, res) => {
    try {
      const hostHeader = req.headers.host ?? '';
      if (hostHeader !== `127.0.0.1:${port}` && hostHeader !== `localhost:${port}`) {
        sendStatus(res, 403, 'forbidden');
        return;
      }
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
      const m = /^\/local\/(\d{1,6})(\/.*)$/.exec(url);
      const local = m ? locals[Number(m[1])] : undefined;
      if (m && local) {
        req.url = m[2];
        local.handler(req, res);
        return;
      }
      sendStatus(res, 404, 'not found');
    } catch {
      sendStatus(res, 400, 'bad request');
    }
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => ok());
  });
  const addr = server.address();
  port = typeof addr === 'object' && addr ? addr.port : 0;
  return { server, url: `http://127.0.0.1:${port}`, locals };
}

/** Adds a local model folder to a runtime server's `locals` (once); returns its path on the server, `/local/<i>`. */
export function addLocal(locals: LocalFolder[], dir: string): string {
  const abs = resolve(dir);
  if (!existsSync(abs) || !statSync(abs).isDirectory()) throw new NibbleError('not-found', `model folder not found: ${dir}`);
  let i = locals.findIndex((l) => l.abs === abs);
  if (i < 0) {
    locals.push({ abs, given: dir.replace(/(.)\/+$/, '$1'), handler: serveDir(abs, { containRoot: containmentRoot(abs) }) });
    i = locals.length - 1;
  }
  return `/local/${i}`;
}

export interface LocalFolder {
  /** Absolute path. */
  abs: string;
  /** The path as the user gave it (for messages). */
  given: string;
  handler: ReturnType<typeof serveDir>;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * What a --model argument names: an existing local folder, a URL (http/https) or a Hub id
 * ("org/name"). Anything else is a NibbleError: `not-found` for a path that does not exist,
 * `bad-argument` otherwise. Cheap (no browser): the CLI checks its arguments with it first.
 */
export function classifyModel(model: string): { kind: 'local' | 'url' | 'hub' } {
  if (existsSync(model)) {
    if (statSync(model).isDirectory()) return { kind: 'local' };
    throw new NibbleError('bad-argument', `model ${model} is a file: give the folder that holds config.json and the *.safetensors files`);
  }
  if (/^https?:\/\//i.test(model)) {
    try {
      new URL(model);
      return { kind: 'url' };
    } catch {
      throw new NibbleError('bad-argument', `model URL ${model} is not a valid URL`);
    }
  }
  if (isHubId(model)) return { kind: 'hub' };
  if (/^(\/|\.|~)/.test(model) || model.includes('/') || model.includes('\\')) throw new NibbleError('not-found', `model folder not found: ${model}`);
  throw new NibbleError('bad-argument', `model "${model}" is neither a local folder, a URL nor a Hub id (org/name)`);
}

/**
 * The folder a local model's files may resolve into (symlinks included): the folder itself, or for
 * a Hugging Face cache snapshot (`…/models--org--name/snapshots/<rev>`, whose files are symlinks
 * into `…/models--org--name/blobs`) its repo folder.
 */
export function containmentRoot(dir: string): string {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    return resolve(dir);
  }
  const snapshots = dirname(real);
  const repo = dirname(snapshots);
  return basename(snapshots) === 'snapshots' && basename(repo).startsWith('models--') ? repo : real;
}

/**
 * The Hub token a load may carry: the token only when every model it reads is on the Hub endpoint
 * (a Hub id, or a URL of the endpoint's origin), else undefined. A token never goes to another
 * origin: a plain URL, a local folder served by the CLI, or a draft model elsewhere.
 */
export function hubToken(model: string, load: Pick<LoadOptions, 'token' | 'hubEndpoint' | 'draft'>): string | undefined {
  if (!load.token) return undefined;
  const onHub = (m: string) => onHubEndpoint(m, load.hubEndpoint);
  const draft = load.draft?.model;
  if (!onHub(model) || (typeof draft === 'string' && !onHub(draft))) return undefined;
  return load.token;
}
