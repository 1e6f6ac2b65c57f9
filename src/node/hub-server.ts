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
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { NibbleError } from '../errors.ts';
import { isInside } from './static.ts';

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
const DEFAULT_FAULT_PATHS = /\.safetensors$/;
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

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function contentType(file: string): string {
  if (/\.json$/i.test(file)) return 'application/json; charset=utf-8';
  if (/\.(txt|md)$/i.test(file)) return 'text/plain; charset=utf-8';
  if (/\.(jinja|py|yaml|yml)$/i.test(file)) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

/** Parses a single-range `bytes=` header. null: no (usable) range → 200; 'unsatisfiable' → 416. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (!header) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return null; // malformed or multi-range: ignored (RFC 9110 allows answering 200)
  const [, a, b] = m;
  if (a === '' && b === '') return null;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return size === 0 ? 'unsatisfiable' : { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  let end = b === '' ? size - 1 : Number(b);
  if (b !== '' && end < start) return null; // invalid → ignore
  if (start >= size) return 'unsatisfiable';
  end = Math.min(end, size - 1);
  return { start, end };
}

interface HashEntry {
  key: string;
  value: Promise<string>;
}

function hashFile(path: string, kind: 'sha256' | 'git', size: number): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash(kind === 'sha256' ? 'sha256' : 'sha1');
    if (kind === 'git') h.update(`blob ${size}\0`);
    const rs = createReadStream(path, { highWaterMark: 1 << 20 });
    rs.on('data', (c) => h.update(c));
    rs.on('error', rej);
    rs.on('end', () => res(h.digest('hex')));
  });
}

interface Repo {
  id: string;
  dir: string;
}

/** Splits a URL path into decoded segments; null if any segment is unsafe. */
function segments(pathname: string): string[] | null {
  const out: string[] = [];
  for (const raw of pathname.split('/')) {
    if (raw === '') continue;
    let s: string;
    try {
      s = decodeURIComponent(raw);
    } catch {
      return null;
    }
    out.push(s);
  }
  return out;
}

function safeFileSegments(parts: string[]): string[] | null {
  const out: string[] = [];
  for (const p of parts) {
    for (const s of p.split('/')) {
      if (s === '') continue;
      if (s.startsWith('.') || s.includes('\\') || s.includes('\0')) return null; // hidden, '..', odd
      out.push(s);
    }
  }
  return out.length > 0 ? out : null;
}

function safeName(s: string | undefined): s is string {
  return !!s && !s.startsWith('.') && !s.includes('\\') && !s.includes('\0') && !s.includes('/');
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
  // every file served must resolve (symlinks followed) inside the real root
  const realRoot = await realpath(root);
  const inRoot = async (p: string): Promise<string | null> => {
    try {
      const real = await realpath(p);
      return isInside(real, realRoot) ? real : null;
    } catch {
      return null;
    }
  };
  /** Base of absolute redirect URLs: the configured address (set once listening); '' → relative. */
  let redirectBase = '';
  const log = opts.log;
  const requests: HubRequestRecord[] = [];
  const secret = randomBytes(16).toString('hex');
  const hashes = new Map<string, HashEntry>();
  const commits = new Map<string, { at: number; value: Promise<string> }>();
  let faults: HubFaults | undefined;
  let rng = mulberry32(0);
  let faulted = 0;
  const setFaults = (f: HubFaults | undefined) => {
    faults = f ? { ...f } : undefined;
    rng = mulberry32(f?.seed ?? 0);
    faulted = 0;
  };
  setFaults(opts.faults);

  const fileHash = (path: string, st: Stats, kind: 'sha256' | 'git'): Promise<string> => {
    const cacheKey = `${kind}:${path}`;
    const key = `${st.size}:${st.mtimeMs}`;
    const hit = hashes.get(cacheKey);
    if (hit && hit.key === key) return hit.value;
    const value = hashFile(path, kind, st.size);
    hashes.set(cacheKey, { key, value });
    value.catch(() => hashes.delete(cacheKey));
    return value;
  };

  async function listFiles(dir: string): Promise<Array<{ rfilename: string; size: number; mtimeMs: number }>> {
    const out: Array<{ rfilename: string; size: number; mtimeMs: number }> = [];
    const walk = async (d: string, prefix: string) => {
      const entries = await readdir(d, { withFileTypes: true });
      for (const e of entries) {
        if (e.name.startsWith('.')) continue;
        const p = join(d, e.name);
        if (e.isDirectory()) await walk(p, `${prefix}${e.name}/`);
        else {
          try {
            const real = await inRoot(p);
            if (!real) continue; // a symlink out of the mirror: not listed
            const st = await stat(real);
            if (st.isFile()) out.push({ rfilename: `${prefix}${e.name}`, size: st.size, mtimeMs: st.mtimeMs });
          } catch {
            // vanished while listing
          }
        }
      }
    };
    await walk(dir, '');
    return out.sort((a, b) => (a.rfilename < b.rfilename ? -1 : a.rfilename > b.rfilename ? 1 : 0));
  }

  /** Fake commit sha: sha1 over the repo id and its file listing (names, sizes, mtimes); cached 1 s. */
  const repoCommit = (repo: Repo): Promise<string> => {
    const hit = commits.get(repo.dir);
    const now = Date.now();
    if (hit && now - hit.at < 1000) return hit.value;
    const value = listFiles(repo.dir).then((files) => {
      const h = createHash('sha1').update(`nibble-hub\0${repo.id}\0`);
      for (const f of files) h.update(`${f.rfilename}\0${f.size}\0${Math.floor(f.mtimeMs)}\n`);
      return h.digest('hex');
    });
    commits.set(repo.dir, { at: now, value });
    value.catch(() => commits.delete(repo.dir));
    return value;
  };

  async function findRepo(org: string | undefined, name: string | undefined): Promise<Repo | null> {
    if (!safeName(org) || !safeName(name)) return null;
    const dir = await inRoot(join(root, org, name));
    if (!dir) return null; // missing, or a symlinked repo pointing out of the mirror
    try {
      if ((await stat(dir)).isDirectory()) return { id: `${org}/${name}`, dir };
    } catch {
      // missing
    }
    return null;
  }

  async function gateToken(repo: Repo): Promise<string | null> {
    try {
      return (await readFile(join(repo.dir, '.gated'), 'utf8')).trim();
    } catch {
      return null;
    }
  }

  const cdnSig = (repo: Repo, file: string) => createHmac('sha256', secret).update(`${repo.id}/${file}`).digest('hex').slice(0, 32);

  function hasToken(req: IncomingMessage, token: string): boolean {
    const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) return false;
    return token === '' ? true : m[1] === token;
  }

  function setCors(res: ServerResponse): void {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Expose-Headers', CORS_EXPOSE_HEADERS.join(', '));
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

  /** Answers with the bytes of a file (whole or a range), streaming; applies the cut fault. */
  function sendFile(
    req: IncomingMessage,
    res: ServerResponse,
    rec: HubRequestRecord,
    path: string,
    st: Stats,
    headers: Record<string, string>,
    cutAfter: number | undefined,
    stallAfter: number | undefined,
    corruptAt: number | undefined,
  ) {
    const size = st.size;
    const range = parseRange(req.headers.range, size);
    if (range === 'unsatisfiable') {
      rec.status = 416;
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}`, 'Content-Length': '0', 'Accept-Ranges': 'bytes' });
      res.end();
      return;
    }
    const start = range ? range.start : 0;
    const end = range ? range.end : size - 1; // inclusive
    const length = Math.max(0, end - start + 1);
    const status = range ? 206 : 200;
    rec.status = status;
    const h: Record<string, string> = {
      ...headers,
      'Accept-Ranges': 'bytes',
      'Content-Length': String(length),
      'Content-Type': contentType(path),
      'Last-Modified': st.mtime.toUTCString(),
    };
    if (range) h['Content-Range'] = `bytes ${start}-${end}/${size}`;
    res.writeHead(status, h);
    if (req.method === 'HEAD' || length === 0) {
      res.end();
      return;
    }
    const limit = cutAfter !== undefined && cutAfter >= 0 && cutAfter < length ? cutAfter : Infinity;
    const stallAt = stallAfter !== undefined && stallAfter >= 0 && stallAfter < length ? stallAfter : Infinity;
    /** Flips the corrupted byte when `buf` (file bytes from `at`) covers it. */
    const corrupt = (buf: Buffer, at: number): Buffer => {
      if (corruptAt === undefined || corruptAt < at || corruptAt >= at + buf.byteLength) return buf;
      const copy = Buffer.from(buf);
      copy[corruptAt - at] ^= 0xff;
      return copy;
    };
    if (stallAt === 0) {
      faulted++;
      res.flushHeaders();
      return;
    }
    const cut = () => {
      // Flush what was written, then close the connection without ending the response.
      const sock = res.socket;
      if (!res.headersSent) res.flushHeaders();
      if (sock) sock.end();
      else res.destroy();
    };
    if (limit === 0) {
      faulted++;
      res.flushHeaders();
      cut();
      return;
    }
    const rs = createReadStream(path, { start, end, highWaterMark: 256 * 1024 });
    let sent = 0;
    res.on('close', () => rs.destroy());
    rs.on('error', (err) => res.destroy(err));
    rs.on('data', (chunk) => {
      const buf = corrupt(chunk as Buffer, start + sent);
      if (sent + buf.byteLength > stallAt && stallAt < limit) {
        const part = buf.subarray(0, stallAt - sent);
        faulted++;
        sent += part.byteLength;
        rec.bytesSent = sent;
        rs.destroy();
        if (part.byteLength > 0) res.write(part);
        return; // stall: the response stays open until the client gives up
      }
      if (sent + buf.byteLength > limit) {
        faulted++;
        const part = buf.subarray(0, limit - sent);
        sent += part.byteLength;
        rec.bytesSent = sent;
        rs.destroy();
        if (part.byteLength > 0) res.write(part);
        cut();
        return;
      }
      sent += buf.byteLength;
      rec.bytesSent = sent;
      if (!res.write(buf)) {
        rs.pause();
        res.once('drain', () => rs.resume());
      }
    });
    rs.on('end', () => {
      if (sent >= limit) return;
      res.end();
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse, rec: HubRequestRecord): Promise<void> {
    const method = req.method ?? 'GET';
    setCors(res);
    if (method === 'OPTIONS') {
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
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') {
      sendError(req, res, rec, 405, null, `method ${method} not allowed`);
      return;
    }

    const f = faults;
    const faultable = !!f && (f.onlyPaths ?? DEFAULT_FAULT_PATHS).test(rec.path);
    const active = faultable && (f!.maxFaults === undefined || faulted < f!.maxFaults);
    if (active) {
      if (f!.latencyMs && f!.latencyMs > 0) {
        faulted++;
        await new Promise((r) => setTimeout(r, f!.latencyMs));
      }
      if (f!.failRate && f!.failRate > 0 && rng() < f!.failRate) {
        faulted++;
        sendError(req, res, rec, 500, 'InjectedFault', 'Internal Error (injected fault)');
        return;
      }
    }
    const cutAfter = active && method === 'GET' ? f!.cutAfterBytes : undefined;
    const stallAfter = active && method === 'GET' ? f!.stallAfterBytes : undefined;
    const corruptAt = faultable && method === 'GET' ? f!.corruptByteAt : undefined;

    const url = new URL(req.url ?? '/', 'http://localhost');
    const parts = segments(url.pathname);
    if (!parts) {
      sendError(req, res, rec, 400, null, 'bad path');
      return;
    }

    // /api/models/{org}/{name}[/revision/{rev}]
    if (parts[0] === 'api' && parts[1] === 'models' && (parts.length === 4 || (parts.length === 6 && parts[4] === 'revision'))) {
      const repo = await findRepo(parts[2], parts[3]);
      if (!repo) {
        sendError(req, res, rec, 404, 'RepoNotFound', `Repository not found: ${parts[2]}/${parts[3]}`);
        return;
      }
      const [files, sha, token] = await Promise.all([listFiles(repo.dir), repoCommit(repo), gateToken(repo)]);
      const lastModified = files.reduce((m, x) => Math.max(m, x.mtimeMs), 0);
      sendJson(req, res, rec, 200, {
        _id: sha.slice(0, 24),
        id: repo.id,
        modelId: repo.id,
        sha,
        private: false,
        gated: token !== null ? 'manual' : false,
        lastModified: new Date(lastModified || Date.now()).toISOString(),
        siblings: files.map((x) => ({ rfilename: x.rfilename, size: x.size })),
      }, { 'X-Repo-Commit': sha });
      return;
    }

    // /{org}/{name}/resolve/{revision}/{file...}  and  /cdn/{org}/{name}/{file...}
    let repo: Repo | null;
    let fileParts: string[] | null;
    const cdn = parts[0] === 'cdn';
    if (cdn && parts.length >= 4) {
      repo = await findRepo(parts[1], parts[2]);
      fileParts = safeFileSegments(parts.slice(3));
    } else if (!cdn && parts.length >= 5 && parts[2] === 'resolve') {
      repo = await findRepo(parts[0], parts[1]);
      fileParts = safeFileSegments(parts.slice(4));
    } else {
      sendError(req, res, rec, 404, null, `Not found: ${url.pathname}`);
      return;
    }
    const repoId = cdn ? `${parts[1]}/${parts[2]}` : `${parts[0]}/${parts[1]}`;
    if (!repo) {
      sendError(req, res, rec, 404, 'RepoNotFound', `Repository not found: ${repoId}`);
      return;
    }
    const file = fileParts ? fileParts.join('/') : '';
    const token = await gateToken(repo);
    if (token !== null && !hasToken(req, token) && !(cdn && url.searchParams.get('sig') === cdnSig(repo, file))) {
      sendError(
        req,
        res,
        rec,
        401,
        'GatedRepo',
        `Access to model ${repo.id} is restricted: send Authorization: Bearer <token> with a valid token`,
      );
      return;
    }
    const abs = fileParts ? await inRoot(join(repo.dir, ...fileParts)) : null;
    let st: Stats | null = null;
    if (abs) {
      try {
        st = await stat(abs);
        if (!st.isFile()) st = null;
      } catch {
        st = null;
      }
    }
    if (!st || !abs) {
      sendError(req, res, rec, 404, 'EntryNotFound', `Entry not found: ${file || '(none)'} in ${repo.id}`);
      return;
    }
    const lfs = LFS_EXT.test(file) || st.size >= LFS_MIN_SIZE;
    const commit = await repoCommit(repo);

    if (cdn) {
      const sha256 = await fileHash(abs, st, 'sha256');
      sendFile(req, res, rec, abs, st, { ETag: `"${sha256}"`, 'X-Repo-Commit': commit }, cutAfter, stallAfter, corruptAt);
      return;
    }
    if (lfs) {
      const sha256 = await fileHash(abs, st, 'sha256');
      let loc = `${redirectBase}/cdn/${repo.id.split('/').map(encodeURIComponent).join('/')}/${fileParts!.map(encodeURIComponent).join('/')}`;
      if (token !== null) loc += `?sig=${cdnSig(repo, file)}`;
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
      return;
    }
    const gitSha = await fileHash(abs, st, 'git');
    sendFile(req, res, rec, abs, st, { ETag: `"${gitSha}"`, 'X-Repo-Commit': commit }, cutAfter, stallAfter, corruptAt);
  }

  const server = createServer((req, res) => {
    const pathOnly = (req.url ?? '/').split('?')[0] ?? '/';
    const rec: HubRequestRecord = {
      method: req.method ?? 'GET',
      path: pathOnly,
      range: typeof req.headers.range === 'string' ? req.headers.range : null,
      status: 0,
      bytesSent: 0,
    };
    requests.push(rec);
    res.on('close', () => {
      log?.(`${rec.method} ${rec.path}${rec.range ? ` [${rec.range}]` : ''} → ${rec.status || res.statusCode} ${rec.bytesSent} B${res.writableFinished ? '' : ' (cut)'}`);
    });
    handle(req, res, rec).catch((err: unknown) => {
      if (!res.headersSent) {
        sendError(req, res, rec, 500, null, `internal error: ${err instanceof Error ? err.message : String(err)}`);
      } else res.destroy();
    });
  });

  await new Promise<void>((res, rej) => {
    const onError = (e: Error) => rej(new NibbleError('network', `hub-serve: cannot listen on ${host}:${opts.port ?? 0}: ${e.message}`, { cause: e }));
    server.once('error', onError);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', onError);
      res();
    });
  });
  const bound = server.address() as AddressInfo;
  const port = bound.port;
  const wildcard = host === '0.0.0.0' || host === '::' || host === '';
  const urlHost = wildcard ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `http://${urlHost}:${port}`;
  const address = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${port}`;
  redirectBase = wildcard ? '' : url;
  log?.(`hub-serve: ${root} listening on ${address}${wildcard ? ` (all interfaces; ${url} from this machine)` : ` (${url})`}`);

  return {
    url,
    address,
    port,
    requests,
    resetStats() {
      requests.length = 0;
    },
    setFaults,
    close() {
      return new Promise<void>((res, rej) => {
        server.close((err) => (err ? rej(err) : res()));
        server.closeAllConnections();
      });
    },
  };
}
