import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseRange, startHubServer, type HubServer } from '../../src/node/hub-server.ts';

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Set when the body ended early (connection closed before Content-Length bytes). */
  error: string | null;
}

/** Raw HTTP (no redirect following, HEAD allowed, short bodies observable). */
function http(url: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let error: string | null = null;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), error });
      };
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('aborted', () => {
        error ??= 'aborted';
      });
      res.on('error', (e) => {
        error ??= e.message;
        finish();
      });
      res.on('end', finish);
      res.on('close', finish);
    });
    req.on('error', reject);
    req.end();
  });
}

const FILE_SIZE = 100_000;

describe('hub-server', () => {
  let dir: string;
  let server: HubServer;
  let weights: Buffer;
  let config: Buffer;
  let sha256: string;
  const logLines: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nibble-hub-'));
    mkdirSync(join(dir, 'org', 'name', 'sub'), { recursive: true });
    config = Buffer.from(JSON.stringify({ model_type: 'llama', hidden_size: 8 }));
    weights = randomBytes(FILE_SIZE);
    sha256 = createHash('sha256').update(weights).digest('hex');
    writeFileSync(join(dir, 'org', 'name', 'config.json'), config);
    writeFileSync(join(dir, 'org', 'name', 'model.safetensors'), weights);
    writeFileSync(join(dir, 'org', 'name', 'sub', 'notes.txt'), 'hello');
    writeFileSync(join(dir, 'org', 'name', '.secret'), 'hidden');
    mkdirSync(join(dir, 'org', 'gated'), { recursive: true });
    writeFileSync(join(dir, 'org', 'gated', 'config.json'), config);
    writeFileSync(join(dir, 'org', 'gated', 'model.safetensors'), weights);
    writeFileSync(join(dir, 'org', 'gated', '.gated'), 'hf_secret_token\n');
    server = await startHubServer({ dir, port: 0, log: (l) => logLines.push(l) });
  });

  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    server.setFaults(undefined);
    server.resetStats();
  });

  it('listens on 127.0.0.1 with a port', () => {
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);
    expect(server.port).toBeGreaterThan(0);
  });

  it('serves small files directly with a git-sha1 ETag, HEAD and GET', async () => {
    const url = `${server.url}/org/name/resolve/main/config.json`;
    const head = await http(url, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(config.byteLength));
    expect(head.headers['accept-ranges']).toBe('bytes');
    const gitSha = createHash('sha1').update(`blob ${config.byteLength}\0`).update(config).digest('hex');
    expect(head.headers.etag).toBe(`"${gitSha}"`);
    expect(head.headers['x-repo-commit']).toMatch(/^[0-9a-f]{40}$/);
    expect(head.body.byteLength).toBe(0);
    const get = await http(url);
    expect(get.status).toBe(200);
    expect(get.body.equals(config)).toBe(true);
    expect(get.headers['content-type']).toMatch(/application\/json/);
    // any revision serves the same folder, with a stable commit
    const other = await http(`${server.url}/org/name/resolve/v1.0/config.json`, { method: 'HEAD' });
    expect(other.status).toBe(200);
    expect(other.headers['x-repo-commit']).toBe(head.headers['x-repo-commit']);
    // files in subfolders
    const sub = await http(`${server.url}/org/name/resolve/main/sub/notes.txt`);
    expect(sub.status).toBe(200);
    expect(sub.body.toString()).toBe('hello');
  });

  it('redirects weight files to the CDN path with X-Linked-Etag = sha256', async () => {
    const res = await http(`${server.url}/org/name/resolve/main/model.safetensors`, { method: 'HEAD' });
    expect(res.status).toBe(302);
    expect(res.headers['x-linked-etag']).toBe(`"${sha256}"`);
    expect(res.headers.etag).toBe(`"${sha256}"`);
    expect(res.headers['x-linked-size']).toBe(String(FILE_SIZE));
    expect(res.headers['x-repo-commit']).toMatch(/^[0-9a-f]{40}$/);
    const loc = res.headers.location!;
    expect(new URL(loc).pathname).toBe('/cdn/org/name/model.safetensors');
    const head = await http(loc, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.etag).toBe(`"${sha256}"`);
    expect(head.headers['content-length']).toBe(String(FILE_SIZE));
    const get = await http(loc);
    expect(get.status).toBe(200);
    expect(get.body.equals(weights)).toBe(true);
    // fetch follows the redirect like a browser
    const fetched = await fetch(`${server.url}/org/name/resolve/main/model.safetensors`);
    expect(fetched.status).toBe(200);
    expect(Buffer.from(await fetched.arrayBuffer()).equals(weights)).toBe(true);
  });

  it('answers Range requests with 206 and 416', async () => {
    const url = `${server.url}/cdn/org/name/model.safetensors`;
    const a = await http(url, { headers: { Range: 'bytes=10-19' } });
    expect(a.status).toBe(206);
    expect(a.headers['content-range']).toBe(`bytes 10-19/${FILE_SIZE}`);
    expect(a.headers['content-length']).toBe('10');
    expect(a.body.equals(weights.subarray(10, 20))).toBe(true);
    const b = await http(url, { headers: { Range: `bytes=${FILE_SIZE - 5}-` } });
    expect(b.status).toBe(206);
    expect(b.headers['content-range']).toBe(`bytes ${FILE_SIZE - 5}-${FILE_SIZE - 1}/${FILE_SIZE}`);
    expect(b.body.equals(weights.subarray(FILE_SIZE - 5))).toBe(true);
    const c = await http(url, { headers: { Range: `bytes=${FILE_SIZE - 3}-${FILE_SIZE + 100}` } });
    expect(c.status).toBe(206);
    expect(c.body.byteLength).toBe(3);
    const d = await http(url, { headers: { Range: 'bytes=-4' } });
    expect(d.status).toBe(206);
    expect(d.body.equals(weights.subarray(FILE_SIZE - 4))).toBe(true);
    const e = await http(url, { headers: { Range: `bytes=${FILE_SIZE}-` } });
    expect(e.status).toBe(416);
    expect(e.headers['content-range']).toBe(`bytes */${FILE_SIZE}`);
    const small = await http(`${server.url}/org/name/resolve/main/config.json`, { headers: { Range: 'bytes=0-0' } });
    expect(small.status).toBe(206);
    expect(small.body.toString()).toBe('{');
    // request log records ranges
    const ranges = server.requests.map((r) => [r.range, r.status, r.bytesSent]);
    expect(ranges).toEqual([
      ['bytes=10-19', 206, 10],
      [`bytes=${FILE_SIZE - 5}-`, 206, 5],
      [`bytes=${FILE_SIZE - 3}-${FILE_SIZE + 100}`, 206, 3],
      ['bytes=-4', 206, 4],
      [`bytes=${FILE_SIZE}-`, 416, 0],
      ['bytes=0-0', 206, 1],
    ]);
    expect(server.requests[0]).toMatchObject({ method: 'GET', path: '/cdn/org/name/model.safetensors' });
  });

  it('parseRange handles the forms', () => {
    expect(parseRange(undefined, 10)).toBeNull();
    expect(parseRange('bytes=0-4', 10)).toEqual({ start: 0, end: 4 });
    expect(parseRange('bytes=5-', 10)).toEqual({ start: 5, end: 9 });
    expect(parseRange('bytes=-3', 10)).toEqual({ start: 7, end: 9 });
    expect(parseRange('bytes=10-', 10)).toBe('unsatisfiable');
    expect(parseRange('bytes=0-1,3-4', 10)).toBeNull();
    expect(parseRange('items=0-1', 10)).toBeNull();
  });

  it('404s with X-Error-Code for a missing file, a missing repo and hidden files', async () => {
    const f = await http(`${server.url}/org/name/resolve/main/nope.json`);
    expect(f.status).toBe(404);
    expect(f.headers['x-error-code']).toBe('EntryNotFound');
    expect(JSON.parse(f.body.toString()).error).toMatch(/Entry not found: nope\.json/);
    const r = await http(`${server.url}/org/missing/resolve/main/config.json`);
    expect(r.status).toBe(404);
    expect(r.headers['x-error-code']).toBe('RepoNotFound');
    expect(JSON.parse(r.body.toString()).error).toMatch(/Repository not found: org\/missing/);
    const hidden = await http(`${server.url}/org/name/resolve/main/.secret`);
    expect(hidden.status).toBe(404);
    const traversal = await http(`${server.url}/org/name/resolve/main/..%2F..%2Fname%2Fconfig.json`);
    expect(traversal.status).toBe(404);
    const cdnMissing = await http(`${server.url}/cdn/org/name/nope.safetensors`);
    expect(cdnMissing.status).toBe(404);
    expect(cdnMissing.headers['x-error-code']).toBe('EntryNotFound');
  });

  it('401s on gated repos without the token and serves them with it', async () => {
    const url = `${server.url}/org/gated/resolve/main/config.json`;
    const no = await http(url);
    expect(no.status).toBe(401);
    expect(no.headers['x-error-code']).toBe('GatedRepo');
    expect(JSON.parse(no.body.toString()).error).toMatch(/restricted/);
    const wrong = await http(url, { headers: { Authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    const ok = await http(url, { headers: { Authorization: 'Bearer hf_secret_token' } });
    expect(ok.status).toBe(200);
    expect(ok.body.equals(config)).toBe(true);
    // weights: the CDN path needs the token too, or the signature from the redirect
    expect((await http(`${server.url}/cdn/org/gated/model.safetensors`)).status).toBe(401);
    const red = await http(`${server.url}/org/gated/resolve/main/model.safetensors`, {
      headers: { Authorization: 'Bearer hf_secret_token' },
    });
    expect(red.status).toBe(302);
    const viaSig = await http(red.headers.location!);
    expect(viaSig.status).toBe(200);
    expect(viaSig.body.equals(weights)).toBe(true);
    const viaFetch = await fetch(`${server.url}/org/gated/resolve/main/model.safetensors`, {
      headers: { Authorization: 'Bearer hf_secret_token' },
    });
    expect(viaFetch.status).toBe(200);
    expect((await viaFetch.arrayBuffer()).byteLength).toBe(FILE_SIZE);
  });

  it('answers CORS preflight and sets CORS headers', async () => {
    const pre = await http(`${server.url}/org/name/resolve/main/model.safetensors`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://example.com', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'range, authorization, x-custom' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-origin']).toBe('*');
    const allow = String(pre.headers['access-control-allow-headers']).toLowerCase();
    for (const h of ['range', 'authorization', 'x-custom']) expect(allow).toContain(h);
    expect(String(pre.headers['access-control-allow-methods'])).toContain('GET');
    const get = await http(`${server.url}/org/name/resolve/main/model.safetensors`, { method: 'HEAD' });
    expect(get.headers['access-control-allow-origin']).toBe('*');
    const expose = String(get.headers['access-control-expose-headers']).toLowerCase();
    for (const h of ['content-range', 'content-length', 'etag', 'x-linked-etag', 'x-linked-size', 'x-repo-commit', 'accept-ranges']) {
      expect(expose).toContain(h);
    }
  });

  it('lists a repo at /api/models', async () => {
    const res = await http(`${server.url}/api/models/org/name`);
    expect(res.status).toBe(200);
    const info = JSON.parse(res.body.toString());
    expect(info.id).toBe('org/name');
    expect(info.sha).toMatch(/^[0-9a-f]{40}$/);
    expect(info.siblings).toEqual([
      { rfilename: 'config.json', size: config.byteLength },
      { rfilename: 'model.safetensors', size: FILE_SIZE },
      { rfilename: 'sub/notes.txt', size: 5 },
    ]);
    const head = await http(`${server.url}/org/name/resolve/main/config.json`, { method: 'HEAD' });
    expect(head.headers['x-repo-commit']).toBe(info.sha);
    expect((await http(`${server.url}/api/models/org/missing`)).status).toBe(404);
  });

  it('fault failRate=1 answers 500 for weights only', async () => {
    server.setFaults({ failRate: 1 });
    const w = await http(`${server.url}/cdn/org/name/model.safetensors`);
    expect(w.status).toBe(500);
    const r = await http(`${server.url}/org/name/resolve/main/model.safetensors`, { method: 'HEAD' });
    expect(r.status).toBe(500);
    const c = await http(`${server.url}/org/name/resolve/main/config.json`);
    expect(c.status).toBe(200);
    server.setFaults({ failRate: 1, onlyPaths: /config\.json$/ });
    expect((await http(`${server.url}/org/name/resolve/main/config.json`)).status).toBe(500);
    expect((await http(`${server.url}/cdn/org/name/model.safetensors`)).status).toBe(200);
  });

  it('fault failRate is deterministic from the seed', async () => {
    const run = async () => {
      server.setFaults({ failRate: 0.5, seed: 42 });
      const out: number[] = [];
      for (let i = 0; i < 16; i++) out.push((await http(`${server.url}/cdn/org/name/model.safetensors`, { method: 'HEAD' })).status);
      return out;
    };
    const a = await run();
    const b = await run();
    expect(a).toEqual(b);
    expect(a).toContain(500);
    expect(a).toContain(200);
  });

  it('fault cutAfterBytes gives a short body', async () => {
    server.setFaults({ cutAfterBytes: 1000 });
    const res = await http(`${server.url}/cdn/org/name/model.safetensors`);
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe(String(FILE_SIZE));
    expect(res.body.byteLength).toBe(1000);
    expect(res.error).not.toBeNull();
    expect(res.body.equals(weights.subarray(0, 1000))).toBe(true);
    expect(server.requests.at(-1)).toMatchObject({ status: 200, bytesSent: 1000 });
    // ranges are cut too; fetch sees an error
    const ranged = await http(`${server.url}/cdn/org/name/model.safetensors`, { headers: { Range: 'bytes=500-' } });
    expect(ranged.status).toBe(206);
    expect(ranged.body.equals(weights.subarray(500, 1500))).toBe(true);
    const f = await fetch(`${server.url}/cdn/org/name/model.safetensors`);
    await expect(f.arrayBuffer()).rejects.toThrow();
    // a body no longer than the cut is complete
    server.setFaults({ cutAfterBytes: 1000, onlyPaths: /./ });
    const small = await http(`${server.url}/org/name/resolve/main/config.json`);
    expect(small.error).toBeNull();
    expect(small.body.equals(config)).toBe(true);
    server.setFaults({ cutAfterBytes: 0 });
    const zero = await http(`${server.url}/cdn/org/name/model.safetensors`);
    expect(zero.status).toBe(200);
    expect(zero.body.byteLength).toBe(0);
    expect(zero.error).not.toBeNull();
  });

  it('fault latency delays the answer', async () => {
    server.setFaults({ latencyMs: 200 });
    let t0 = performance.now();
    await http(`${server.url}/cdn/org/name/model.safetensors`, { method: 'HEAD' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(190);
    t0 = performance.now();
    await http(`${server.url}/org/name/resolve/main/config.json`, { method: 'HEAD' });
    expect(performance.now() - t0).toBeLessThan(190);
  });

  it('fault corruptByteAt flips one byte of every body covering it; ETags still describe the real file', async () => {
    server.setFaults({ corruptByteAt: 5000 });
    const whole = await http(`${server.url}/cdn/org/name/model.safetensors`);
    expect(whole.headers.etag).toBe(`"${sha256}"`);
    expect(whole.body.byteLength).toBe(FILE_SIZE);
    const diff = [...whole.body].flatMap((b, i) => (b !== weights[i] ? [i] : []));
    expect(diff).toEqual([5000]);
    expect(whole.body[5000]).toBe(weights[5000]! ^ 0xff);
    const ranged = await http(`${server.url}/cdn/org/name/model.safetensors`, { headers: { Range: 'bytes=4990-5009' } });
    expect(ranged.body[10]).toBe(weights[5000]! ^ 0xff);
    const before = await http(`${server.url}/cdn/org/name/model.safetensors`, { headers: { Range: 'bytes=0-4999' } });
    expect(before.body.equals(weights.subarray(0, 5000))).toBe(true);
  });

  it('fault stallAfterBytes sends N bytes then nothing, keeping the connection open', async () => {
    server.setFaults({ stallAfterBytes: 2000 });
    const ctl = new AbortController();
    const res = await fetch(`${server.url}/cdn/org/name/model.safetensors`, { signal: ctl.signal });
    const reader = res.body!.getReader();
    let got = 0;
    const timer = setTimeout(() => ctl.abort(), 300);
    await expect(
      (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          got += value.length;
        }
      })(),
    ).rejects.toThrow();
    clearTimeout(timer);
    expect(got).toBe(2000);
  });

  it('fault maxFaults limits faults to the first N requests they hit', async () => {
    server.setFaults({ failRate: 1, maxFaults: 2 });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await http(`${server.url}/cdn/org/name/model.safetensors`, { method: 'HEAD' })).status);
    expect(statuses).toEqual([500, 500, 200, 200]);
    server.setFaults({ cutAfterBytes: 100, maxFaults: 1 });
    expect((await http(`${server.url}/cdn/org/name/model.safetensors`)).body.byteLength).toBe(100);
    expect((await http(`${server.url}/cdn/org/name/model.safetensors`)).body.byteLength).toBe(FILE_SIZE);
  });

  it('logs each request', () => {
    expect(logLines.some((l) => /GET \/org\/name\/resolve\/main\/config\.json .*200/.test(l))).toBe(true);
  });
});
