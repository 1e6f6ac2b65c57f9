/**
 * A local Hugging Face Hub mirror for tests and offline work (Node only).
 *
 * Serves `<dir>/<org>/<name>/<file>` with the Hub's URL layout and headers:
 *   GET|HEAD /{org}/{name}/resolve/{revision}/{file...}
 *     - weight files (*.safetensors, *.bin, *.gguf, …, or anything ≥ 10 MiB) are "LFS" files: 302 to
 *       /cdn/{org}/{name}/{file...} with X-Linked-Etag: "<sha256>", X-Linked-Size, ETag (= linked etag);
 *     - small files are answered directly with ETag: "<git blob sha1>";
 *     - every answer carries X-Repo-Commit: a fake commit sha derived from the folder's file listing
 *       (stable while the files do not change). Any revision name serves the same folder.
 *   GET|HEAD /cdn/{org}/{name}/{file...}          the bytes, ETag: "<sha256>"
 *   GET|HEAD /api/models/{org}/{name}[/revision/{rev}]   { id, sha, siblings: [{ rfilename, size }] }
 *   OPTIONS *                                      CORS preflight, 204
 * Range requests (`bytes=a-b`, `bytes=a-`, `bytes=-n`) answer 206 + Content-Range, or 416.
 * Errors: 404 with X-Error-Code RepoNotFound / EntryNotFound, 401 GatedRepo; JSON body { error }.
 * Gated repos: `<dir>/<org>/<name>/.gated` holds a token; requests need `Authorization: Bearer <token>`
 * (the redirect to /cdn carries a signature so a client that drops the header on redirects still works).
 * Files and folders whose name starts with "." are never served, nor anything whose real path (symlinks
 * resolved) lies outside `dir`: a symlinked file, folder or repo pointing elsewhere is 404. Malformed
 * paths (bad percent-escapes, NUL, backslashes, `..` in any encoding) are 400 or 404, never a crash.
 * The redirect's Location is built from the address the server was started with, never from the
 * request's Host header (relative when bound to a wildcard address such as 0.0.0.0).
 *
 * Hashes are computed lazily, streaming, once per (file, size, mtime). Bodies are streamed from fs
 * read streams, so memory stays bounded for multi-GB files.
 *
 * Fault injection (for retry / resume tests), by default only on paths ending in .safetensors:
 * `latencyMs` delays the answer, `failRate` answers 500 instead (deterministic sequence from `seed`),
 * `cutAfterBytes` sends the headers and the first N body bytes of each GET, then closes the connection;
 * `stallAfterBytes` sends the first N body bytes, then nothing more (the connection stays open);
 * `maxFaults` limits those faults to the first N requests they apply to. `corruptByteAt` flips one
 * byte (at that offset of the file) in every body that covers it, while the ETags keep describing the
 * real file: what a bit flip in transit or on the CDN looks like to a client that checks sha256.
 *
 * Code: this file routes requests (`HubMirror`); src/node/hub-repos.ts is the folder (repos, files,
 * hashes, commits, containment); src/node/hub-faults.ts the faults and the streamed file bodies.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { NibbleError } from '../errors.ts';
import { FaultInjector, sendFile, type BodyFaults } from './hub-faults.ts';
import { RepoFolder, safeFileSegments, type Repo } from './hub-repos.ts';

export { parseRange } from './hub-faults.ts';

export interface HubFaults {
  /** Delay before the response starts, in ms. */
  latencyMs?: number;
  /** End each GET body after N bytes (the connection is closed; the client sees a short body). */
  cutAfterBytes?: number;
  /** Fraction 0..1 of requests answered 500, deterministic from `seed`. */
  failRate?: number;
  seed?: number;
  /** Send the first N bytes of each GET body, then stall: no more bytes, connection left open. */
  stallAfterBytes?: number;
  /** Apply latency / failRate / cut / stall to at most this many requests (default: all). */
  maxFaults?: number;
  /** Flip (xor 0xff) the byte at this file offset in every body that covers it (ETags unchanged). */
  corruptByteAt?: number;
  /** Faults apply only to request paths matching this; default: only *.safetensors files. */
  onlyPaths?: RegExp;
}

export interface HubRequestRecord {
  method: string;
  /** The URL path (no query). */
  path: string;
  /** The Range request header, or null. */
  range: string | null;
  status: number;
  /** Body bytes sent (so far, for a response still streaming). */
  bytesSent: number;
}

export interface HubServer {
  /** The URL clients on this machine use: http://HOST:PORT (127.0.0.1 when bound to 0.0.0.0 / ::). */
  url: string;
  /** The address actually bound, `host:port` (`[::]:port` for IPv6), as the OS reports it. */
  address: string;
  port: number;
  close(): Promise<void>;
  /** One record per request, in arrival order. */
  requests: HubRequestRecord[];
  resetStats(): void;
  setFaults(f: HubFaults | undefined): void;
}

export interface HubServerOptions {
  /** Root folder holding `<org>/<name>/...`. */
  dir: string;
  /** 0 (default) picks any free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  faults?: HubFaults;
  log?: (line: string) => void;
}

const LFS_EXT = /\.(safetensors|bin|gguf|pt|pth|ckpt|onnx|h5|msgpack|npz|npy|model)$/i;
const LFS_MIN_SIZE = 10 * 1024 * 1024;
const CORS_ALLOW_HEADERS = ['Range', 'Authorization', 'Content-Type', 'If-None-Match', 'If-Range', 'Cache-Control'];
const CORS_EXPOSE_HEADERS = [
  'Content-Range',
  'Content-Length',
  'ETag',
  'X-Linked-Etag',
  'X-Linked-Size',
  'X-Repo-Commit',
  'Accept-Ranges',
  'X-Error-Code',
  'X-Error-Message',
  'Location',
];

/** Splits a URL path into decoded segments; null if any segment is unsafe. */
function segments(pathname: string): string[] | null {
  const out: string[] = [];
  for (const raw of pathname.split('/')) {
    if (raw === '') continue;
    try {
      out.push(decodeURIComponent(raw));
    } catch {
      return null;
    }
  }
  return out;
}

function hasToken(req: IncomingMessage, token: string): boolean {
  const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (!m) return false;
  return token === '' ? true : m[1] === token;
}

function sendJson(req: IncomingMessage, res: ServerResponse, rec: HubRequestRecord, status: number, body: unknown, headers: Record<string, string> = {}) {
  const text = Buffer.from(JSON.stringify(body));
  rec.status = status;
  res.writeHead(status, { ...headers, 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(text.byteLength) });
  if (req.method === 'HEAD') res.end();
  else {
    rec.bytesSent = text.byteLength;
    res.end(text);
  }
}

function sendError(req: IncomingMessage, res: ServerResponse, rec: HubRequestRecord, status: number, code: string | null, message: string) {
  const headers: Record<string, string> = { 'X-Error-Message': message.replace(/[^\x20-\x7e]/g, '?') };
  if (code) headers['X-Error-Code'] = code;
  sendJson(req, res, rec, status, { error: message }, headers);
}

/** CORS preflight: every method the mirror serves, and every header asked for. */
function sendPreflight(req: IncomingMessage, res: ServerResponse, rec: HubRequestRecord): void {
  const requested = (req.headers['access-control-request-headers'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s && !CORS_ALLOW_HEADERS.some((a) => a.toLowerCase() === s.toLowerCase()));
  rec.status = 204;
  res.writeHead(204, {
    'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS',
    'Access-Control-Allow-Headers': [...CORS_ALLOW_HEADERS, ...requested].join(', '),
    'Access-Control-Max-Age': '86400',
    'Content-Length': '0',
  });
  res.end();
}

/** One request's context: what every handler reads and answers. */
interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  rec: HubRequestRecord;
  faults: BodyFaults;
}

/** The mirror's request handling over its folder; one per server. */
class HubMirror {
  readonly requests: HubRequestRecord[] = [];
  readonly faults = new FaultInjector();
  /** Base of absolute redirect URLs: the configured address (set once listening); '' → relative. */
  redirectBase = '';
  private readonly folder: RepoFolder;
  private readonly log: ((line: string) => void) | undefined;
  private readonly secret = randomBytes(16).toString('hex');

  constructor(folder: RepoFolder, opts: HubServerOptions) {
    this.folder = folder;
    this.log = opts.log;
    this.faults.set(opts.faults);
  }

  /** The server's request listener: records and logs the request, answers 500 on an unexpected error. */
  serve(req: IncomingMessage, res: ServerResponse): void {
    const rec: HubRequestRecord = {
      method: req.method ?? 'GET',
      path: (req.url ?? '/').split('?')[0] ?? '/',
      range: typeof req.headers.range === 'string' ? req.headers.range : null,
      status: 0,
      bytesSent: 0,
    };
    this.requests.push(rec);
    res.on('close', () => {
      this.log?.(`${rec.method} ${rec.path}${rec.range ? ` [${rec.range}]` : ''} → ${rec.status || res.statusCode} ${rec.bytesSent} B${res.writableFinished ? '' : ' (cut)'}`);
    });
    this.handle(req, res, rec).catch((err: unknown) => {
      if (!res.headersSent) {
        sendError(req, res, rec, 500, null, `internal error: ${err instanceof Error ? err.message : String(err)}`);
      } else res.destroy();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse, rec: HubRequestRecord): Promise<void> {
    const method = req.method ?? 'GET';
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Expose-Headers', CORS_EXPOSE_HEADERS.join(', '));
    if (method === 'OPTIONS') return sendPreflight(req, res, rec);
    if (method !== 'GET' && method !== 'HEAD') return sendError(req, res, rec, 405, null, `method ${method} not allowed`);
    const { fail, body } = await this.faults.before(method, rec.path);
    if (fail) return sendError(req, res, rec, 500, 'InjectedFault', 'Internal Error (injected fault)');
    const c: Ctx = { req, res, rec, faults: body };
    const url = new URL(req.url ?? '/', 'http://localhost');
    const parts = segments(url.pathname);
    if (!parts) return sendError(req, res, rec, 400, null, 'bad path');
    if (parts[0] === 'api' && parts[1] === 'models' && (parts.length === 4 || (parts.length === 6 && parts[4] === 'revision'))) {
      return this.apiModel(c, parts[2]!, parts[3]!);
    }
    const cdn = parts[0] === 'cdn';
    if (cdn && parts.length >= 4) return this.repoFile(c, url, parts[1]!, parts[2]!, parts.slice(3), true);
    if (!cdn && parts.length >= 5 && parts[2] === 'resolve') return this.repoFile(c, url, parts[0]!, parts[1]!, parts.slice(4), false);
    sendError(req, res, rec, 404, null, `Not found: ${url.pathname}`);
  }

  /** /api/models/{org}/{name}[/revision/{rev}]: the repo's id, commit and files. */
  private async apiModel({ req, res, rec }: Ctx, org: string, name: string): Promise<void> {
    const repo = await this.folder.findRepo(org, name);
    if (!repo) return sendError(req, res, rec, 404, 'RepoNotFound', `Repository not found: ${org}/${name}`);
    const [files, sha, token] = await Promise.all([this.folder.listFiles(repo.dir), this.folder.repoCommit(repo), this.folder.gateToken(repo)]);
    const lastModified = files.reduce((m, x) => Math.max(m, x.mtimeMs), 0);
    const info = {
      _id: sha.slice(0, 24),
      id: repo.id,
      modelId: repo.id,
      sha,
      private: false,
      gated: token !== null ? 'manual' : false,
      lastModified: new Date(lastModified || Date.now()).toISOString(),
      siblings: files.map((x) => ({ rfilename: x.rfilename, size: x.size })),
    };
    sendJson(req, res, rec, 200, info, { 'X-Repo-Commit': sha });
  }

  private cdnSig(repo: Repo, file: string): string {
    return createHmac('sha256', this.secret).update(`${repo.id}/${file}`).digest('hex').slice(0, 32);
  }

  /**
   * /{org}/{name}/resolve/{revision}/{file...} (a redirect to the CDN path for LFS files, the bytes
   * for small ones) and /cdn/{org}/{name}/{file...} (the bytes); gated repos need the token, or on
   * the CDN path the signature of the redirect.
   */
  private async repoFile(c: Ctx, url: URL, org: string, name: string, rest: string[], cdn: boolean): Promise<void> {
    const { req, res, rec } = c;
    const repo = await this.folder.findRepo(org, name);
    const fileParts = safeFileSegments(rest);
    if (!repo) return sendError(req, res, rec, 404, 'RepoNotFound', `Repository not found: ${org}/${name}`);
    const file = fileParts ? fileParts.join('/') : '';
    const token = await this.folder.gateToken(repo);
    if (token !== null && !hasToken(req, token) && !(cdn && url.searchParams.get('sig') === this.cdnSig(repo, file))) {
      const message = `Access to model ${repo.id} is restricted: send Authorization: Bearer <token> with a valid token`;
      return sendError(req, res, rec, 401, 'GatedRepo', message);
    }
    const found = fileParts ? await this.folder.file(repo, fileParts) : null;
    if (!found) return sendError(req, res, rec, 404, 'EntryNotFound', `Entry not found: ${file || '(none)'} in ${repo.id}`);
    const commit = await this.folder.repoCommit(repo);
    const lfs = LFS_EXT.test(file) || found.st.size >= LFS_MIN_SIZE;
    if (!cdn && lfs) return this.redirect(c, repo, fileParts!, found.abs, found.st, token !== null, commit);
    const etag = await this.folder.fileHash(found.abs, found.st, cdn ? 'sha256' : 'git');
    sendFile(req, res, rec, found, { ETag: `"${etag}"`, 'X-Repo-Commit': commit }, c.faults);
  }

  /** 302 from resolve/ to the CDN path of an LFS file, with its sha256 and size (signed for gated repos). */
  private async redirect({ res, rec }: Ctx, repo: Repo, fileParts: string[], abs: string, st: Stats, gated: boolean, commit: string): Promise<void> {
    const sha256 = await this.folder.fileHash(abs, st, 'sha256');
    let loc = `${this.redirectBase}/cdn/${repo.id.split('/').map(encodeURIComponent).join('/')}/${fileParts.map(encodeURIComponent).join('/')}`;
    if (gated) loc += `?sig=${this.cdnSig(repo, fileParts.join('/'))}`;
    rec.status = 302;
    res.writeHead(302, {
      Location: loc,
      ETag: `"${sha256}"`,
      'X-Linked-Etag': `"${sha256}"`,
      'X-Linked-Size': String(st.size),
      'X-Repo-Commit': commit,
      'Content-Length': '0',
    });
    res.end();
  }
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise<void>((res, rej) => {
    const onError = (e: Error) => rej(new NibbleError('network', `hub-serve: cannot listen on ${host}:${port}: ${e.message}`, { cause: e }));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      res();
    });
  });
}

export async function startHubServer(opts: HubServerOptions): Promise<HubServer> {
  const root = resolve(opts.dir);
  let rootStat: Stats;
  try {
    rootStat = await stat(root);
  } catch (e) {
    throw new NibbleError('not-found', `hub-serve: folder ${root} does not exist`, { cause: e });
  }
  if (!rootStat.isDirectory()) throw new NibbleError('bad-argument', `hub-serve: ${root} is not a folder`);
  const host = opts.host ?? '127.0.0.1';
  const mirror = new HubMirror(await RepoFolder.open(root), opts);
  const server = createServer((req, res) => mirror.serve(req, res));
  await listen(server, host, opts.port ?? 0);

  const bound = server.address() as AddressInfo;
  const port = bound.port;
  const wildcard = host === '0.0.0.0' || host === '::' || host === '';
  const urlHost = wildcard ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `http://${urlHost}:${port}`;
  const address = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${port}`;
  mirror.redirectBase = wildcard ? '' : url;
  opts.log?.(`hub-serve: ${root} listening on ${address}${wildcard ? ` (all interfaces; ${url} from this machine)` : ` (${url})`}`);

  return {
    url,
    address,
    port,
    requests: mirror.requests,
    resetStats() {
      mirror.requests.length = 0;
    },
    setFaults: (f) => mirror.faults.set(f),
    close() {
      return new Promise<void>((res, rej) => {
        server.close((err) => (err ? rej(err) : res()));
        server.closeAllConnections();
      });
    },
  };
}
