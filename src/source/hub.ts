/**
 * HubSource: a model repo on the Hugging Face Hub (or any server with its URL layout, such as
 * `nibble hub-serve`): file `p` is `{endpoint}/{repo}/resolve/{revision}/{p}`.
 *
 * The retries, stall timeouts and resumable range reads are `HttpClient`'s (./fetch.ts), as for
 * UrlSource. What the Hub layout adds:
 * - Authorization: Bearer <token> for gated / private repos (never sent to another origin, e.g. the
 *   CDN a weight file redirects to);
 * - file metadata from one HEAD per file (memoized): size (X-Linked-Size / Content-Length), the
 *   ETag, which for LFS files is their sha256 (the loader verifies it), and the resolved commit;
 * - the redirect target of a file (the CDN URL of an LFS file) is remembered after the first
 *   request, so later range reads go straight there; if it stops working (expired signature) the
 *   next request goes through `resolve/` again;
 * - Hub-worded errors: 404 → "file F not found in repo R at revision V", 401/403 → "gated or
 *   private: pass a token".
 */
import { discard, parseLength } from './http.ts';
import { NibbleError, throwIfAborted } from '../errors.ts';
import { HttpClient, statusFailure, transient, type FetchStats, type ReadHooks, type RetryOptions } from './fetch.ts';
import { parseEtag, type FileMetadata, type ModelSource } from './types.ts';

export interface HubSourceOptions extends RetryOptions {
  /** Hub endpoint (default https://huggingface.co). */
  endpoint?: string;
  /** Branch, tag or commit (default main). */
  revision?: string;
  /** Access token for gated or private repos. */
  token?: string;
  /** fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch;
}

export const DEFAULT_HUB_ENDPOINT = 'https://huggingface.co';

export type HubSourceStats = FetchStats;

export class HubSource implements ModelSource {
  readonly description: string;
  readonly cacheId: string;
  readonly endpoint: string;
  readonly repo: string;
  readonly revision: string;
  private readonly token: string | undefined;
  private readonly http: HttpClient;
  private readonly origin: string;
  private readonly meta = new Map<string, Promise<FileMetadata>>();
  /** path → URL the resolve URL redirected to (CDN), used for later reads of that file. */
  private readonly redirects = new Map<string, string>();

  constructor(repo: string, opts: HubSourceOptions = {}) {
    this.repo = repo.replace(/^\/+|\/+$/g, '');
    this.endpoint = (opts.endpoint ?? DEFAULT_HUB_ENDPOINT).replace(/\/+$/, '');
    this.revision = opts.revision ?? 'main';
    this.token = opts.token || undefined;
    this.http = new HttpClient({ ...opts, cache: 'no-store' });
    this.origin = new URL(this.endpoint, (globalThis as { location?: Location }).location?.href).origin;
    this.description = `${this.repo}@${this.revision} on ${this.endpoint}`;
    this.cacheId = `hub:${this.endpoint}/${this.repo}@${this.revision}`;
  }

  /** Requests, retries, resumes and bytes so far. */
  get stats(): HubSourceStats {
    return this.http.stats;
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
    const s = res.status;
    if (s !== 404 && s !== 401 && s !== 403) return statusFailure(res, method, url);
    discard(res);
    const code = res.headers.get('x-error-code');
    const where = `repo ${this.repo} at revision ${this.revision}`;
    if (s === 404) {
      if (code === 'RepoNotFound') {
        return new NibbleError('not-found', `file ${path} not found: repo ${this.repo} does not exist on ${this.endpoint} (or it is private: pass a token)`);
      }
      if (code === 'RevisionNotFound') return new NibbleError('not-found', `file ${path} not found: revision ${this.revision} does not exist in repo ${this.repo}`);
      return new NibbleError('not-found', `file ${path} not found in ${where}`);
    }
    return new NibbleError(
      'unauthorized',
      this.token
        ? `HTTP ${s} for ${path} in ${where}: the token was refused; the model is gated or private: pass a token that has access to it`
        : `HTTP ${s} for ${path} in ${where}: the model is gated or private: pass a token (the token option, --token or HF_TOKEN)`,
    );
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
    const what = `HEAD ${url}`;
    return this.http.retry(what, signal, () =>
      this.http.exchange(url, { method: 'HEAD', headers: this.headers(url) }, what, signal, async (res) => {
        if (!res.ok) throw this.statusError(res, path, 'HEAD', url);
        discard(res);
        if (res.redirected && res.url) this.redirects.set(path, res.url);
        const h = res.headers;
        const size = parseLength(h.get('x-linked-size')) ?? parseLength(h.get('content-length'));
        if (size === null) throw new NibbleError('network', `${what}: the server sent no file size (Content-Length)`);
        const lm = h.get('last-modified');
        const lastModified = lm ? Date.parse(lm) : NaN;
        return {
          size,
          ...parseEtag(h.get('x-linked-etag') ?? h.get('etag')),
          ...(Number.isFinite(lastModified) ? { lastModified } : {}),
          ...(h.get('x-repo-commit') ? { commit: h.get('x-repo-commit')! } : {}),
        };
      }),
    );
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
    return new TextDecoder().decode(await this.http.readFile(`GET ${this.url(path)}`, this.hooks(path), signal));
  }

  async range(path: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new NibbleError('bad-argument', `range(${path}, ${start}, ${end}): need integers 0 <= start <= end`);
    }
    if (end === start) {
      throwIfAborted(signal, path);
      return new Uint8Array(0);
    }
    return this.http.readRange(`GET ${this.url(path)} [${start}, ${end})`, start, end, this.hooks(path), signal);
  }

  /**
   * The Hub's part of a read: the remembered CDN URL if there is one (a 4xx from it, e.g. an expired
   * signature, forgets it and retries through resolve/), the token for the Hub's origin only, the
   * Hub's error wording, and remembering where resolve/ redirected to.
   */
  private hooks(path: string): ReadHooks {
    return {
      url: () => this.redirects.get(path) ?? this.url(path),
      headers: (url, extra) => this.headers(url, extra),
      fail: (res, url) => {
        if (url === this.redirects.get(path) && res.status >= 400 && res.status < 500) {
          discard(res);
          this.redirects.delete(path);
          return transient(`GET ${url}: HTTP ${res.status} from the redirect target; resolving again`);
        }
        return this.statusError(res, path, 'GET', url);
      },
      accept: (res, url) => {
        if (res.redirected && res.url && url !== this.redirects.get(path)) this.redirects.set(path, res.url);
      },
    };
  }
}
