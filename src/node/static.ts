import { createReadStream } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { extname, join, resolve, sep } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * Static files for the CLI's runtime page and the dev server's model routes: GET/HEAD with single
 * byte ranges (206 / Content-Range / 416), content types, no caching, streamed from disk.
 *
 * Request paths are parsed defensively (`parseRequestPath`): a malformed percent-escape, NUL,
 * backslash, an encoded `/`, a `.`/`..` segment or a dot-file is a 4xx, never an exception. A file
 * is served only if its real path (symlinks resolved) lies inside the served folder.
 */
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
  '.wgsl': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.wasm': 'application/wasm',
};

/** Longest request path (before the query) we look at; longer is 414. */
export const MAX_PATH_LENGTH = 4096;

export interface ServeOptions {
  /**
   * Send `Access-Control-Allow-Origin: *` (and answer CORS preflights). Default false: the CLI's
   * runtime page and the dev server's pages are same-origin clients and need no CORS.
   */
  cors?: boolean;
  /**
   * Files may resolve (through symlinks) anywhere below this folder; default the served folder
   * itself. The CLI widens it to a Hugging Face cache repo folder for a `snapshots/<rev>` folder,
   * whose files are symlinks into `../../blobs`.
   */
  containRoot?: string;
}

/** A request path → its decoded segments, or the 4xx status and reason to answer. */
export function parseRequestPath(url: string | undefined): { segments: string[] } | { status: 400 | 403 | 414; reason: string } {
  const raw = (url ?? '/').split(/[?#]/, 1)[0];
  if (raw.length > MAX_PATH_LENGTH) return { status: 414, reason: 'path too long' };
  if (!raw.startsWith('/')) return { status: 400, reason: 'bad path' };
  const segments: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '') continue;
    let s: string;
    try {
      s = decodeURIComponent(part);
    } catch {
      return { status: 400, reason: 'malformed percent-escape in the path' };
    }
    if (s.includes('\0') || s.includes('\\') || s.includes('/')) return { status: 400, reason: 'bad character in the path' };
    if (s === '.' || s === '..') return { status: 400, reason: 'dot segment in the path' };
    if (s.startsWith('.')) return { status: 403, reason: 'hidden file' };
    segments.push(s);
  }
  return { segments };
}

function corsHeaders(cors: boolean | undefined): Record<string, string> {
  return cors ? { 'Access-Control-Allow-Origin': '*', 'Access-Control-Expose-Headers': 'Content-Range, Content-Length, Accept-Ranges' } : {};
}

export function sendStatus(res: ServerResponse, status: number, text: string, cors?: boolean): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store', ...corsHeaders(cors) });
  res.end(text);
}

/**
 * Cross-origin isolation (COOP same-origin + COEP require-corp, and CORP same-origin on the
 * response itself): a page served with them is `crossOriginIsolated`, so it may share memory
 * between workers (SharedArrayBuffer: wasm threads, the peer benchmark's wllama). Set before the
 * response's head is written; every later `writeHead` keeps them.
 */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export function setIsolationHeaders(res: ServerResponse): void {
  for (const [k, v] of Object.entries(ISOLATION_HEADERS)) res.setHeader(k, v);
}

/** Whether `p` is `root` or below it (both absolute, normalized). */
export function isInside(p: string, root: string): boolean {
  return p === root || p.startsWith(root.endsWith(sep) ? root : root + sep);
}

/** Serves one file; `name` (default `file`) gives the content type: a symlink's target may have no extension. */
export async function serveFile(req: IncomingMessage, res: ServerResponse, file: string, opts: ServeOptions = {}, name = file): Promise<void> {
  let size: number;
  try {
    const s = await stat(file);
    if (!s.isFile()) {
      sendStatus(res, 404, 'not found', opts.cors);
      return;
    }
    size = s.size;
  } catch {
    sendStatus(res, 404, 'not found', opts.cors);
    return;
  }
  const headers: Record<string, string | number> = {
    'Content-Type': TYPES[extname(name)] ?? 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    'Cache-Control': 'no-store',
    ...corsHeaders(opts.cors),
  };
  let start = 0;
  let end = size - 1;
  let status = 200;
  const range = req.headers.range;
  if (range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (!m || (m[1] === '' && m[2] === '')) {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}` });
      res.end();
      return;
    }
    if (m[1] === '') {
      start = Math.max(0, size - Number(m[2]));
    } else {
      start = Number(m[1]);
      if (m[2] !== '') end = Math.min(end, Number(m[2]));
    }
    if (start >= size || start > end) {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}` });
      res.end();
      return;
    }
    status = 206;
    headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  }
  headers['Content-Length'] = size === 0 ? 0 : end - start + 1;
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || size === 0) {
    res.end();
    return;
  }
  createReadStream(file, { start, end }).on('error', () => res.destroy()).pipe(res);
}

/**
 * A connect-style middleware serving `root` under its mount point. Refused: malformed paths (400),
 * dot-files (403), anything whose real path is outside `containRoot` (default `root`), symlinks
 * included (403).
 */
export function serveDir(root: string, opts: ServeOptions = {}) {
  const base = resolve(root);
  let realContain: Promise<string> | undefined;
  const containment = () => (realContain ??= realpath(resolve(opts.containRoot ?? base)).catch(() => resolve(opts.containRoot ?? base)));
  return (req: IncomingMessage, res: ServerResponse, next?: () => void): void => {
    if (req.method === 'OPTIONS' && opts.cors) {
      res.writeHead(204, {
        'Access-Control-Allow-Origin': '*',
        'Access-Control-Allow-Headers': 'Range, Authorization',
        'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS',
      });
      res.end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      if (next) next();
      else sendStatus(res, 405, 'method not allowed', opts.cors);
      return;
    }
    const parsed = parseRequestPath(req.url);
    if ('status' in parsed) {
      sendStatus(res, parsed.status, parsed.reason, opts.cors);
      return;
    }
    const file = join(base, ...parsed.segments);
    void (async () => {
      let real: string;
      try {
        real = await realpath(file);
      } catch {
        sendStatus(res, 404, 'not found', opts.cors);
        return;
      }
      if (!isInside(real, await containment())) {
        sendStatus(res, 403, 'forbidden: outside the served folder', opts.cors);
        return;
      }
      await serveFile(req, res, real, opts, file);
    })().catch(() => sendStatus(res, 500, 'internal error', opts.cors));
  };
}
