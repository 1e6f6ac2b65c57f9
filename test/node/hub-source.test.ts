import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { NibbleError } from '../../src/errors.ts';
import { HostBudget } from '../../src/util/host-budget.ts';
import { openCheckpoint } from '../../src/loader/safetensors.ts';
import { streamTensors } from '../../src/loader/stream.ts';
import { startHubServer, type HubServer } from '../../src/node/hub-server.ts';
import { HubSource, type HubSourceOptions } from '../../src/source/hub.ts';
import { resolveSource } from '../../src/api/resolve.ts';
import { buildSafetensors } from '../helpers/safetensors-build.ts';

/**
 * HubSource against the local Hub mirror (in this Node process) with injected faults: cut
 * connections resume from the last good byte, 500s and stalls are retried, nothing hangs, and
 * 404 / 401 carry the Hub's wording.
 */
async function errorOf(p: Promise<unknown>): Promise<NibbleError> {
  const e = await p.then(
    () => null,
    (x) => x,
  );
  if (!(e instanceof NibbleError)) throw new Error(`expected a NibbleError, got ${String(e)}`);
  return e;
}

describe('HubSource against the mirror', () => {
  let dir: string;
  let server: HubServer;
  let weights: Uint8Array;
  let sha256: string;
  const TOKEN = 'hf_test_token';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nibble-hubsrc-'));
    weights = buildSafetensors([
      { name: 'a', dtype: 'F32', shape: [512, 512], data: new Uint8Array(randomBytes(512 * 512 * 4)) },
      { name: 'b', dtype: 'BF16', shape: [300, 1000], data: new Uint8Array(randomBytes(300 * 1000 * 2)) },
    ]);
    sha256 = createHash('sha256').update(weights).digest('hex');
    for (const repo of ['name', 'gated']) {
      mkdirSync(join(dir, 'org', repo), { recursive: true });
      writeFileSync(join(dir, 'org', repo, 'config.json'), '{"model_type":"llama"}');
      writeFileSync(join(dir, 'org', repo, 'model.safetensors'), weights);
    }
    writeFileSync(join(dir, 'org', 'gated', '.gated'), TOKEN);
    server = await startHubServer({ dir });
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    server.setFaults(undefined);
    server.resetStats();
  });

  const src = (o: HubSourceOptions = {}, repo = 'org/name') => new HubSource(repo, { endpoint: server.url, retryDelayMs: 5, ...o });
  const gets = () => server.requests.filter((r) => r.method === 'GET' && r.path.endsWith('.safetensors'));

  it('reads metadata (size, sha256 ETag of LFS files, commit), text and exact ranges; remembers the CDN redirect', async () => {
    const s = src();
    const m = await s.metadata('model.safetensors');
    expect(m.size).toBe(weights.length);
    expect(m.sha256).toBe(sha256);
    expect(m.commit).toMatch(/^[0-9a-f]{40}$/);
    const c = await s.metadata('config.json');
    expect(c.sha256).toBeUndefined(); // a git blob sha1, not a content hash we check
    expect(c.etag).toMatch(/^[0-9a-f]{40}$/);
    expect(JSON.parse(await s.text('config.json'))).toEqual({ model_type: 'llama' });
    expect(await s.size('model.safetensors')).toBe(weights.length);
    expect(await s.exists('model.safetensors')).toBe(true);
    expect(await s.exists('model.safetensors.index.json')).toBe(false);
    const r = await s.range('model.safetensors', 1000, 250_000);
    expect(Buffer.from(r).equals(Buffer.from(weights.subarray(1000, 250_000)))).toBe(true);
    await s.range('model.safetensors', 5, 10);
    // after HEAD learned the redirect, ranges go straight to /cdn
    expect(gets().every((g) => g.path.startsWith('/cdn/'))).toBe(true);
    expect(s.cacheId).toBe(`hub:${server.url}/org/name@main`);
    expect(s.url('sub dir/a b.json')).toBe(`${server.url}/org/name/resolve/main/sub%20dir/a%20b.json`);
  });

  it('cut connections: every GET body cut after 64 KiB, the range resumes from the last good byte', async () => {
    server.setFaults({ cutAfterBytes: 64 << 10 });
    const s = src();
    const want = weights.subarray(100, 1_000_100);
    const r = await s.range('model.safetensors', 100, 1_000_100);
    expect(Buffer.from(r).equals(Buffer.from(want))).toBe(true);
    expect(s.stats.resumes).toBeGreaterThanOrEqual(14);
    const g = gets();
    // resumed, not restarted: the bytes sent add up to what was asked for
    expect(g.reduce((a, x) => a + x.bytesSent, 0)).toBe(want.length);
    const starts = g.filter((x) => x.path.startsWith('/cdn/')).map((x) => Number(/bytes=(\d+)-/.exec(x.range!)![1]));
    for (let i = 1; i < starts.length; i++) expect(starts[i]).toBeGreaterThan(starts[i - 1]!);
  });

  it('a client that loses the bytes of a cut body (as browsers can) still progresses: requests shrink after failures', async () => {
    server.setFaults({ cutAfterBytes: 40_000 });
    // a fetch whose body either arrives whole or errors with nothing delivered
    const lossy: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (!res.body) return res;
      const all = new Uint8Array(await res.arrayBuffer()); // throws on a cut body: nothing delivered
      return new Response(all, { status: res.status, headers: res.headers });
    };
    const s = src({ fetch: lossy, retries: 5 });
    const r = await s.range('model.safetensors', 0, 600_000);
    expect(Buffer.from(r).equals(Buffer.from(weights.subarray(0, 600_000)))).toBe(true);
    const sizes = gets()
      .filter((g) => g.range)
      .map((g) => /bytes=(\d+)-(\d+)/.exec(g.range!)!)
      .map((m) => Number(m[2]) - Number(m[1]) + 1);
    expect(Math.min(...sizes)).toBeLessThanOrEqual(40_000); // shrank below the cut
    expect(Math.max(...sizes.slice(-3))).toBeGreaterThan(16 << 10); // and grew back
  });

  it('500s (a third of the requests) and latency are retried with backoff and still give the right bytes', async () => {
    server.setFaults({ failRate: 0.35, seed: 3, latencyMs: 20 });
    const s = src({ retries: 8 });
    expect((await s.metadata('model.safetensors')).sha256).toBe(sha256);
    for (let i = 0; i < 4; i++) {
      const a = i * 200_000;
      const r = await s.range('model.safetensors', a, a + 200_000);
      expect(Buffer.from(r).equals(Buffer.from(weights.subarray(a, a + 200_000)))).toBe(true);
    }
    expect(s.stats.retries).toBeGreaterThan(0);
    expect(server.requests.some((r) => r.status === 500)).toBe(true);
  });

  it('a stalled body is aborted after stallTimeoutMs and resumed', async () => {
    server.setFaults({ stallAfterBytes: 30_000, maxFaults: 2 });
    const s = src({ stallTimeoutMs: 300 });
    const t0 = performance.now();
    const r = await s.range('model.safetensors', 0, 500_000);
    expect(Buffer.from(r).equals(Buffer.from(weights.subarray(0, 500_000)))).toBe(true);
    expect(performance.now() - t0).toBeGreaterThan(250);
    expect(s.stats.resumes).toBeGreaterThanOrEqual(1);
  });

  it('a server that never answers: no hang, a network error naming the timeout', async () => {
    server.setFaults({ latencyMs: 5_000 });
    const s = src({ stallTimeoutMs: 150, retries: 2 });
    const t0 = performance.now();
    const e = await errorOf(s.range('model.safetensors', 0, 1000));
    expect(e.code).toBe('network');
    expect(e.message).toMatch(/timed out/);
    expect(e.message).toMatch(/gave up after 3 attempts/);
    expect(performance.now() - t0).toBeLessThan(3_000);
  });

  it('a server that always fails: network error after the retries', async () => {
    server.setFaults({ failRate: 1 });
    const e = await errorOf(src({ retries: 3 }).range('model.safetensors', 0, 1000));
    expect(e.code).toBe('network');
    expect(e.message).toMatch(/HTTP 500/);
    expect(gets().length).toBe(4);
  });

  it('404: file F not found in repo R at revision V; a missing repo says so', async () => {
    const e = await errorOf(src({ revision: 'v2' }).text('missing.json'));
    expect(e.code).toBe('not-found');
    expect(e.message).toBe('file missing.json not found in repo org/name at revision v2');
    const e2 = await errorOf(src({}, 'org/nothing-here').text('config.json'));
    expect(e2.code).toBe('not-found');
    expect(e2.message).toMatch(/repo org\/nothing-here does not exist/);
    // a missing repo is an error even for exists()
    expect((await errorOf(src({}, 'org/nothing-here').exists('config.json'))).code).toBe('not-found');
  });

  it('401: gated repo without a token / with a wrong one → unauthorized; with the token it loads', async () => {
    const e = await errorOf(src({}, 'org/gated').text('config.json'));
    expect(e.code).toBe('unauthorized');
    expect(e.message).toMatch(/gated or private: pass a token/);
    const e2 = await errorOf(src({ token: 'hf_wrong' }, 'org/gated').range('model.safetensors', 0, 8));
    expect(e2.code).toBe('unauthorized');
    expect(e2.message).toMatch(/token was refused/);
    const ok = src({ token: TOKEN }, 'org/gated');
    expect((await ok.metadata('model.safetensors')).sha256).toBe(sha256);
    expect(Buffer.from(await ok.range('model.safetensors', 10, 20)).equals(Buffer.from(weights.subarray(10, 20)))).toBe(true);
    // resolveSource: Hub ids become HubSources carrying the token
    const viaResolve = resolveSource('org/gated', { hubEndpoint: server.url, token: TOKEN });
    expect(viaResolve).toBeInstanceOf(HubSource);
    expect(await viaResolve.text('config.json')).toContain('llama');
  });

  it('resolveSource sends a token only to the Hub endpoint\'s origin, never to a plain URL elsewhere', async () => {
    const seen: Array<{ url: string; auth: string | null }> = [];
    const spy: typeof fetch = async (input, init) => {
      seen.push({ url: String(input), auth: new Headers(init?.headers).get('authorization') });
      return new Response('{"model_type":"llama"}', { status: 200, headers: { 'content-type': 'application/json' } });
    };
    const elsewhere = resolveSource('http://127.0.0.1:1/models/m', { hubEndpoint: 'https://hub.example', token: TOKEN, fetch: spy });
    await elsewhere.text('config.json');
    const onHub = resolveSource('https://hub.example/org/m/resolve/main', { hubEndpoint: 'https://hub.example', token: TOKEN, fetch: spy });
    await onHub.text('config.json');
    expect(seen.map((s) => [new URL(s.url).origin, s.auth])).toEqual([
      ['http://127.0.0.1:1', null],
      ['https://hub.example', `Bearer ${TOKEN}`],
    ]);
  });

  it('an abort stops a slow read at once', async () => {
    server.setFaults({ latencyMs: 2_000 });
    const ctl = new AbortController();
    const t0 = performance.now();
    setTimeout(() => ctl.abort(), 50);
    const e = await errorOf(src().range('model.safetensors', 0, 1000, ctl.signal));
    expect(e.code).toBe('aborted');
    expect(performance.now() - t0).toBeLessThan(1_000);
  });

  it('streamed through the scheduler: sha256 verified; a corrupted byte in transit → integrity error', async () => {
    const s = src();
    const table = await openCheckpoint(s);
    const meta = await s.metadata('model.safetensors');
    const run = () =>
      streamTensors(
        s,
        [...table.tensors.values()].map((t) => ({ tensor: t, write() {} })),
        {
          budget: new HostBudget(1 << 20),
          chunkBytes: 256 << 10,
          sha256: new Map([['model.safetensors', meta.sha256!]]),
          sizes: new Map([['model.safetensors', meta.size]]),
        },
      );
    server.setFaults({ cutAfterBytes: 100_000, failRate: 0.2, seed: 9 });
    expect((await run()).verified).toEqual(['model.safetensors']);
    server.setFaults({ corruptByteAt: 700_001 });
    const e = await errorOf(run());
    expect(e.code).toBe('integrity');
    expect(e.message).toMatch(/model\.safetensors.*sha256/);
  });
});
