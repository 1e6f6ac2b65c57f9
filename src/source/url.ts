/**
 * UrlSource: a model folder served over HTTP(S) at a base URL; file `p` is `${baseUrl}/${p}`.
 *
 * Byte ranges use the `Range` header. No retries here: a failed request is a NibbleError right
 * away (the Hub source layers retries on top).
 *
 * Static hosts with an SPA fallback (Vite, `vite preview`, many app hosts) answer a missing path with
 * their index.html and status 200. An HTML answer (by Content-Type, or by its first bytes) where a
 * model file was asked for is therefore "not there": `not-found`, so `exists()` is false for optional
 * files (model.safetensors.index.json, generation_config.json) and a required file's error names the
 * host's HTML fallback.
 */
import { parseContentRange, parseLength, discard } from './http.ts';
import { NibbleError } from '../errors.ts';
import { parseEtag, type FileMetadata, type ModelSource } from './types.ts';

export interface UrlSourceOptions {
  /** fetch implementation (default: globalThis.fetch), e.g. for tests or auth wrappers. */
  fetch?: typeof fetch;
  /** Headers sent with every request, e.g. `{ Authorization: 'Bearer hf_...' }`. */
  headers?: Record<string, string>;
}

/**
 * When a server ignores `Range` and answers 200 with the whole file, we only accept it if the
 * whole body is not much bigger than what was asked for; otherwise a 4-byte read of a 5 GB
 * shard would pull the whole shard into memory.
 */
const MAX_UNRANGED_OVERREAD = 64 * 1024 * 1024;

function abortError(signal: AbortSignal | undefined, what: string): NibbleError {
  return new NibbleError('aborted', `${what}: aborted`, { cause: signal?.reason });
}

function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortError(signal, what);
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
  private readonly fetchFn: typeof fetch;
  private readonly headers: Record<string, string>;
  /** Paths whose HEAD came without a Content-Type (exists() then looks at their first bytes). */
  private readonly untyped = new Set<string>();

  constructor(baseUrl: string, opts: UrlSourceOptions = {}) {
    this.base = baseUrl.replace(/\/+$/, '');
    this.description = this.base;
    this.cacheId = `url:${this.base}`;
    // Bind: calling an unbound `fetch` with another `this` throws "Illegal invocation" in browsers.
    this.fetchFn = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.headers = { ...(opts.headers ?? {}) };
  }

  /** The URL of a file; each path segment is percent-encoded, `/` separators kept. */
  url(path: string): string {
    const clean = path.replace(/^\/+/, '');
    return `${this.base}/${clean.split('/').map(encodeURIComponent).join('/')}`;
  }

  /** One HTTP request; fetch failures become NibbleError 'network' / 'aborted'. Status is not checked. */
  private async request(
    path: string,
    method: 'GET' | 'HEAD',
    extra: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    const url = this.url(path);
    throwIfAborted(signal, url);
    try {
      return await this.fetchFn(url, { method, headers: { ...this.headers, ...extra }, signal });
    } catch (e) {
      if (signal?.aborted) throw abortError(signal, url);
      throw new NibbleError('network', `${method} ${url} failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
  }

  /** Maps a non-ok status to the matching NibbleError (and releases the body). */
  private statusError(res: Response, path: string, method: string): NibbleError {
    discard(res);
    const url = this.url(path);
    if (res.status === 404) return new NibbleError('not-found', `file ${path} not found at ${this.base}`);
    if (res.status === 401 || res.status === 403) {
      return new NibbleError(
        'unauthorized',
        `HTTP ${res.status} for ${url}: the model is gated or private: pass a token (or check that it has access)`,
      );
    }
    return new NibbleError('network', `HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''} for ${method} ${url}`);
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

  /** Reads a whole body; a dropped connection mid-body becomes 'network' / 'aborted'. */
  private async body(res: Response, path: string, signal: AbortSignal | undefined): Promise<Uint8Array> {
    try {
      return new Uint8Array(await res.arrayBuffer());
    } catch (e) {
      const url = this.url(path);
      if (signal?.aborted) throw abortError(signal, url);
      throw new NibbleError('network', `reading ${url} failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
  }

  async text(path: string, signal?: AbortSignal): Promise<string> {
    const res = await this.request(path, 'GET', {}, signal);
    if (!res.ok) throw this.statusError(res, path, 'GET');
    this.checkNotHtml(res, path);
    const bytes = await this.body(res, path, signal);
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
    const head = await this.request(path, 'HEAD', {}, signal);
    if (!head.ok && (head.status === 404 || head.status === 401 || head.status === 403)) throw this.statusError(head, path, 'HEAD');
    this.checkNotHtml(head, path);
    discard(head);
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
    const head = await this.request(path, 'HEAD', {}, signal);
    this.checkNotHtml(head, path);
    if (head.ok && !head.headers.get('content-type')) this.untyped.add(path);
    if (head.ok) {
      const len = parseLength(head.headers.get('content-length'));
      if (len !== null) return len;
    } else if (head.status === 404 || head.status === 401 || head.status === 403) {
      throw this.statusError(head, path, 'HEAD');
    }
    // No usable HEAD (method not allowed, or no Content-Length): ask for one byte and read
    // the total from Content-Range.
    const res = await this.request(path, 'GET', { Range: 'bytes=0-0' }, signal);
    this.checkNotHtml(res, path);
    if (res.status === 206 || res.status === 416) {
      // 416 is what a server answers for an empty file (`Content-Range: bytes */0`).
      const cr = parseContentRange(res.headers.get('content-range'));
      discard(res);
      if (cr && Number.isSafeInteger(cr.total)) return cr.total;
      throw new NibbleError('network', `${this.url(path)}: cannot tell the file size (no Content-Length or Content-Range)`);
    }
    if (res.ok) {
      // Range ignored: the 200 body is the whole file.
      const len = parseLength(res.headers.get('content-length'));
      if (len !== null) {
        discard(res);
        return len;
      }
      return (await this.body(res, path, signal)).length;
    }
    throw this.statusError(res, path, 'GET');
  }

  async range(path: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new NibbleError('bad-argument', `range(${path}, ${start}, ${end}): need integers 0 <= start <= end`);
    }
    const want = end - start;
    if (want === 0) {
      throwIfAborted(signal, this.url(path));
      return new Uint8Array(0);
    }
    const url = this.url(path);
    const res = await this.request(path, 'GET', { Range: `bytes=${start}-${end - 1}` }, signal);
    this.checkNotHtml(res, path);
    let bytes: Uint8Array;
    if (res.status === 206) {
      const cr = parseContentRange(res.headers.get('content-range'));
      if (cr && Number.isFinite(cr.start) && cr.start !== start) {
        discard(res);
        throw new NibbleError('network', `${url}: asked for bytes from ${start} but the server sent from ${cr.start}`);
      }
      bytes = await this.body(res, path, signal);
    } else if (res.status === 200) {
      // The server ignored Range and is sending the whole file: take our slice of it.
      const total = parseLength(res.headers.get('content-length'));
      if (total !== null && total - want > MAX_UNRANGED_OVERREAD) {
        discard(res);
        throw new NibbleError(
          'network',
          `${url}: the server ignored the Range header and would send the whole ${total}-byte file for a ${want}-byte read`,
        );
      }
      const whole = await this.body(res, path, signal);
      this.sniffHtml(whole, path);
      if (total !== null && whole.length !== total) {
        throw new NibbleError('network', `${url}: body cut short: got ${whole.length} of ${total} bytes`);
      }
      if (whole.length < end) {
        throw new NibbleError('network', `${url}: body cut short: got ${Math.max(0, whole.length - start)} of ${want} bytes`);
      }
      bytes = whole.subarray(start, end);
    } else {
      throw this.statusError(res, path, 'GET');
    }
    if (bytes.length < want) {
      throw new NibbleError('network', `${url}: range ${start}-${end - 1}: body cut short: got ${bytes.length} of ${want} bytes`);
    }
    if (bytes.length > want) {
      throw new NibbleError('network', `${url}: range ${start}-${end - 1}: body too long: got ${bytes.length} of ${want} bytes`);
    }
    if (start === 0) this.sniffHtml(bytes, path);
    return bytes;
  }
}
