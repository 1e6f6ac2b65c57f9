/**
 * HTTP reads that survive bad links, shared by HubSource and UrlSource:
 * - a watchdog per request: no response headers, or no body bytes, for `stallTimeoutMs` aborts that
 *   request (AbortController) and retries it, so a dead connection never hangs a load;
 * - retries with exponential backoff (±25% jitter, capped at 10 s) of transient failures only:
 *   network errors, stalls, cut bodies, 5xx (but 501), 408 and 429 (a `Retry-After` on 429 / 503
 *   sets the wait); never the other 4xx. Every attempt that made progress resets the failure count
 *   and is retried at once, so a flaky link still finishes; `retries` failures in a row without
 *   progress give up;
 * - resumable byte ranges (`readRange`): after a cut, the next request asks for the rest from the
 *   last byte received and keeps the bytes in hand. A 206 must start where it was asked to (its
 *   Content-Range is checked when the response exposes it; a cross-origin response may hide it); a 200
 *   to a Range request is the whole file from byte 0, so the bytes before the wanted offset are
 *   dropped (at most 64 MiB of them), never appended. After an attempt that got no bytes at all, the
 *   next requests ask for less (÷8, down to 16 KiB) and grow back (×2) as they succeed: a link that
 *   drops every connection after N bytes, or a browser that loses the bytes it buffered when a
 *   connection breaks, still makes progress. `readFile` reads a small file whole (no Range), again
 *   from byte 0 on a retry.
 * What a source adds on top (its URL layout, headers, error wording) comes in through `ReadHooks`.
 */
import { abortedError, NibbleError } from '../errors.ts';
import { discard, parseContentRange, parseLength } from './http.ts';

export interface RetryOptions {
  /** Attempts after the first for a request that makes no progress (default 5). */
  retries?: number;
  /** Delay before the first retry in ms; doubles per failed attempt, capped at 10 s (default 300). */
  retryDelayMs?: number;
  /** A request that gets no headers or no body bytes for this long is aborted and retried (default 30 000 ms). */
  stallTimeoutMs?: number;
}

export interface HttpClientOptions extends RetryOptions {
  /** fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** The `cache` mode of every request (default: fetch's own default). */
  cache?: RequestCache;
}

export interface FetchStats {
  /** HTTP requests sent (HEAD and GET, first tries and retries). */
  requests: number;
  /** Attempts that failed with a transient error and were retried. */
  retries: number;
  /** Retries that resumed a range part-way (bytes already received were kept). */
  resumes: number;
  /** Body bytes received. */
  bytes: number;
}

/** If a server ignores Range and answers 200, we read and drop at most this many bytes. */
export const MAX_SKIP_BYTES = 64 * 1024 * 1024;
const MAX_DELAY_MS = 10_000;
/** The longest `Retry-After` honoured. */
const MAX_RETRY_AFTER_MS = 60_000;
/** Smallest request after repeated failures without progress. */
const MIN_REQUEST_BYTES = 16 * 1024;

/** Transient errors (worth another attempt) → the wait the server asked for (Retry-After), if any. */
const retryable = new WeakMap<object, number | undefined>();

/** A NibbleError 'network' that the retry loop retries. */
export function transient(message: string, cause?: unknown, retryAfterMs?: number): NibbleError {
  const e = new NibbleError('network', message, cause === undefined ? undefined : { cause });
  retryable.set(e, retryAfterMs);
  return e;
}

export function isTransient(e: unknown): boolean {
  return e instanceof Error && retryable.has(e);
}

export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(t);
      reject(abortedError(signal, 'retry wait'));
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** `Retry-After` (seconds or an HTTP date) in ms, capped; undefined when absent or unreadable. */
export function retryAfterMs(res: Response, now = Date.now()): number | undefined {
  const v = res.headers.get('retry-after')?.trim();
  if (!v) return undefined;
  const ms = /^\d+$/.test(v) ? Number(v) * 1000 : Date.parse(v) - now;
  return Number.isFinite(ms) ? Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms)) : undefined;
}

/** Statuses worth another attempt: 5xx (but 501: not implemented, e.g. HEAD), 408, 429. */
export function isTransientStatus(s: number): boolean {
  return (s >= 500 && s !== 501) || s === 408 || s === 429;
}

/**
 * The error for a non-ok status that a source has no wording of its own for: transient for 5xx, 408
 * and 429 (with the server's Retry-After), permanent for the other 4xx. Releases the body.
 */
export function statusFailure(res: Response, method: string, url: string): NibbleError {
  discard(res);
  const s = res.status;
  const msg = `HTTP ${s}${res.statusText ? ' ' + res.statusText : ''} for ${method} ${url}`;
  if (isTransientStatus(s)) return transient(msg, undefined, s === 429 || s === 503 ? retryAfterMs(res) : undefined);
  return new NibbleError('network', msg);
}

/**
 * One request's AbortController: fires when the caller's signal aborts or when `ms` pass without
 * `arm()` being called again (no headers / no bytes).
 */
export class Watchdog {
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
        this.ctl.abort(new NibbleError('network', `no data for ${this.ms} ms`));
      }, this.ms);
    }
  }

  done(): void {
    clearTimeout(this.timer);
    this.outer?.removeEventListener('abort', this.onAbort);
  }
}

/** What one request needs: method, headers. */
export interface Exchange {
  method: 'GET' | 'HEAD';
  headers: Record<string, string>;
}

/** How a source shapes the requests of one resumable read. */
export interface ReadHooks {
  /** Where the next attempt goes (the Hub: a remembered CDN URL, else the resolve URL). */
  url(): string;
  /** The headers of a request to `url` (`extra` holds the Range header, if any). */
  headers(url: string, extra: Record<string, string>): Record<string, string>;
  /** The error for a non-ok response (mark it `transient` to have it retried). */
  fail(res: Response, url: string): NibbleError;
  /** Sees an ok response before its body is read; throws to refuse it. */
  accept?(res: Response, url: string): void;
}

/** Retries, stall timeouts and resumable range reads over one fetch function. */
export class HttpClient {
  readonly stats: FetchStats = { requests: 0, retries: 0, resumes: 0, bytes: 0 };
  readonly stallTimeoutMs: number;
  private readonly fetchFn: typeof fetch;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly cache: RequestCache | undefined;

  constructor(opts: HttpClientOptions = {}) {
    // Bind: calling an unbound `fetch` with another `this` throws "Illegal invocation" in browsers.
    this.fetchFn = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.retries = opts.retries ?? 5;
    this.retryDelayMs = opts.retryDelayMs ?? 300;
    this.stallTimeoutMs = opts.stallTimeoutMs ?? 30_000;
    this.cache = opts.cache;
  }

  /**
   * Runs `attempt` until it succeeds, retrying transient failures with exponential backoff.
   * `attempt` reports progress (bytes kept) through its argument; an attempt that made progress
   * resets the failure count and is retried at once. `onFailure` hears of each retried failure.
   */
  async retry<T>(
    what: string,
    signal: AbortSignal | undefined,
    attempt: (progress: () => void) => Promise<T>,
    onFailure?: (progressed: boolean) => void,
  ): Promise<T> {
    let failures = 0;
    for (;;) {
      if (signal?.aborted) throw abortedError(signal, what);
      let progressed = false;
      try {
        return await attempt(() => (progressed = true));
      } catch (e) {
        if (signal?.aborted) throw abortedError(signal, what);
        if (!isTransient(e)) throw e;
        const err = e as NibbleError;
        failures = progressed ? 0 : failures + 1;
        onFailure?.(progressed);
        if (failures > this.retries) {
          const n = `${failures} attempt${failures === 1 ? '' : 's'}`;
          throw new NibbleError('network', `${err.message} (gave up after ${n} in a row without progress)`, { cause: err.cause ?? err });
        }
        this.stats.retries++;
        if (progressed) this.stats.resumes++;
        await sleep(progressed ? 0 : this.backoff(failures, retryable.get(err)), signal);
      }
    }
  }

  private backoff(failures: number, retryAfter: number | undefined): number {
    if (retryAfter !== undefined) return retryAfter;
    const base = Math.min(MAX_DELAY_MS, this.retryDelayMs * 2 ** (failures - 1));
    return base * (0.75 + Math.random() * 0.5);
  }

  /**
   * One request under a watchdog: `use` gets the response (status not checked) and the watchdog,
   * which it re-arms as body bytes arrive; the watchdog stops when `use` settles. A fetch failure is
   * 'aborted' (the caller's signal) or transient (a stall or a network error).
   */
  async exchange<T>(
    url: string,
    req: Exchange,
    what: string,
    signal: AbortSignal | undefined,
    use: (res: Response, dog: Watchdog) => Promise<T>,
  ): Promise<T> {
    const dog = new Watchdog(this.stallTimeoutMs, signal);
    try {
      this.stats.requests++;
      let res: Response;
      try {
        const init: RequestInit = { method: req.method, headers: req.headers, signal: dog.signal };
        if (this.cache) init.cache = this.cache;
        res = await this.fetchFn(url, init);
      } catch (e) {
        throw this.fetchError(e, dog, signal, what);
      }
      return await use(res, dog);
    } finally {
      dog.done();
    }
  }

  /** A fetch or body failure: the caller's abort, a stall, or a network error (both transient). */
  fetchError(e: unknown, dog: Watchdog, signal: AbortSignal | undefined, what: string): NibbleError {
    if (signal?.aborted) return abortedError(signal, what);
    if (dog.stalled) return transient(`${what}: timed out (no data for ${this.stallTimeoutMs} ms)`, e);
    return transient(`${what} failed: ${(e as Error)?.message ?? String(e)}`, e);
  }

  /** A whole body under the watchdog (re-armed per chunk). */
  async body(res: Response, dog: Watchdog, what: string, signal: AbortSignal | undefined): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    await pump(res, (v) => {
      dog.arm();
      this.stats.bytes += v.length;
      parts.push(v.slice());
      return true;
    }, (e) => this.fetchError(e, dog, signal, what));
    return concat(parts);
  }

  /**
   * Bytes [start, end) of a file, resuming after failures from the last byte received (module
   * comment). `what` names the read in errors.
   */
  readRange(what: string, start: number, end: number, hooks: ReadHooks, signal?: AbortSignal): Promise<Uint8Array> {
    return new RangeRead(this, what, start, end, hooks, signal).run();
  }

  /** A whole (small) file with no Range header; every retry starts again from byte 0. */
  readFile(what: string, hooks: ReadHooks, signal?: AbortSignal): Promise<Uint8Array> {
    return this.retry(what, signal, () => {
      const url = hooks.url();
      return this.exchange(url, { method: 'GET', headers: hooks.headers(url, {}) }, what, signal, async (res, dog) => {
        if (!res.ok) throw hooks.fail(res, url);
        hooks.accept?.(res, url);
        const expected = parseLength(res.headers.get('content-length'));
        const bytes = await this.body(res, dog, what, signal);
        // (a compressed body decodes to more bytes than its Content-Length: only fewer is a cut)
        if (expected !== null && bytes.length < expected) throw transient(`${what}: body cut short: got ${bytes.length} of ${expected} bytes`);
        return bytes;
      });
    });
  }
}

/** Reads a body chunk by chunk until it ends or `take` returns false; read errors go through `fail`. */
async function pump(res: Response, take: (v: Uint8Array) => boolean, fail: (e: unknown) => Error): Promise<void> {
  if (!res.body) return;
  const reader = res.body.getReader();
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw fail(e);
      }
      if (chunk.done || !take(chunk.value)) return;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const all = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  return all;
}

/** One resumable read of bytes [start, start + out.length): its buffer, progress and request size. */
class RangeRead {
  private readonly out: Uint8Array;
  /** Bytes of `out` filled so far (always a prefix). */
  private got = 0;
  /** Largest request, after failures without progress; Infinity: ask for everything missing. */
  private cap = Infinity;

  private readonly client: HttpClient;
  private readonly what: string;
  private readonly start: number;
  private readonly hooks: ReadHooks;
  private readonly signal: AbortSignal | undefined;

  constructor(client: HttpClient, what: string, start: number, end: number, hooks: ReadHooks, signal: AbortSignal | undefined) {
    this.client = client;
    this.what = what;
    this.start = start;
    this.hooks = hooks;
    this.signal = signal;
    this.out = new Uint8Array(end - start);
  }

  run(): Promise<Uint8Array> {
    return this.client.retry(
      this.what,
      this.signal,
      async (progress) => {
        while (!(await this.once(progress))) {
          if (this.cap !== Infinity) this.cap *= 2; // that request succeeded: ask for more again
        }
        return this.out;
      },
      (progressed) => {
        if (!progressed) this.cap = Math.max(MIN_REQUEST_BYTES, Math.floor(Math.min(this.cap, this.out.length - this.got) / 8));
      },
    );
  }

  /** One request from start + got; true when the whole range is in. */
  private once(progress: () => void): Promise<boolean> {
    const from = this.start + this.got;
    const until = Math.min(this.out.length, this.got + this.cap); // this request's end, relative to start
    const url = this.hooks.url();
    const headers = this.hooks.headers(url, { Range: `bytes=${from}-${this.start + until - 1}` });
    return this.client.exchange(url, { method: 'GET', headers }, this.what, this.signal, async (res, dog) => {
      if (!res.ok) throw this.hooks.fail(res, url);
      this.hooks.accept?.(res, url);
      const skip = this.skipOf(res, from, until - this.got);
      const received = await this.receive(res, dog, skip, until, progress);
      if (this.got < until) this.short(res, received, until);
      return this.got === this.out.length;
    });
  }

  /**
   * How many leading body bytes to drop: 0 for a 206 that starts at `from`, `from` for a 200 (the
   * whole file). Anything else is a permanent error.
   */
  private skipOf(res: Response, from: number, want: number): number {
    if (res.status === 206) {
      const cr = parseContentRange(res.headers.get('content-range'));
      if (cr && Number.isFinite(cr.start) && cr.start !== from) {
        discard(res);
        throw new NibbleError('network', `${this.what}: asked for bytes from ${from} but the server sent from ${cr.start}`);
      }
      return 0;
    }
    if (res.status !== 200) {
      discard(res);
      throw new NibbleError('network', `${this.what}: unexpected HTTP ${res.status} to a Range request`);
    }
    const total = parseLength(res.headers.get('content-length'));
    if (from > MAX_SKIP_BYTES || (total !== null && total - want > MAX_SKIP_BYTES)) {
      discard(res);
      const size = total !== null ? `the whole ${total}-byte file` : `${from} bytes before the range`;
      throw new NibbleError('network', `${this.what}: the server ignored the Range header and would send ${size} for a ${want}-byte read`);
    }
    return from;
  }

  /** Copies body bytes into `out` (after dropping `skip`) up to `until`; returns the body bytes received. */
  private async receive(res: Response, dog: Watchdog, skip: number, until: number, progress: () => void): Promise<number> {
    let received = 0;
    await pump(res, (chunk) => {
      dog.arm();
      received += chunk.length;
      this.client.stats.bytes += chunk.length;
      const drop = Math.min(skip, chunk.length);
      skip -= drop;
      const v = chunk.subarray(drop, drop + (until - this.got));
      if (v.length === 0) return true;
      this.out.set(v, this.got);
      this.got += v.length;
      progress();
      return this.got < until;
    }, (e) => this.client.fetchError(e, dog, this.signal, this.what));
    return received;
  }

  /**
   * A body that ended before `until`: a connection cut (fewer bytes than its Content-Length, or no
   * length to tell) is transient; a complete body that is shorter than the range is permanent.
   */
  private short(res: Response, received: number, until: number): never {
    const expected = parseLength(res.headers.get('content-length'));
    if (expected === null || received < expected) {
      throw transient(`${this.what}: body cut short at byte ${this.start + this.got} (asked up to ${this.start + until})`);
    }
    throw new NibbleError('network', `${this.what}: body cut short: got ${this.got} of ${this.out.length} bytes`);
  }
}
