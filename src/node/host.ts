import { createServer, type Server } from 'node:http';
import type { Page } from 'puppeteer-core';
import { existsSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { launchChromium, resolveGpuMode, type GpuMode } from './browser.ts';
import { repoRoot } from './paths.ts';
import { sendStatus, serveDir, setIsolationHeaders } from './static.ts';
import type { Job, JobKind, JobLoadOptions, JobOf, JobResults, Reply, RunnerEvent } from '../runner.ts';
import { isHubId, onHubEndpoint } from '../api/resolve.ts';
import { NibbleError } from '../errors.ts';

/**
 * The CLI's runtime host: a loopback HTTP server for the built bundle (dist/) and local model
 * folders, and a runtime that runs the engine on WebGPU from that bundle (src/runner.ts):
 * - `chromium` (default): a headless Chromium page (SwiftShader where there is no GPU, the
 *   machine's Vulkan GPU where there is one);
 * - `deno`: a Deno process (wgpu; src/deno/main.ts, started by src/node/deno.ts), which reads the
 *   same bundle and local model folders from disk; its `cache: true` is the directory cache.
 * Node only moves jobs and results.
 */
export type RuntimeName = 'chromium' | 'deno';
export const RUNTIMES: readonly RuntimeName[] = ['chromium', 'deno'];

/** What a host hears from the running job: the runner's events. */
export type HostEvent = RunnerEvent;

/** One runtime the host can drive: runs a job, answers its reply. */
interface Backend {
  run(job: Job): Promise<Reply<unknown>>;
  close(): Promise<void>;
  /** The runtime's console output (page messages, the Deno process's stderr). */
  readonly log: string[];
  /** Another page of the same browser at `path` of the host's server (Chromium only). */
  openPage?(path: string): Promise<Page>;
}

export interface HostOptions {
  runtime?: RuntimeName;
  gpu?: GpuMode;
  warn?: (message: string) => void;
  /** `handleSIGINT`: see launchChromium (false: the caller handles Ctrl-C). Chromium only. */
  handleSIGINT?: boolean;
  /** The Deno host's directory cache (default $NIBBLE_CACHE_DIR, else .cache/weights in the package). */
  cacheDir?: string;
  /** Extra folders served read-only under `/peer/<name>/` (the peer benchmark: its page, wllama's files, GGUF files). */
  mounts?: Record<string, string>;
  /** Send COOP / COEP on every response so the pages are crossOriginIsolated (SharedArrayBuffer: wasm threads). */
  crossOriginIsolated?: boolean;
}

export class RuntimeHost {
  readonly url: string;
  readonly runtime: RuntimeName;
  private readonly warn: (message: string) => void;
  private listeners = new Set<(ev: HostEvent) => void>();

  private readonly server: Server;
  private readonly backend: Backend;
  private readonly locals: LocalFolder[];

  private constructor(server: Server, url: string, backend: Backend, locals: LocalFolder[], runtime: RuntimeName, warn: (message: string) => void) {
    this.server = server;
    this.backend = backend;
    this.locals = locals;
    this.url = url;
    this.runtime = runtime;
    this.warn = warn;
  }

  /** The runtime's console output so far. */
  get pageLog(): string[] {
    return this.backend.log;
  }

  static async start(opts: HostOptions = {}): Promise<RuntimeHost> {
    // $NIBBLE_DIST: a bundle built elsewhere (the GPU-machine kit carries its own, bench/device/)
    const dist = process.env.NIBBLE_DIST ? resolve(process.env.NIBBLE_DIST) : resolve(repoRoot(), 'dist');
    if (!existsSync(resolve(dist, 'runner.js'))) {
      throw new NibbleError('not-found', `the built bundle is missing (${dist}/runner.js): run \`npm run build\``);
    }
    const runtime = opts.runtime ?? 'chromium';
    const { server, url, locals } = await startRuntimeServer(dist, { mounts: opts.mounts, crossOriginIsolated: opts.crossOriginIsolated });
    const listeners = new Set<(ev: HostEvent) => void>();
    const onEvent = (ev: HostEvent) => {
      for (const l of listeners) l(ev);
    };
    let backend: Backend;
    try {
      backend =
        runtime === 'deno'
          ? await (await import('./deno.ts')).DenoRunner.start({ gpu: resolveGpuMode(opts.gpu), dist, cacheDir: opts.cacheDir ?? defaultCacheDir(), onEvent })
          : await startChromium(url, opts, onEvent);
    } catch (e) {
      server.close();
      throw e;
    }
    const host = new RuntimeHost(server, url, backend, locals, runtime, opts.warn ?? ((m) => process.stderr.write(`nibble: warning: ${m}\n`)));
    host.listeners = listeners;
    return host;
  }

  /**
   * What the runtime should load for a --model argument: an existing local folder is served by
   * this host (Chromium) or named by its file: URL (Deno); a URL or a Hub id ("org/name") passes
   * through. Anything else is an error.
   */
  modelUrl(model: string): string {
    const k = classifyModel(model);
    if (k.kind !== 'local') return model;
    // Deno reads a folder from disk itself (FsSource: a stable cache identity), Chromium through this server
    return this.runtime === 'deno' ? pathToFileURL(this.locals[Number(addLocal(this.locals, model).slice('/local/'.length))].abs).href : this.serveLocal(model);
  }

  /** A local model folder → a URL the runtime can load it from (errors name `dir` as given). */
  serveLocal(dir: string): string {
    return `${this.url}${addLocal(this.locals, dir)}`;
  }

  on(listener: (ev: HostEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Runs a job in the runtime; resolves to the job kind's result, or rejects with an Error carrying
   * the engine's error code. A load's Hub token goes only with models on the Hub (`hubToken`);
   * error messages name local folders as the user gave them, not by this host's internal URLs.
   */
  async run<K extends JobKind>(job: JobOf<K>): Promise<JobResults[K]> {
    let j: Job = job;
    if (j.kind === 'load' && j.load.token) {
      const token = hubToken(j.model, j.load);
      if (token === undefined && isHubId(j.model)) {
        const draft = j.load.draft?.model;
        this.warn(`the Hub token is not sent: the draft model ${typeof draft === 'string' ? this.describe(draft) : ''} is not on the Hub endpoint`);
      }
      j = { ...j, load: { ...j.load, token } };
    }
    const r = (await this.backend.run(j)) as Reply<JobResults[K]>;
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
      // the Deno host names a folder by its absolute path (FsSource) or its file: URL
      const { abs, given } = this.locals[i];
      for (const p of [pathToFileURL(abs).href, abs]) {
        out = out.replace(new RegExp(`${escapeRegExp(p)}(?![^/\\s"'),])`, 'g'), given);
      }
    }
    return out;
  }

  /** A second page in the runtime's browser at `path` of this host's server (the peer benchmark; Chromium only). */
  async openPage(path: string): Promise<Page> {
    if (!this.backend.openPage) throw new NibbleError('bad-argument', `the ${this.runtime} runtime has no browser pages`);
    return this.backend.openPage(path);
  }

  async close(): Promise<void> {
    await this.backend.close().catch(() => {});
    await new Promise<void>((ok) => this.server.close(() => ok()));
  }
}

/** The Deno host's weight cache folder: $NIBBLE_CACHE_DIR, else .cache/weights in the package. */
export function defaultCacheDir(): string {
  return process.env.NIBBLE_CACHE_DIR ? resolve(process.env.NIBBLE_CACHE_DIR) : resolve(repoRoot(), '.cache', 'weights');
}

/** Headless Chromium with the runner page of `url` open; events come through the page's exposed `nibbleEmit`. */
async function startChromium(url: string, opts: HostOptions, onEvent: (ev: HostEvent) => void): Promise<Backend> {
  const browser = await launchChromium({ gpu: opts.gpu, handleSIGINT: opts.handleSIGINT });
  const log: string[] = [];
  try {
    const page = await browser.newPage();
    page.on('console', (msg) => log.push(`${msg.type()}: ${msg.text()}`));
    page.on('pageerror', (err) => log.push(`pageerror: ${String(err)}`));
    await page.exposeFunction('nibbleEmit', (ev: HostEvent) => onEvent(ev));
    await page.goto(`${url}/`);
    await page.waitForFunction(() => (globalThis as { nibbleRunner?: unknown }).nibbleRunner !== undefined, { timeout: 60_000 });
    return {
      log,
      run: (job) =>
        page.evaluate((j) => (globalThis as unknown as { nibbleRunner: { run: (j: unknown) => unknown } }).nibbleRunner.run(j), job as never) as Promise<Reply<unknown>>,
      close: () => browser.close(),
      openPage: async (path) => {
        const p = await browser.newPage();
        await p.goto(`${url}${path}`);
        return p;
      },
    };
  } catch (e) {
    await browser.close().catch(() => {});
    throw e;
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
 * `mounts` adds `/peer/<name>/*` folders (the peer benchmark, bench/peer/), served like the others;
 * `crossOriginIsolated` sends COOP / COEP on every response (static.ts `ISOLATION_HEADERS`).
 */
export async function startRuntimeServer(
  dist: string,
  opts: { mounts?: Record<string, string>; crossOriginIsolated?: boolean } = {},
): Promise<{ server: Server; url: string; locals: LocalFolder[] }> {
  const locals: LocalFolder[] = [];
  const distHandler = serveDir(dist);
  const mounts = new Map(Object.entries(opts.mounts ?? {}).map(([name, dir]) => [name, serveDir(dir)]));
  let port = 0;
  const server = createServer((req, res) => {
    try {
      const hostHeader = req.headers.host ?? '';
      if (hostHeader !== `127.0.0.1:${port}` && hostHeader !== `localhost:${port}`) {
        sendStatus(res, 403, 'forbidden');
        return;
      }
      if (opts.crossOriginIsolated) setIsolationHeaders(res);
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
      const pm = /^\/peer\/([a-z0-9-]{1,40})(\/.*)$/.exec(url);
      const mount = pm ? mounts.get(pm[1]) : undefined;
      if (pm && mount) {
        req.url = pm[2];
        mount(req, res);
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
export function hubToken(model: string, load: Pick<JobLoadOptions, 'token' | 'hubEndpoint' | 'draft'>): string | undefined {
  if (!load.token) return undefined;
  const onHub = (m: string) => onHubEndpoint(m, load.hubEndpoint);
  const draft = load.draft?.model;
  if (!onHub(model) || (typeof draft === 'string' && !onHub(draft))) return undefined;
  return load.token;
}
