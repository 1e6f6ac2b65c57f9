import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NibbleError } from '../../src/errors.ts';
import { openCheckpoint } from '../../src/loader/safetensors.ts';
import { FsSource } from '../../src/node/fs-source.ts';
import { BlobSource } from '../../src/source/blob.ts';
import { UrlSource } from '../../src/source/url.ts';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const modelsDir = path.resolve(repoRoot, process.env.NIBBLE_MODELS_DIR ?? '../shared/models');
const storiesDir = path.join(modelsDir, 'stories260K');

async function errorOf(fn: () => Promise<unknown>, code: string): Promise<string> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(NibbleError);
    expect((e as NibbleError).code).toBe(code);
    return (e as NibbleError).message;
  }
  throw new Error(`expected a NibbleError '${code}', nothing was thrown`);
}

/**
 * A static file server over `root` with Range support, plus fault routes:
 *   /short/F    answers ranges with 206 but only half the bytes
 *   /norange/F  ignores Range (200, whole file)
 *   /nohead/F   answers HEAD with 405
 *   /gated/F    401
 *   /broken/F   500
 * and, for the retries, faults on the first GET of each file only (later requests are served plainly):
 *   /cut/F      sends the headers (full Content-Length) and half the body, then closes the connection
 *   /busy/F     503 with Retry-After: 0
 *   /stall/F    sends half the body, then nothing (the connection stays open)
 *   /cutwhole/F ignores Range (200, whole file) on every GET, and cuts the first one after 300 bytes
 *   /shifted/F  answers a range with 206 from one byte later than asked (a wrong Content-Range)
 */
const MODES = ['short', 'norange', 'nohead', 'gated', 'broken', 'cut', 'busy', 'stall', 'cutwhole', 'shifted'];

function startServer(root: string): Promise<{ server: Server; base: string; hits: string[] }> {
  const hits: string[] = [];
  const faulted = new Set<string>(); // mode/file pairs whose first GET had its fault
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = decodeURIComponent(url.pathname).split('/').filter(Boolean);
    const mode = MODES.includes(parts[0] ?? '') ? parts.shift()! : 'plain';
    hits.push(`${req.method} ${mode} ${parts.join('/')} ${req.headers.range ?? ''}`);
    if (mode === 'gated') return res.writeHead(401).end('unauthorized');
    if (mode === 'broken') return res.writeHead(500).end('oops');
    if (mode === 'nohead' && req.method === 'HEAD') return res.writeHead(405).end();
    let data: Buffer;
    try {
      data = await readFile(path.join(root, ...parts));
    } catch {
      return res.writeHead(404).end('not found');
    }
    const key = `${mode}/${parts.join('/')}`;
    const fault = req.method === 'GET' && !faulted.has(key) && ['cut', 'busy', 'stall', 'cutwhole'].includes(mode);
    if (fault) faulted.add(key);
    if (fault && mode === 'busy') return res.writeHead(503, { 'Retry-After': '0' }).end('busy');
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    let status = 200;
    let body = data;
    const headers: Record<string, string | number> = {};
    if (m && mode !== 'norange' && mode !== 'cutwhole') {
      const start = Number(m[1]) + (mode === 'shifted' ? 1 : 0);
      const end = Math.min(Number(m[2]), data.length - 1);
      if (start >= data.length) {
        return res.writeHead(416, { 'Content-Range': `bytes */${data.length}` }).end();
      }
      body = data.subarray(start, end + 1);
      if (mode === 'short') body = body.subarray(0, Math.floor(body.length / 2));
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${start + body.length - 1}/${data.length}`;
    }
    res.writeHead(status, { ...headers, 'Content-Length': body.length });
    if (req.method === 'HEAD') return res.end();
    if (!fault) return res.end(body);
    // the connection breaks (cut) or goes quiet (stall) part-way through the body
    res.write(body.subarray(0, mode === 'cutwhole' ? 300 : Math.floor(body.length / 2)));
    if (mode !== 'stall') setTimeout(() => res.socket?.destroy(), 20);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({ server, base: `http://127.0.0.1:${port}`, hits });
    }),
  );
}

describe('UrlSource', () => {
  let dir: string;
  let server: Server;
  let base: string;
  let hits: string[];
  const content = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nibble-url-'));
    await writeFile(path.join(dir, 'data.bin'), content);
    await writeFile(path.join(dir, 'empty.bin'), new Uint8Array(0));
    await writeFile(path.join(dir, 'config.json'), '{"model_type":"llama"}');
    await writeFile(path.join(dir, 'with space.txt'), 'spaced');
    ({ server, base, hits } = await startServer(dir));
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  it('reads text, size, existence and ranges (206)', async () => {
    const src = new UrlSource(base + '/'); // trailing slash is handled
    expect(src.description).toBe(base);
    expect(await src.text('config.json')).toBe('{"model_type":"llama"}');
    expect(await src.text('with space.txt')).toBe('spaced');
    expect(await src.size('data.bin')).toBe(1000);
    expect(await src.exists('data.bin')).toBe(true);
    expect(await src.exists('nope.bin')).toBe(false);
    hits.length = 0;
    expect(Array.from(await src.range('data.bin', 10, 20))).toEqual(Array.from(content.subarray(10, 20)));
    expect(hits).toEqual(['GET plain data.bin bytes=10-19']);
    expect(Array.from(await src.range('data.bin', 990, 1000))).toEqual(Array.from(content.subarray(990)));
    expect((await src.range('data.bin', 5, 5)).length).toBe(0);
  });

  it('accepts a 200 whole-file answer and slices it', async () => {
    const src = new UrlSource(`${base}/norange`);
    expect(Array.from(await src.range('data.bin', 100, 110))).toEqual(Array.from(content.subarray(100, 110)));
  });

  it('errors when a 200 whole-file answer is shorter than the range', async () => {
    const src = new UrlSource(`${base}/norange`);
    expect(await errorOf(() => src.range('data.bin', 990, 1010), 'network')).toMatch(/body cut short: got 10 of 20 bytes/);
  });

  it('falls back to a one-byte range GET when HEAD is not allowed', async () => {
    const src = new UrlSource(`${base}/nohead`);
    expect(await src.size('data.bin')).toBe(1000);
    expect(await src.size('empty.bin')).toBe(0); // 416 with bytes */0
    expect(await src.exists('missing.bin')).toBe(false);
  });

  it('reports a body cut short', async () => {
    const src = new UrlSource(`${base}/short`);
    const msg = await errorOf(() => src.range('data.bin', 0, 100), 'network');
    expect(msg).toMatch(/body cut short: got 50 of 100 bytes/);
    expect(msg).toContain(`${base}/short/data.bin`);
  });

  it('retries a cut connection and resumes the range from the last byte received', async () => {
    const src = new UrlSource(`${base}/cut`, { retryDelayMs: 1 });
    hits.length = 0;
    expect(Array.from(await src.range('data.bin', 100, 900))).toEqual(Array.from(content.subarray(100, 900)));
    // the first GET delivered 400 bytes before the cut; the retry asks only for the rest
    expect(hits).toEqual(['GET cut data.bin bytes=100-899', 'GET cut data.bin bytes=500-899']);
    expect(src.stats).toMatchObject({ retries: 1, resumes: 1, requests: 2 });
    // a whole-file read (no length to resume against) starts again from byte 0
    const again = new UrlSource(`${base}/cut`, { retryDelayMs: 1 });
    hits.length = 0;
    expect(await again.text('config.json')).toBe('{"model_type":"llama"}');
    expect(hits).toEqual(['GET cut config.json ', 'GET cut config.json ']);
  });

  it('retries a 503 (Retry-After) and gives the right bytes', async () => {
    const src = new UrlSource(`${base}/busy`, { retryDelayMs: 10_000 }); // Retry-After: 0 overrides the backoff
    hits.length = 0;
    const t0 = performance.now();
    expect(Array.from(await src.range('data.bin', 0, 10))).toEqual(Array.from(content.subarray(0, 10)));
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(hits).toEqual(['GET busy data.bin bytes=0-9', 'GET busy data.bin bytes=0-9']);
    expect(src.stats.retries).toBe(1);
  });

  it('waits as long as a 429 Retry-After says', async () => {
    let calls = 0;
    const fake: typeof fetch = async () =>
      ++calls === 1
        ? new Response('slow down', { status: 429, headers: { 'Retry-After': '1' } })
        : new Response(new Uint8Array([1, 2, 3, 4]), { status: 206, headers: { 'Content-Range': 'bytes 0-3/4' } });
    const src = new UrlSource('https://host/m', { fetch: fake, retryDelayMs: 1 });
    const t0 = performance.now();
    expect(Array.from(await src.range('f', 0, 4))).toEqual([1, 2, 3, 4]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(900);
    expect(calls).toBe(2);
  });

  it('does not retry a 404, a 401 or a wrong Content-Range', async () => {
    for (const [src, code] of [
      [new UrlSource(base, { retryDelayMs: 1 }), 'not-found'],
      [new UrlSource(`${base}/gated`, { retryDelayMs: 1 }), 'unauthorized'],
    ] as const) {
      hits.length = 0;
      await errorOf(() => src.range('missing.bin', 0, 4), code);
      expect(hits.length).toBe(1);
      expect(src.stats.retries).toBe(0);
    }
    const shifted = new UrlSource(`${base}/shifted`, { retryDelayMs: 1 });
    hits.length = 0;
    expect(await errorOf(() => shifted.range('data.bin', 10, 20), 'network')).toMatch(/asked for bytes from 10 but the server sent from 11/);
    expect(hits.length).toBe(1);
  });

  it('a 200 answering a resumed Range request is the whole file: the bytes before the offset are dropped, not appended', async () => {
    const src = new UrlSource(`${base}/cutwhole`, { retryDelayMs: 1 });
    hits.length = 0;
    // first GET: 200 with the whole file, cut after 300 bytes (200 of them wanted); the retry asks
    // for bytes=300-599 and again gets a 200 from byte 0
    expect(Array.from(await src.range('data.bin', 100, 600))).toEqual(Array.from(content.subarray(100, 600)));
    expect(hits).toEqual(['GET cutwhole data.bin bytes=100-599', 'GET cutwhole data.bin bytes=300-599']);
    expect(src.stats.resumes).toBe(1);
  });

  it('a stalled body is aborted after stallTimeoutMs and resumed', async () => {
    const src = new UrlSource(`${base}/stall`, { retryDelayMs: 1, stallTimeoutMs: 200 });
    hits.length = 0;
    expect(Array.from(await src.range('data.bin', 0, 1000))).toEqual(Array.from(content));
    expect(hits).toEqual(['GET stall data.bin bytes=0-999', 'GET stall data.bin bytes=500-999']);
  });

  it('maps 404, 401 and 500', async () => {
    const src = new UrlSource(base);
    expect(await errorOf(() => src.text('missing.json'), 'not-found')).toBe(`file missing.json not found at ${base}`);
    expect(await errorOf(() => src.range('missing.bin', 0, 4), 'not-found')).toMatch(/missing.bin not found/);
    const gated = new UrlSource(`${base}/gated`);
    expect(await errorOf(() => gated.text('config.json'), 'unauthorized')).toMatch(/gated or private: pass a token/);
    expect(await errorOf(() => gated.exists('config.json'), 'unauthorized')).toMatch(/401/);
    const broken = new UrlSource(`${base}/broken`, { retryDelayMs: 1, retries: 2 });
    expect(await errorOf(() => broken.range('data.bin', 0, 4), 'network')).toMatch(
      new RegExp(`HTTP 500.*${base}/broken/data.bin.*gave up after 3 attempts`),
    );
  });

  it('wraps fetch rejections as network errors with the cause', async () => {
    const cause = new TypeError('fetch failed');
    const src = new UrlSource('http://example.invalid', { fetch: () => Promise.reject(cause), retryDelayMs: 1 });
    try {
      await src.size('x');
      throw new Error('unreachable');
    } catch (e) {
      expect((e as NibbleError).code).toBe('network');
      expect((e as NibbleError).cause).toBe(cause);
    }
  });

  it('sends the configured headers', async () => {
    const seen: Array<Record<string, string>> = [];
    const fake: typeof fetch = async (_url, init) => {
      seen.push({ ...(init?.headers as Record<string, string>) });
      return new Response(new Uint8Array(4), { status: 206, headers: { 'Content-Range': 'bytes 0-3/4' } });
    };
    const src = new UrlSource('https://host/m', { fetch: fake, headers: { Authorization: 'Bearer t' } });
    await src.range('f', 0, 4);
    expect(seen[0]).toEqual({ Authorization: 'Bearer t', Range: 'bytes=0-3' });
  });

  it('respects AbortSignal', async () => {
    const src = new UrlSource(base);
    const ac = new AbortController();
    ac.abort();
    expect(await errorOf(() => src.range('data.bin', 0, 10, ac.signal), 'aborted')).toMatch(/aborted/);
    // Abort while the request is in flight.
    const slow = new UrlSource(base, {
      fetch: (_u, init) =>
        new Promise((_, reject) => init?.signal?.addEventListener('abort', () => reject(new DOMException('x', 'AbortError')))),
    });
    const ac2 = new AbortController();
    const p = errorOf(() => slow.text('config.json', ac2.signal), 'aborted');
    ac2.abort();
    await p;
  });

  it('serves a whole checkpoint the same as FsSource', async () => {
    const { server: s2, base: b2 } = await startServer(storiesDir);
    try {
      const viaUrl = await openCheckpoint(new UrlSource(b2));
      const viaFs = await openCheckpoint(new FsSource(storiesDir));
      expect(viaUrl).toEqual(viaFs);
    } finally {
      await new Promise((r) => s2.close(r));
    }
  });
});

describe('FsSource', () => {
  const src = new FsSource(storiesDir);

  it('reads sizes and ranges equal to the file bytes', async () => {
    const file = path.join(storiesDir, 'model.safetensors');
    const whole = await readFile(file);
    expect(await src.size('model.safetensors')).toBe((await stat(file)).size);
    expect(Buffer.from(await src.range('model.safetensors', 0, 8)).equals(whole.subarray(0, 8))).toBe(true);
    expect(Buffer.from(await src.range('model.safetensors', 123_457, 200_001)).equals(whole.subarray(123_457, 200_001))).toBe(true);
    expect((await src.range('model.safetensors', 10, 10)).length).toBe(0);
    expect(JSON.parse(await src.text('config.json')).model_type).toBe('llama');
    expect(await src.exists('config.json')).toBe(true);
    expect(await src.exists('model.safetensors.index.json')).toBe(false);
  });

  it('errors on missing files, a missing directory, ranges past EOF and escaping paths', async () => {
    expect(await errorOf(() => src.text('nope.json'), 'not-found')).toBe(`file nope.json not found in ${storiesDir}`);
    expect(await errorOf(() => src.range('nope.bin', 0, 1), 'not-found')).toMatch(/nope.bin/);
    const size = await src.size('config.json');
    expect(await errorOf(() => src.range('config.json', 0, size + 1), 'bad-argument')).toMatch(/outside file config.json/);
    expect(await errorOf(() => src.text('../stories260K/config.json/../../x'), 'bad-argument')).toMatch(/outside the model directory/);
    const gone = new FsSource(path.join(storiesDir, 'no-such-dir'));
    expect(await errorOf(() => gone.exists('config.json'), 'not-found')).toMatch(/model directory .*no-such-dir does not exist/);
    expect(await errorOf(() => gone.text('config.json'), 'not-found')).toMatch(/no-such-dir does not exist/);
  });

  it('respects an aborted signal', async () => {
    const ac = new AbortController();
    ac.abort();
    expect(await errorOf(() => src.range('model.safetensors', 0, 8, ac.signal), 'aborted')).toMatch(/aborted/);
  });
});

describe('BlobSource', () => {
  it('maps picked folder files by their path below the picked folder', async () => {
    const file = (name: string, rel: string, body: string) => {
      const f = new File([body], name);
      Object.defineProperty(f, 'webkitRelativePath', { value: rel });
      return f;
    };
    const src = new BlobSource([
      file('config.json', 'my-model/config.json', '{"a":1}'),
      file('w.bin', 'my-model/sub/w.bin', 'abcdef'),
      new File(['x'], 'loose.txt'),
    ]);
    expect(src.description).toBe('picked folder "my-model"');
    expect(src.paths().sort()).toEqual(['config.json', 'loose.txt', 'sub/w.bin']);
    expect(await src.text('config.json')).toBe('{"a":1}');
    expect(await src.size('sub/w.bin')).toBe(6);
    expect(new TextDecoder().decode(await src.range('sub/w.bin', 2, 5))).toBe('cde');
    expect(await src.exists('nope')).toBe(false);
    expect(await errorOf(() => src.text('nope'), 'not-found')).toMatch(/file nope not found in picked folder "my-model"/);
    expect(await errorOf(() => src.range('sub/w.bin', 2, 9), 'bad-argument')).toMatch(/outside/);
  });

  it('reads the real checkpoint from blobs', async () => {
    const bytes = await readFile(path.join(storiesDir, 'model.safetensors'));
    const src = new BlobSource(new Map([['model.safetensors', new Blob([bytes])]]));
    const table = await openCheckpoint(src);
    expect(table.tensors.size).toBe(47);
  });
});
