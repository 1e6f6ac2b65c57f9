/**
 * HubSource: a model repo on the Hugging Face Hub (or any server with its URL layout, such as
 * `nibble hub-serve`): file `p` is `{endpoint}/{repo}/resolve/{revision}/{p}`.
 *
 * What it adds over a plain URL source:
 * - Authorization: Bearer <token> for gated / private repos (never sent to another origin, e.g. the
 *   CDN a weight file redirects to);
 * - retries with exponential backoff (±25% jitter) on 5xx / 429 / network errors / stalled or cut
 *   bodies; a byte range that fails part-way resumes from the last byte received (the bytes already
 *   in hand are kept), and every success resets the attempt count, so a flaky link still finishes;
 * - a stall timeout per request: no response headers or no body bytes for `stallTimeoutMs` aborts
 *   that request (AbortController) and retries it — a dead connection never hangs a load;
 * - file metadata from one HEAD per file (memoized): size (X-Linked-Size / Content-Length), the
 *   ETag, which for LFS files is their sha256 (the loader verifies it), and the resolved commit;
 * - the redirect target of a file (the CDN URL of an LFS file) is remembered after the first
 *   request, so later range reads go straight there; if it stops working (expired signature) the
 *   next request goes through `resolve/` again;
 * - Hub-worded errors: 404 → "file F not found in repo R at revision V", 401/403 → "gated or
 *   private: pass a token".
 */
import { parseContentRange, parseLength, discard } from './http.ts';
import { NibbleError } from '../errors.ts';
import { parseEtag, type FileMetadata, type ModelSource } from './types.ts';

export interface HubSourceOptions {
  /** Hub endpoint (default https://huggingface.co). */
  endpoint?: string;
  /** Branch, tag or commit (default main). */
  revision?: string;
  /** Access token for gated or private repos. */
  token?: string;
  /** fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** Attempts after the first for a request that makes no progress (default 5). */
  retries?: number;
  /** Delay before the first retry in ms; doubles per failed attempt, capped at 10 s (default 300). */
  retryDelayMs?: number;
  /** A request that gets no headers or no body bytes for this long is aborted and retried (default 30 000 ms). */
  stallTimeoutMs?: number;
}

export const DEFAULT_HUB_ENDPOINT = 'https://huggingface.co';

/** If a server ignores Range and answers 200, we read and drop at most this many leading bytes. */
const MAX_SKIP_BYTES = 64 * 1024 * 1024;
const MAX_DELAY_MS = 10_000;
/** Smallest request after repeated failures without progress. */
const MIN_REQUEST_BYTES = 16 * 1024;

/** Marks errors worth another attempt (transient network / server trouble). */
const retryable = new WeakSet<object>();
function transient(message: string, cause?: unknown): NibbleError {
  const e = new NibbleError('network', message, cause === undefined ? undefined : { cause });
  retryable.add(e);
  return e;
}

function aborted(signal: AbortSignal | undefined, what: string): NibbleError {
  return new NibbleError('aborted', `${what}: aborted`, { cause: signal?.reason });
}


function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(t);
      reject(aborted(signal, 'retry wait'));
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * One request's AbortController: fires when the caller's signal aborts or when `ms` pass without
 * `arm()` being called again (no headers / no bytes).
 */
class Watchdog {
  readonly ctl = new AbortController();
  stalled = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly onAbort: () => void;
  private readonly ms: number;
  private readonly outer: AbortSignal | undefined;

  constructor(ms: number, outer: AbortSignal | undefined) {
    this.ms = ms;
    this.outer = outer;
    this.onAbort = () => this.ctl.abort(outer?.reason);
    if (outer?.aborted) this.ctl.abort(outer.reason);
    else outer?.addEventListener('abort', this.onAbort, { once: true });
    this.arm();
  }

  get signal(): AbortSignal {
    return this.ctl.signal;
  }

  arm(): void {
    clearTimeout(this.timer);
    if (this.ms > 0 && Number.isFinite(this.ms)) {
      this.timer = setTimeout(() => {
        this.stalled = true;
        this.ctl.abort(new Error(`no data for ${this.ms} ms`));
      }, this.ms);
    }
  }

  done(): void {
    clearTimeout(this.timer);
    this.outer?.removeEventListener('abort', this.onAbort);
  }
}

export interface HubSourceStats {
  /** HTTP requests sent (HEAD and GET, first tries and retries). */
  requests: number;
  /** Attempts that failed with a transient error and were retried. */
  retries: number;
  /** Retries that resumed a range part-way (bytes already received were kept). */
  resumes: number;
  /** Body bytes received. */
  bytes: number;
}

export class HubSource implements ModelSource {
  readonly description: string;
  readonly cacheId: string;
  readonly endpoint: string;
  readonly repo: string;
  readonly revision: string;
  readonly stats: HubSourceStats = { requests: 0, retries: 0, resumes: 0, bytes: 0 };
  private readonly token: string | undefined;
  private readonly fetchFn: typeof fetch;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly stallTimeoutMs: number;
  private readonly origin: string;
  private readonly meta = new Map<string, Promise<FileMetadata>>();
  /** path → URL the resolve URL redirected to (CDN), used for later reads of that file. */
  private readonly redirects = new Map<string, string>();

  constructor(repo: string, opts: HubSourceOptions = {}) {
    this.repo = repo.replace(/^\/+|\/+$/g, '');
    this.endpoint = (opts.endpoint ?? DEFAULT_HUB_ENDPOINT).replace(/\/+$/, '');
    this.revision = opts.revision ?? 'main';
    this.token = opts.token || undefined;
    this.fetchFn = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.retries = opts.retries ?? 5;
    this.retryDelayMs = opts.retryDelayMs ?? 300;
    this.stallTimeoutMs = opts.stallTimeoutMs ?? 30_000;
    this.origin = new URL(this.endpoint, (globalThis as { location?: Location }).location?.href).origin;
    this.description = `${this.repo}@${this.revision} on ${this.endpoint}`;
    this.cacheId = `hub:${this.endpoint}/${this.repo}@${this.revision}`;
  }

  /** The resolve URL of a file. */
  url(path: string): string {
    const file = path.replace(/^\/+/, '').split('/').map(encodeURIComponent).join('/');
    const repo = this.repo.split('/').map(encodeURIComponent).join('/');
    return `${this.endpoint}/${repo}/resolve/${encodeURIComponent(this.revision)}/${file}`;
  }

  private headers(url: string, extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { ...extra };
    // The token goes to the Hub only, never to a CDN on another origin.
    if (this.token && new URL(url).origin === this.origin) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  /** Error for a non-ok status: permanent (404, 401, 403, other 4xx) or transient (5xx, 408, 429). */
  private statusError(res: Response, path: string, method: string, url: string): NibbleError {
    discard(res);
    const s = res.status;
    const code = res.headers.get('x-error-code');
    const where = `repo ${this.repo} at revision ${this.revision}`;
    if (s === 404) {
      if (code === 'RepoNotFound') {
        return new NibbleError('not-found', `file ${path} not found: repo ${this.repo} does not exist on ${this.endpoint} (or it is private: pass a token)`);
      }
      if (code === 'RevisionNotFound') return new NibbleError('not-found', `file ${path} not found: revision ${this.revision} does not exist in repo ${this.repo}`);
      return new NibbleError('not-found', `file ${path} not found in ${where}`);
    }
    if (s === 401 || s === 403) {
      return new NibbleError(
        'unauthorized',
        this.token
          ? `HTTP ${s} for ${path} in ${where}: the token was refused; the model is gated or private: pass a token that has access to it`
          : `HTTP ${s} for ${path} in ${where}: the model is gated or private: pass a token (the token option, --token or HF_TOKEN)`,
      );
    }
    const msg = `HTTP ${s}${res.statusText ? ' ' + res.statusText : ''} for ${method} ${url}`;
    if (s >= 500 || s === 408 || s === 429) return transient(msg);
    return new NibbleError('network', msg);
  }

  /** A fetch failure: the caller's abort, a stall, or a network error (both transient). */
  private fetchError(e: unknown, dog: Watchdog, signal: AbortSignal | undefined, what: string): NibbleError {
    if (signal?.aborted) return aborted(signal, what);
    if (dog.stalled) return transient(`${what}: timed out (no data for ${this.stallTimeoutMs} ms)`, e);
    return transient(`${what} failed: ${(e as Error)?.message ?? String(e)}`, e);
  }

  /**
   * Runs `attempt` until it succeeds, retrying transient failures with exponential backoff.
   * `attempt` reports progress (bytes received) through its argument; an attempt that made progress
   * resets the failure count and is retried at once.
   */
  private async withRetries<T>(
    what: string,
    signal: AbortSignal | undefined,
    attempt: (progress: () => void) => Promise<T>,
    onFailure?: (progressed: boolean) => void,
  ): Promise<T> {
    let failures = 0;
    for (;;) {
      if (signal?.aborted) throw aborted(signal, what);
      let progressed = false;
      try {
        return await attempt(() => (progressed = true));
      } catch (e) {
        if (signal?.aborted) throw aborted(signal, what);
        if (!(e instanceof Error) || !retryable.has(e)) throw e;
        failures = progressed ? 0 : failures + 1;
        onFailure?.(progressed);
        if (failures > this.retries) {
          throw new NibbleError('network', `${e.message} (gave up after ${failures} attempts in a row without progress)`, { cause: e });
        }
        this.stats.retries++;
        if (progressed) this.stats.resumes++;
        const base = Math.min(MAX_DELAY_MS, this.retryDelayMs * 2 ** (failures - 1));
        await sleep(progressed ? 0 : base * (0.75 + Math.random() * 0.5), signal);
      }
    }
  }

  /** File metadata from a HEAD (memoized per path; failures are not remembered). */
  metadata(path: string, signal?: AbortSignal): Promise<FileMetadata> {
    let p = this.meta.get(path);
    if (!p) {
      p = this.head(path, signal);
      this.meta.set(path, p);
      p.catch(() => this.meta.delete(path));
    }
    return p;
  }

  private head(path: string, signal: AbortSignal | undefined): Promise<FileMetadata> {
    const url = this.url(path);
    return this.withRetries(`HEAD ${url}`, signal, async () => {
      const dog = new Watchdog(this.stallTimeoutMs, signal);
      try {
        this.stats.requests++;
        let res: Response;
        try {
          res = await this.fetchFn(url, { method: 'HEAD', headers: this.headers(url), signal: dog.signal, cache: 'no-store' });
        } catch (e) {
          throw this.fetchError(e, dog, signal, `HEAD ${url}`);
        }
        if (!res.ok) throw this.statusError(res, path, 'HEAD', url);
        discard(res);
        if (res.redirected && res.url) this.redirects.set(path, res.url);
        const h = res.headers;
        const size = parseLength(h.get('x-linked-size')) ?? parseLength(h.get('content-length'));
        if (size === null) throw new NibbleError('network', `HEAD ${url}: the server sent no file size (Content-Length)`);
        const tag = parseEtag(h.get('x-linked-etag') ?? h.get('etag'));
        const lm = h.get('last-modified');
        const lastModified = lm ? Date.parse(lm) : NaN;
        return {
          size,
          ...tag,
          ...(Number.isFinite(lastModified) ? { lastModified } : {}),
          ...(h.get('x-repo-commit') ? { commit: h.get('x-repo-commit')! } : {}),
        };
      } finally {
        dog.done();
      }
    });
  }

  async size(path: string, signal?: AbortSignal): Promise<number> {
    return (await this.metadata(path, signal)).size;
  }

  async exists(path: string, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.metadata(path, signal);
      return true;
    } catch (e) {
      // A missing file is "absent"; a missing repo, a refused token or a dead network are errors.
      if (e instanceof NibbleError && e.code === 'not-found' && e.message.includes(' not found in repo ')) return false;
      throw e;
    }
  }

  async text(path: string, signal?: AbortSignal): Promise<string> {
    return new TextDecoder().decode(await this.read(path, 0, undefined, signal));
  }

  async range(path: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new NibbleError('bad-argument', `range(${path}, ${start}, ${end}): need integers 0 <= start <= end`);
    }
    if (end === start) {
      if (signal?.aborted) throw aborted(signal, path);
      return new Uint8Array(0);
    }
    return this.read(path, start, end, signal);
  }

  /**
   * Bytes [start, end) of a file (end undefined: to the end of the file), resuming after failures
   * from the last byte received. After an attempt that got no bytes at all, the next requests ask
   * for less (÷8, down to 16 KiB) and grow back (×2) as they succeed: a link that drops every
   * connection after N bytes — or a browser that loses the bytes it buffered when a connection
   * breaks — still makes progress.
   */
  private async read(path: string, start: number, end: number | undefined, signal: AbortSignal | undefined): Promise<Uint8Array> {
    let out: Uint8Array | null = end !== undefined ? new Uint8Array(end - start) : null;
    let got = 0;
    let cap = Infinity;
    const what = `GET ${this.url(path)}${end !== undefined ? ` [${start}, ${end})` : ''}`;
    const shrink = (progressed: boolean) => {
      if (!progressed && out) cap = Math.max(MIN_REQUEST_BYTES, Math.floor(Math.min(cap, out.length - got) / 8));
    };

    /** One request from start + got; returns true when the whole range is in. */
    const once = async (progress: () => void): Promise<boolean> => {
      const from = start + got;
      const stop = out ? start + Math.min(out.length, got + cap) : undefined; // exclusive; undefined: to EOF
      const cdn = this.redirects.get(path);
      const url = cdn ?? this.url(path);
      const ranged = from > 0 || stop !== undefined;
      const dog = new Watchdog(this.stallTimeoutMs, signal);
      try {
        this.stats.requests++;
        let res: Response;
        try {
          const headers = this.headers(url, ranged ? { Range: `bytes=${from}-${stop !== undefined ? stop - 1 : ''}` } : {});
          res = await this.fetchFn(url, { method: 'GET', headers, signal: dog.signal, cache: 'no-store' });
        } catch (e) {
          throw this.fetchError(e, dog, signal, what);
        }
        if (!res.ok) {
          if (cdn && res.status >= 400 && res.status < 500) {
            // The remembered CDN URL stopped working (e.g. its signature expired): go through resolve/ again.
            discard(res);
            this.redirects.delete(path);
            throw transient(`${what}: HTTP ${res.status} from the redirect target; resolving again`);
          }
          throw this.statusError(res, path, 'GET', url);
        }
        if (res.redirected && res.url && !cdn) this.redirects.set(path, res.url);
        let skip = 0;
        if (res.status === 206) {
          const cr = parseContentRange(res.headers.get('content-range'));
          if (cr && Number.isFinite(cr.start) && cr.start !== from) {
            discard(res);
            throw new NibbleError('network', `${what}: asked for bytes from ${from} but the server sent from ${cr.start}`);
          }
          if (!out) {
            const total = cr && Number.isFinite(cr.total) ? cr.total : null;
            const len = parseLength(res.headers.get('content-length'));
            const size = total ?? (len !== null ? from + len : null);
            if (size !== null) out = new Uint8Array(size - start);
          }
        } else {
          // 200: the whole file. Drop the bytes before `from` (bounded), keep the rest we need.
          skip = from;
          if (skip > MAX_SKIP_BYTES) {
            discard(res);
            throw new NibbleError('network', `${what}: the server ignored the Range header (it would resend ${skip} bytes)`);
          }
          if (!out) {
            const len = parseLength(res.headers.get('content-length'));
            if (len !== null) out = new Uint8Array(len - start);
          }
        }
        // This request's end: the cap (as asked), or everything still missing.
        const until = out ? Math.min(out.length, stop !== undefined ? stop - start : out.length) : Infinity;
        const expected = parseLength(res.headers.get('content-length'));
        const parts: Uint8Array[] = []; // only when the total size is unknown (small files)
        let received = 0;
        if (res.body) {
          const reader = res.body.getReader();
          try {
            for (;;) {
              let chunk: ReadableStreamReadResult<Uint8Array>;
              try {
                chunk = await reader.read();
              } catch (e) {
                throw this.fetchError(e, dog, signal, what);
              }
              if (chunk.done) break;
              dog.arm();
              let v = chunk.value;
              received += v.length;
              this.stats.bytes += v.length;
              if (skip > 0) {
                const drop = Math.min(skip, v.length);
                v = v.subarray(drop);
                skip -= drop;
              }
              if (v.length === 0) continue;
              if (out) {
                const room = until - got;
                if (v.length > room) v = v.subarray(0, room);
                out.set(v, got);
              } else {
                parts.push(v.slice());
              }
              got += v.length;
              progress();
              if (out && got >= until) break;
            }
          } finally {
            reader.cancel().catch(() => {});
          }
        }
        if (!out) {
          // Unknown length: what arrived is the file if the body ended cleanly.
          if (expected !== null && received < expected) {
            got = 0; // no length to resume against: start again
            throw transient(`${what}: body cut short: got ${received} of ${expected} bytes`);
          }
          const all = new Uint8Array(got);
          let o = 0;
          for (const p of parts) {
            all.set(p, o);
            o += p.length;
          }
          out = all;
          return true;
        }
        if (got < until) throw transient(`${what}: body cut short at byte ${start + got} (asked up to ${start + until})`);
        return got === out.length;
      } finally {
        dog.done();
      }
    };

    return this.withRetries(
      what,
      signal,
      async (progress) => {
        while (!(await once(progress))) {
          if (cap !== Infinity) cap *= 2; // that request succeeded: ask for more again
        }
        return out!;
      },
      shrink,
    );
  }
}
