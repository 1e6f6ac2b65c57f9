import { readFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/**
 * Small loopback servers for the source / CLI tests:
 * - `startSpaServer`: a static host with an SPA fallback, like `vite`, `vite preview` and many app
 *   hosts: every missing path is answered with index.html and status 200;
 * - `recordedStatic`: a plain static server that records each request's headers.
 * Both send CORS headers (`*`, Range and Authorization allowed) so a page on another origin can read them.
 */
export const INDEX_HTML = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>My app</title></head><body><div id="app"></div></body></html>\n';

export interface TestServer {
  server: Server;
  url: string;
  /** method, path and headers of every request, in arrival order */
  requests: Array<{ method: string; path: string; headers: IncomingHttpHeaders }>;
  close(): Promise<void>;
}

function cors(headers: Record<string, string | number>): Record<string, string | number> {
  return {
    ...headers,
    'Access-Control-Allow-Origin': '*',
    'Access-Control-Allow-Headers': 'Range, Authorization',
    'Access-Control-Expose-Headers': 'Content-Range, Content-Length, Accept-Ranges, ETag',
  };
}

async function listen(server: Server, requests: TestServer['requests']): Promise<TestServer> {
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    server,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

/**
 * Serves `root` (files under `/`), answering a missing path with index.html (200). `htmlType: false`
 * sends the fallback without a Content-Type, so only its first bytes tell it is HTML. `missing` lists
 * files of `root` to pretend are not there.
 */
export function startSpaServer(root: string, opts: { htmlType?: boolean; missing?: string[] } = {}): Promise<TestServer> {
  return fileServer(root, opts.missing ?? [], (req, res) => {
    const body = Buffer.from(INDEX_HTML);
    const h: Record<string, string | number> = { 'Content-Length': body.length };
    if (opts.htmlType !== false) h['Content-Type'] = 'text/html; charset=utf-8';
    res.writeHead(200, cors(h));
    res.end(req.method === 'HEAD' ? undefined : body);
  });
}

/**
 * Serves the files of `root` (Range requests included) with CORS, recording every request; a path
 * that is missing, listed in `missing`, or holds `..` goes to `onMissing`.
 */
function fileServer(
  root: string,
  missing: string[],
  onMissing: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void,
): Promise<TestServer> {
  const requests: TestServer['requests'] = [];
  const server = createServer(async (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    requests.push({ method: req.method ?? 'GET', path, headers: req.headers });
    if (req.method === 'OPTIONS') return void res.writeHead(204, cors({})).end();
    let name: string;
    try {
      name = decodeURIComponent(path).replace(/^\/+/, '');
    } catch {
      return void res.writeHead(400, cors({})).end();
    }
    const data = name && !name.includes('..') && !missing.includes(name) ? await readFile(join(root, name)).catch(() => null) : null;
    if (!data) return onMissing(req, res);
    sendBytes(req.method ?? 'GET', req.headers.range, data, res);
  });
  return listen(server, requests);
}

function sendBytes(method: string, range: string | undefined, data: Buffer, res: import('node:http').ServerResponse): void {
  const m = /^bytes=(\d+)-(\d*)$/.exec(range ?? '');
  if (m) {
    const start = Number(m[1]);
    const end = m[2] === '' ? data.length - 1 : Math.min(Number(m[2]), data.length - 1);
    if (start >= data.length) return void res.writeHead(416, cors({ 'Content-Range': `bytes */${data.length}` })).end();
    const body = data.subarray(start, end + 1);
    res.writeHead(206, cors({ 'Content-Range': `bytes ${start}-${end}/${data.length}`, 'Content-Length': body.length, 'Content-Type': 'application/octet-stream' }));
    return void res.end(method === 'HEAD' ? undefined : body);
  }
  res.writeHead(200, cors({ 'Content-Length': data.length, 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes' }));
  res.end(method === 'HEAD' ? undefined : data);
}

/** A plain static server over `root` (404 for missing files) recording every request's headers. */
export function recordedStatic(root: string): Promise<TestServer> {
  return fileServer(root, [], (_req, res) => void res.writeHead(404, cors({ 'Content-Type': 'text/plain' })).end('not found'));
}

/**
 * A Hub-layout endpoint that redirects every file of `repo` to `target` (another origin), as the
 * Hub redirects LFS files to its CDN: `/{repo}/resolve/{rev}/{file}` → 302 `${target}/{file}`.
 */
export function redirectingHub(repo: string, target: string): Promise<TestServer> {
  const requests: TestServer['requests'] = [];
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    requests.push({ method: req.method ?? 'GET', path, headers: req.headers });
    if (req.method === 'OPTIONS') return void res.writeHead(204, cors({ 'Access-Control-Allow-Methods': 'GET, HEAD' })).end();
    const prefix = `/${repo}/resolve/`;
    if (!path.startsWith(prefix)) return void res.writeHead(404, cors({ 'X-Error-Code': 'RepoNotFound' })).end();
    const file = path.slice(prefix.length).split('/').slice(1).join('/');
    res.writeHead(302, cors({ Location: `${target}/${file}`, 'Content-Length': 0 }));
    res.end();
  });
  return listen(server, requests);
}
