import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request, createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startHubServer, type HubServer } from '../../src/node/hub-server.ts';
import { addLocal, containmentRoot, hubToken, startRuntimeServer, type LocalFolder } from '../../src/node/host.ts';
import { parseRequestPath, serveDir } from '../../src/node/static.ts';
import { repoRoot } from '../../src/node/paths.ts';

/**
 * Every HTTP server nibble runs stays inside its folder and survives hostile paths:
 * - the CLI's loopback runtime server (src/node/host.ts + static.ts), the dev server's /models route
 *   (vite.config.ts) and `hub-serve` (src/node/hub-server.ts);
 * - symlinks (a file, a folder, a whole repo) pointing out of the served folder are 403/404;
 * - malformed percent-escapes, NUL, overlong UTF-8, overlong paths and `..` in every encoding are
 *   4xx, and the server answers the next request normally.
 */

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** Raw HTTP: the path is sent exactly as given (no URL normalization), redirects not followed. */
function raw(base: string, path: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  const u = new URL(base);
  return new Promise((ok, fail) => {
    const req = request({ host: u.hostname, port: u.port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', fail);
    });
    req.on('error', fail);
    req.end();
  });
}

const SECRET = 'top secret outside the served folder';

/** Paths no server may answer with a file (each under `prefix`, which is a served folder). */
function hostilePaths(prefix: string): string[] {
  return [
    `${prefix}/%zz`,
    `${prefix}/config%zz.json`,
    `${prefix}/%`,
    `${prefix}/%00`,
    `${prefix}/config.json%00.txt`,
    `${prefix}/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt`, // overlong UTF-8 dots
    `${prefix}/%e0%80%ae%e0%80%ae/secret.txt`,
    `${prefix}/../secret.txt`,
    `${prefix}/../../secret.txt`,
    `${prefix}/..%2fsecret.txt`,
    `${prefix}/..%2Fsecret.txt`,
    `${prefix}/%2e%2e/secret.txt`,
    `${prefix}/%2E%2E/%2e%2e/secret.txt`,
    `${prefix}/%2e%2e%2fsecret.txt`,
    `${prefix}/%252e%252e/secret.txt`, // double encoding
    `${prefix}/..%5csecret.txt`,
    `${prefix}/..\\secret.txt`,
    `${prefix}/.%2e/secret.txt`,
    `${prefix}/${'a'.repeat(5000)}`,
    `${prefix}/${'%zz'.repeat(2000)}`,
  ];
}

let tmp: string;
/** tmp/outside: files no server may serve; tmp/root: the served folder. */
let outside: string;
let root: string;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'nibble-serve-'));
  outside = join(tmp, 'outside');
  root = join(tmp, 'root');
  mkdirSync(join(outside, 'repo'), { recursive: true });
  writeFileSync(join(outside, 'secret.txt'), SECRET);
  writeFileSync(join(outside, 'repo', 'config.json'), SECRET);
  writeFileSync(join(tmp, 'secret.txt'), SECRET);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A model folder with three symlinks out (a file, a folder) and one that stays inside. */
function plantModel(dir: string): void {
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(dir, 'config.json'), '{"model_type":"llama"}');
  writeFileSync(join(dir, 'sub', 'notes.txt'), 'inside');
  symlinkSync(join(outside, 'secret.txt'), join(dir, 'link-file.json'));
  symlinkSync('/etc/passwd', join(dir, 'passwd.txt'));
  symlinkSync(outside, join(dir, 'link-dir'));
  symlinkSync(join(dir, 'config.json'), join(dir, 'inner-link.json'));
}

describe('static serveDir (the CLI runtime server and the dev server routes)', () => {
  let server: Server;
  let base: string;
  let model: string;

  beforeAll(async () => {
    model = join(root, 'static-model');
    plantModel(model);
    const handler = serveDir(model);
    server = createServer((req, res) => handler(req, res));
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((ok) => server.close(() => ok())));

  it('serves files and symlinks that stay inside, with no CORS header', async () => {
    const r = await raw(base, '/config.json');
    expect(r.status).toBe(200);
    expect(r.body).toBe('{"model_type":"llama"}');
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
    expect((await raw(base, '/inner-link.json')).status).toBe(200);
    expect((await raw(base, '/sub/notes.txt')).body).toBe('inside');
  });

  it('refuses symlinks out of the folder: a file, /etc/passwd, a folder', async () => {
    for (const p of ['/link-file.json', '/passwd.txt', '/link-dir/secret.txt', '/link-dir/repo/config.json']) {
      const r = await raw(base, p);
      expect(r.status, p).toBe(403);
      expect(r.body).not.toContain(SECRET);
      expect(r.body).not.toContain('root:');
    }
  });

  it('answers 4xx to malformed and traversing paths and keeps serving', async () => {
    for (const p of hostilePaths('')) {
      const r = await raw(base, p);
      expect(r.status, p).toBeGreaterThanOrEqual(400);
      expect(r.status, p).toBeLessThan(500);
      expect(r.body).not.toContain(SECRET);
    }
    expect((await raw(base, '/%zz')).status).toBe(400);
    expect((await raw(base, '/%00')).status).toBe(400);
    expect((await raw(base, '/%2e%2e/secret.txt')).status).toBe(400);
    expect((await raw(base, `/${'a'.repeat(5000)}`)).status).toBe(414);
    expect((await raw(base, '/config.json')).status).toBe(200);
  });

  it('parseRequestPath decodes segments and names what is wrong', () => {
    expect(parseRequestPath('/a/b%20c/d.json?x=1')).toEqual({ segments: ['a', 'b c', 'd.json'] });
    expect(parseRequestPath('/%zz')).toMatchObject({ status: 400 });
    expect(parseRequestPath('/a%2fb')).toMatchObject({ status: 400 });
    expect(parseRequestPath('/.git/config')).toMatchObject({ status: 403 });
    expect(parseRequestPath('*')).toMatchObject({ status: 400 });
  });

  it('a Hugging Face cache snapshot may resolve into its repo folder (blobs), not beyond', async () => {
    const repo = join(root, 'hf', 'models--org--name');
    const snap = join(repo, 'snapshots', 'abc123');
    mkdirSync(join(repo, 'blobs'), { recursive: true });
    mkdirSync(snap, { recursive: true });
    writeFileSync(join(repo, 'blobs', 'f00d'), '{"from":"blob"}');
    symlinkSync('../../blobs/f00d', join(snap, 'config.json'));
    symlinkSync(join(outside, 'secret.txt'), join(snap, 'tokenizer.json'));
    expect(containmentRoot(snap)).toBe(repo);
    expect(containmentRoot(model)).toBe(model);
    const locals: LocalFolder[] = [];
    const path = addLocal(locals, snap);
    const s = createServer((req, res) => {
      req.url = req.url!.slice(path.length);
      locals[0].handler(req, res);
    });
    await new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok));
    const b = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    try {
      const r = await raw(b, `${path}/config.json`);
      expect(r.status).toBe(200);
      expect(r.body).toBe('{"from":"blob"}');
      expect(r.headers['content-type']).toMatch(/json/); // by the requested name: the blob has none
      expect((await raw(b, `${path}/tokenizer.json`)).status).toBe(403);
    } finally {
      await new Promise<void>((ok) => s.close(() => ok()));
    }
  });
});

describe('the CLI runtime server (host.ts)', () => {
  let server: Server;
  let url: string;
  let local: string;

  beforeAll(async () => {
    const model = join(root, 'cli-model');
    plantModel(model);
    const r = await startRuntimeServer(resolve(repoRoot(), 'dist'));
    server = r.server;
    url = r.url;
    local = addLocal(r.locals, model);
  });
  afterAll(() => new Promise<void>((ok) => server.close(() => ok())));

  it('serves a local model folder, without CORS headers', async () => {
    const r = await raw(url, `${local}/config.json`);
    expect(r.status).toBe(200);
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
    const pre = await raw(url, `${local}/config.json`, { method: 'OPTIONS', headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'GET' } });
    expect(pre.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('refuses symlinks out of the local folder', async () => {
    for (const p of ['/link-file.json', '/passwd.txt', '/link-dir/secret.txt']) {
      const r = await raw(url, `${local}${p}`);
      expect(r.status, p).toBe(403);
      expect(r.body).not.toContain(SECRET);
    }
  });

  it('answers 4xx to hostile paths on every route and stays up', async () => {
    for (const prefix of ['', '/dist', local, '/local/99', '/local/0%2f..']) {
      for (const p of hostilePaths(prefix)) {
        const r = await raw(url, p);
        expect(r.status, p).toBeGreaterThanOrEqual(400);
        expect(r.status, p).toBeLessThan(500);
        expect(r.body).not.toContain(SECRET);
      }
    }
    expect((await raw(url, `${local}/%zz`)).status).toBe(400);
    expect((await raw(url, `${local}/config.json`)).status).toBe(200);
  });

  it('refuses requests whose Host is not this server (DNS rebinding)', async () => {
    const r = await raw(url, `${local}/config.json`, { headers: { Host: 'evil.example' } });
    expect(r.status).toBe(403);
  });
});

describe('hub-serve', () => {
  let hub: HubServer;
  const logs: string[] = [];

  beforeAll(async () => {
    const dir = join(root, 'mirror');
    mkdirSync(join(dir, 'org', 'name'), { recursive: true });
    writeFileSync(join(dir, 'org', 'name', 'config.json'), '{"model_type":"llama"}');
    writeFileSync(join(dir, 'org', 'name', 'model.safetensors'), Buffer.alloc(64, 7));
    symlinkSync(join(outside, 'secret.txt'), join(dir, 'org', 'name', 'link-file.json'));
    symlinkSync(join(outside, 'secret.txt'), join(dir, 'org', 'name', 'link.safetensors'));
    symlinkSync('/etc/passwd', join(dir, 'org', 'name', 'passwd.txt'));
    symlinkSync(outside, join(dir, 'org', 'name', 'link-dir'));
    symlinkSync(join(outside, 'repo'), join(dir, 'org', 'link-repo'));
    symlinkSync('/etc', join(dir, 'org', 'etc'));
    symlinkSync(outside, join(dir, 'outside-org'));
    hub = await startHubServer({ dir, log: (l) => logs.push(l) });
  });
  afterAll(() => hub.close());

  it('serves a real repo and lists only what is inside the mirror', async () => {
    expect((await raw(hub.url, '/org/name/resolve/main/config.json')).status).toBe(200);
    const list = JSON.parse((await raw(hub.url, '/api/models/org/name')).body) as { siblings: Array<{ rfilename: string }> };
    expect(list.siblings.map((s) => s.rfilename).sort()).toEqual(['config.json', 'model.safetensors']);
  });

  it('refuses symlinks out of the mirror: a file, a folder, a whole repo, an org', async () => {
    const paths = [
      '/org/name/resolve/main/link-file.json',
      '/org/name/resolve/main/link.safetensors',
      '/cdn/org/name/link.safetensors',
      '/org/name/resolve/main/passwd.txt',
      '/org/name/resolve/main/link-dir/secret.txt',
      '/cdn/org/name/link-dir/secret.txt',
      '/org/link-repo/resolve/main/config.json',
      '/cdn/org/link-repo/config.json',
      '/api/models/org/link-repo',
      '/api/models/org/etc',
      '/org/etc/resolve/main/passwd',
      '/outside-org/repo/resolve/main/config.json',
      '/api/models/outside-org/repo',
    ];
    for (const p of paths) {
      const r = await raw(hub.url, p);
      expect([403, 404], p).toContain(r.status);
      expect(r.body).not.toContain(SECRET);
      expect(r.body).not.toContain('root:');
    }
  });

  it('answers 4xx to hostile paths and stays up', async () => {
    for (const prefix of ['/org/name/resolve/main', '/cdn/org/name', '/api/models/org', '']) {
      for (const p of hostilePaths(prefix)) {
        const r = await raw(hub.url, p);
        expect(r.status, p).toBeGreaterThanOrEqual(400);
        expect(r.status, p).toBeLessThan(500);
        expect(r.body).not.toContain(SECRET);
      }
    }
    expect((await raw(hub.url, '/org/name/resolve/main/config.json')).status).toBe(200);
  });

  it("builds redirect URLs from its configured address, never from the request's Host header", async () => {
    const r = await raw(hub.url, '/org/name/resolve/main/model.safetensors', { method: 'HEAD', headers: { Host: 'evil.example:666' } });
    expect(r.status).toBe(302);
    expect(r.headers.location).toBe(`${hub.url}/cdn/org/name/model.safetensors`);
  });

  it('reports the address it is bound to; on a wildcard address the redirect is relative', async () => {
    expect(hub.address).toBe(`127.0.0.1:${hub.port}`);
    const lines: string[] = [];
    const wild = await startHubServer({ dir: join(root, 'mirror'), host: '0.0.0.0', log: (l) => lines.push(l) });
    try {
      expect(wild.address).toBe(`0.0.0.0:${wild.port}`);
      expect(lines[0]).toContain(`0.0.0.0:${wild.port}`);
      expect(wild.url).toBe(`http://127.0.0.1:${wild.port}`);
      const r = await raw(wild.url, '/org/name/resolve/main/model.safetensors', { method: 'HEAD', headers: { Host: 'evil.example' } });
      expect(r.status).toBe(302);
      expect(r.headers.location).toBe('/cdn/org/name/model.safetensors');
      // fetch resolves it against the address the client used
      const got = await fetch(`${wild.url}/org/name/resolve/main/model.safetensors`);
      expect(got.status).toBe(200);
      expect((await got.arrayBuffer()).byteLength).toBe(64);
    } finally {
      await wild.close();
    }
  });
});

describe('the dev server model route (vite.config.ts)', () => {
  it('answers 4xx to hostile paths under /models and /cache, and keeps serving', async () => {
    const vite = inject('viteUrl');
    for (const prefix of ['/models/stories260K', '/models', '/cache']) {
      for (const p of hostilePaths(prefix)) {
        const r = await raw(vite, p);
        expect(r.status, p).toBeGreaterThanOrEqual(400);
        expect(r.status, p).toBeLessThan(500);
        expect(r.body).not.toContain(SECRET);
      }
    }
    expect((await raw(vite, '/models/%zz')).status).toBe(400);
    const ok = await raw(vite, '/models/stories260K/config.json');
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body).model_type).toBe('llama');
  });
});

describe('hubToken (which loads may carry the Hub token)', () => {
  it('only Hub ids and URLs on the Hub endpoint origin get it', () => {
    const t = 'hf_x';
    expect(hubToken('org/name', { token: t })).toBe(t);
    expect(hubToken('org/name', { token: t, hubEndpoint: 'http://127.0.0.1:9000' })).toBe(t);
    expect(hubToken('https://huggingface.co/org/name/resolve/main', { token: t })).toBe(t);
    expect(hubToken('http://127.0.0.1:9000/org/name/resolve/main', { token: t, hubEndpoint: 'http://127.0.0.1:9000/' })).toBe(t);
    expect(hubToken('http://127.0.0.1:9001/m', { token: t, hubEndpoint: 'http://127.0.0.1:9000' })).toBeUndefined();
    expect(hubToken('http://localhost:8080/model', { token: t })).toBeUndefined();
    expect(hubToken('https://huggingface.co.evil.example/m', { token: t })).toBeUndefined();
    expect(hubToken('org/name', { token: t, draft: { model: 'http://127.0.0.1:9/d' } })).toBeUndefined();
    expect(hubToken('org/name', { token: t, draft: { model: 'org/draft' } })).toBe(t);
    expect(hubToken('org/name', {})).toBeUndefined();
  });
});
