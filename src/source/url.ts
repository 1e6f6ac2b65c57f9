/**
 * UrlSource: a model folder served over HTTP(S) at a base URL; file `p` is `${baseUrl}/${p}`.
 *
 * Byte ranges use the `Range` header. Retries with backoff, stall timeouts and resuming a cut range
 * from the last byte received are `HttpClient`'s (./fetch.ts), as for HubSource: network errors, 5xx,
 * 408 and 429 are retried; 404, 401/403 and the other 4xx fail at once.
 *
 * Static hosts with an SPA fallback (Vite, `vite preview`, many app hosts) answer a missing path with
 * their index.html and status 200. An HTML answer (by Content-Type, or by its first bytes) where a
 * model file was asked for is therefore "not there": `not-found`, so `exists()` is false for optional
 * files (model.safetensors.index.json, generation_config.json) and a required file's error names the
 * host's HTML fallback.
 */
import { parseContentRange, parseLength, discard } from './http.ts';
import { NibbleError, throwIfAborted } from '../errors.ts';
import { HttpClient, isTransientStatus, statusFailure, type FetchStats, type ReadHooks, type RetryOptions } from './fetch.ts';
import { parseEtag, type FileMetadata, type ModelSource } from './types.ts';

export interface UrlSourceOptions extends RetryOptions {
  /** fetch implementation (default: globalThis.fetch), e.g. for tests or auth wrappers. */
  fetch?: typeof fetch;
  /** Headers sent with every request, e.g. `{ Authorization: 'Bearer hf_...' }`. */
  headers?: Record<string, string>;
}


/** Whether `path` names an HTML file (the only files an HTML answer is right for). */
function wantsHtml(path: string): boolean {
  return /\.x?html?$/i.test(path);
}

/** A Content-Type of an HTML page. */
export function isHtmlContentType(v: string | null): boolean {
  return !!v && /^\s*(text\/html|application\/xhtml\+xml)\s*(;|$)/i.test(v);
}

/**
 * Whether bytes start like an HTML page (`<!doctype html`, `<html`, `<head`, `<body`, after a BOM and
 * spaces). A short read (a safetensors length prefix is 8 bytes) counts when it is at least 5 bytes of
 * `<!doctype html`: as a little-endian header length those bytes would be absurd anyway.
 */
export function looksLikeHtml(bytes: Uint8Array): boolean {
  let i = 0;
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) i = 3;
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d)) i++;
  const head = new TextDecoder().decode(bytes.subarray(i, i + 16)).toLowerCase();
  if (/^<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>])/.test(head)) return true;
  return head.length >= 5 && head.length < 14 && '<!doctype html'.startsWith(head);
}


export class UrlSource implements ModelSource {
  readonly description: string;
  readonly cacheId: string;
  private readonly base: string;
  private readonly http: HttpClient;
  private readonly headers: Record<string, string>;
  /** Paths whose HEAD came without a Content-Type (exists() then looks at their first bytes). */
  private readonly untyped = new Set<string>();

  constructor(baseUrl: string, opts: UrlSourceOptions = {}) {
    this.base = baseUrl.replace(/\/+$/, '');
    this.description = this.base;
    this.cacheId = `url:${this.base}`;
    this.http = new HttpClient(opts);
    this.headers = { ...(opts.headers ?? {}) };
  }

  /** Requests, retries, resumes and bytes so far. */
  get stats(): FetchStats {
    return this.http.stats;
  }

  /** The URL of a file; each path segment is percent-encoded, `/` separators kept. */
  url(path: string): string {
    const clean = path.replace(/^\/+/, '');
    return `${this.base}/${clean.split('/').map(encodeURIComponent).join('/')}`;
  }

  /**
   * One request, retried while it fails transiently (network errors, stalls, 5xx, 408, 429); the
   * response that ends the retries (ok, or a status `use` does not retry) goes to `use`, whose body
   * reads stay under the request's stall watchdog.
   */
  private request<T>(
    path: string,
    method: 'GET' | 'HEAD',
    extra: Record<string, string>,
    signal: AbortSignal | undefined,
    use: (res: Response, body: () => Promise<Uint8Array>) => Promise<T>,
  ): Promise<T> {
    const url = this.url(path);
    const what = `${method} ${url}`;
    throwIfAborted(signal, url);
    return this.http.retry(what, signal, () =>
      this.http.exchange(url, { method, headers: { ...this.headers, ...extra } }, what, signal, (res, dog) => {
        if (!res.ok && isTransientStatus(res.status)) throw statusFailure(res, method, url);
        return use(res, () => this.http.body(res, dog, what, signal));
      }),
    );
  }

  /** Maps a non-ok status to the matching NibbleError (and releases the body). */
  private statusError(res: Response, path: string, method: string): NibbleError {
    const url = this.url(path);
    if (res.status === 404) {
      discard(res);
      return new NibbleError('not-found', `file ${path} not found at ${this.base}`);
    }
    if (res.status === 401 || res.status === 403) {
      discard(res);
      return new NibbleError(
        'unauthorized',
        `HTTP ${res.status} for ${url}: the model is gated or private: pass a token (or check that it has access)`,
      );
    }
    return statusFailure(res, method, url);
  }

  /** The error for an HTML page answered where `path` was asked for (a static host's SPA fallback). */
  private htmlError(path: string, how: string): NibbleError {
    return new NibbleError(
      'not-found',
      `file ${path} not found at ${this.base}: the server answered with an HTML page (${how}) instead, as static hosts with an ` +
        `SPA fallback do for missing files (their index.html with status 200); put ${path} in the model folder or check the URL`,
    );
  }

  /** Throws htmlError when an ok response is an HTML page by its Content-Type and `path` is not HTML. */
  private checkNotHtml(res: Response, path: string): void {
    if (res.ok && !wantsHtml(path) && isHtmlContentType(res.headers.get('content-type'))) {
      discard(res);
      throw this.htmlError(path, `Content-Type ${res.headers.get('content-type')}, status ${res.status}`);
    }
  }

  /** Throws htmlError when the first bytes of a file (from offset 0) are an HTML page and `path` is not HTML. */
  private sniffHtml(bytes: Uint8Array, path: string): void {
    if (!wantsHtml(path) && looksLikeHtml(bytes)) throw this.htmlError(path, 'its body starts with an HTML tag');
  }

  /** A read's URL, headers, status errors and HTML check, for HttpClient's reads. */
  private hooks(path: string): ReadHooks {
    const url = this.url(path);
    return {
      url: () => url,
      headers: (_url, extra) => ({ ...this.headers, ...extra }),
      fail: (res) => this.statusError(res, path, 'GET'),
      accept: (res) => this.checkNotHtml(res, path),
    };
  }

  async text(path: string, signal?: AbortSignal): Promise<string> {
    throwIfAborted(signal, this.url(path));
    const bytes = await this.http.readFile(`GET ${this.url(path)}`, this.hooks(path), signal);
    this.sniffHtml(bytes, path);
    return new TextDecoder().decode(bytes);
  }

  async exists(path: string, signal?: AbortSignal): Promise<boolean> {
    try {
      const size = await this.size(path, signal);
      // the HEAD said nothing of the kind of file (no Content-Type): an SPA fallback page shows in its first bytes
      if (size > 0 && !wantsHtml(path) && this.untyped.has(path)) await this.range(path, 0, Math.min(size, 16), signal);
      return true;
    } catch (e) {
      if (e instanceof NibbleError && e.code === 'not-found') return false;
      throw e; // unauthorized / network / aborted are not "absent"
    }
  }

  /** Size, ETag and Last-Modified from a HEAD (falls back to size() when HEAD gives no length). */
  async metadata(path: string, signal?: AbortSignal): Promise<FileMetadata> {
    const head = await this.request(path, 'HEAD', {}, signal, async (res) => {
      if (!res.ok && (res.status === 404 || res.status === 401 || res.status === 403)) throw this.statusError(res, path, 'HEAD');
      this.checkNotHtml(res, path);
      discard(res);
      return res;
    });
    const len = head.ok ? parseLength(head.headers.get('content-length')) : null;
    const size = len ?? (await this.size(path, signal));
    const lm = head.ok ? Date.parse(head.headers.get('last-modified') ?? '') : NaN;
    return {
      size,
      ...(head.ok ? parseEtag(head.headers.get('etag')) : {}),
      ...(Number.isFinite(lm) ? { lastModified: lm } : {}),
    };
  }

  async size(path: string, signal?: AbortSignal): Promise<number> {
    const len = await this.request(path, 'HEAD', {}, signal, async (head) => {
      this.checkNotHtml(head, path);
      discard(head);
      if (head.ok && !head.headers.get('content-type')) this.untyped.add(path);
      if (head.ok) return parseLength(head.headers.get('content-length'));
      if (head.status === 404 || head.status === 401 || head.status === 403) throw this.statusError(head, path, 'HEAD');
      return null;
    });
    return len ?? this.sizeByRange(path, signal);
  }

  /** No usable HEAD (method not allowed, or no Content-Length): ask for one byte and read the total from Content-Range. */
  private sizeByRange(path: string, signal: AbortSignal | undefined): Promise<number> {
    return this.request(path, 'GET', { Range: 'bytes=0-0' }, signal, async (res, body) => {
      this.checkNotHtml(res, path);
      if (res.status === 206 || res.status === 416) {
        // 416 is what a server answers for an empty file (`Content-Range: bytes */0`).
        const cr = parseContentRange(res.headers.get('content-range'));
        discard(res);
        if (cr && Number.isSafeInteger(cr.total)) return cr.total;
        throw new NibbleError('network', `${this.url(path)}: cannot tell the file size (no Content-Length or Content-Range)`);
      }
      if (!res.ok) throw this.statusError(res, path, 'GET');
      // Range ignored: the 200 body is the whole file.
      const len = parseLength(res.headers.get('content-length'));
      if (len === null) return (await body()).length;
      discard(res);
      return len;
    });
  }

  async range(path: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new NibbleError('bad-argument', `range(${path}, ${start}, ${end}): need integers 0 <= start <= end`);
    }
    throwIfAborted(signal, this.url(path));
    if (end === start) return new Uint8Array(0);
    const bytes = await this.http.readRange(`GET ${this.url(path)} [${start}, ${end})`, start, end, this.hooks(path), signal);
    if (start === 0) this.sniffHtml(bytes, path);
    return bytes;
  }
}

