import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { join, resolve } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { startRuntimeServer } from '../../src/node/host.ts';
import { peerMounts } from '../../bench/peer/wllama.ts';

/**
 * `nibble bench --peer wllama`: nibble's and wllama's rows in one run (one Chromium), the peer's
 * routes on the runtime server (COOP / COEP, the same path hardening as /dist/), and the flag's
 * usage errors.
 */
const bin = resolve(repoRoot(), 'bin', 'nibble.js');
const stories = join(modelsDir(), 'stories260K');
const QUICK = ['--prompt-tokens', '16', '--new-tokens', '8', '--runs', '1', '--context-length', '128', '--probe-mib', '16', '--prefill-lengths', '32'];

function nibble(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 280_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function get(url: string, path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const u = new URL(url);
  return new Promise((ok, fail) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET', headers: { host: u.host } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
    });
    req.on('error', fail);
    req.end();
  });
}

describe('bench --peer wllama', () => {
  it('prints nibble and wllama rows in one run, with ratios; a WebGPU backend that cannot run says why', () => {
    const r = nibble('bench', '--peer', 'wllama', '--model', stories, '--quant', 'f32,int8', ...QUICK, '--json');
    expect(r.code, r.stderr).toBe(0);
    const recs = r.stdout
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const rows = recs.filter((x) => x.type === 'row');
    const nib = rows.filter((x) => x.engine === 'nibble');
    expect(nib.map((x) => x.format)).toEqual(['f32', 'int8']);
    const wasm = rows.filter((x) => x.engine === 'wllama-wasm');
    expect(wasm.map((x) => [x.format, x.matches])).toEqual([
      ['F32', 'f32'],
      ['Q8_0', 'int8'],
    ]);
    for (const x of [...nib, ...wasm]) {
      for (const k of ['prefillTokensPerSecond', 'decodeTokensPerSecond']) {
        expect(typeof x[k], k).toBe('number');
        expect(x[k] as number, k).toBeGreaterThan(0);
      }
    }
    for (const x of wasm) {
      expect(x.peerVersion).toMatch(/^\d+\.\d+\.\d+$/);
      expect(x.threads as number).toBeGreaterThanOrEqual(1);
      const ratio = x.nibbleRatio as { prefill64: number | null; decode: number };
      const n = nib.find((y) => y.format === x.matches)!;
      expect(ratio.decode).toBeCloseTo((n.decodeTokensPerSecond as number) / (x.decodeTokensPerSecond as number), 6);
    }
    // WebGPU: a row per format where llama.cpp's WebGPU backend took the model, else one skip with the reason
    const gpu = rows.filter((x) => x.engine === 'wllama-webgpu');
    const skips = recs.filter((x) => x.type === 'peer-skip' && x.engine === 'wllama-webgpu');
    expect(gpu.length === 2 ? skips.length : gpu.length).toBe(0);
    if (!gpu.length) {
      expect(skips).toHaveLength(1);
      expect(String(skips[0]!.reason)).toMatch(/CPU|WebGPU/);
    }
    expect(r.stderr).toMatch(/bench: peer: wllama \d+\.\d+\.\d+, \d+ cores/);
  }, 300_000);

  it('rejects bad --peer flags before starting a browser', () => {
    for (const args of [
      ['--peer', 'llamafile', '--model', stories],
      ['--peer-backends', 'wasm', '--model', stories],
      ['--peer', 'wllama', '--peer-backends', 'cuda', '--model', stories],
      ['--peer-threads', '2', '--model', stories],
      ['--peer', 'wllama', '--peer-threads', '0', '--model', stories],
      ['--peer', 'wllama', '--model', 'org/some-model'],
    ]) {
      const r = nibble('bench', ...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/--peer/);
    }
  });

  it("serves the peer's folders under /peer/<name>/ with COOP / COEP, and refuses paths out of them", async () => {
    const { server, url } = await startRuntimeServer(resolve(repoRoot(), 'dist'), { mounts: peerMounts(), crossOriginIsolated: true });
    try {
      const wasm = await get(url, '/peer/wllama/wasm/wllama.wasm');
      expect(wasm.status).toBe(200);
      expect(wasm.headers['content-type']).toBe('application/wasm');
      expect(wasm.body.subarray(0, 4)).toEqual(Buffer.from([0, 0x61, 0x73, 0x6d]));
      expect(wasm.headers['cross-origin-opener-policy']).toBe('same-origin');
      expect(wasm.headers['cross-origin-embedder-policy']).toBe('require-corp');
      const page = await get(url, '/peer/page/wllama.html');
      expect(page.status).toBe(200);
      expect(page.headers['cross-origin-embedder-policy']).toBe('require-corp');
      expect((await get(url, '/')).headers['cross-origin-opener-policy']).toBe('same-origin');
      expect((await get(url, '/peer/wllama/../package.json')).status).toBe(400);
      expect((await get(url, '/peer/wllama/%2e%2e/package.json')).status).toBe(400);
      expect((await get(url, '/peer/wllama/..%2fpackage.json')).status).toBe(400);
      expect((await get(url, '/peer/page/.hidden')).status).toBe(403);
      expect((await get(url, '/peer/nothing/x')).status).toBe(404);
      expect((await get(url, '/peer/page')).status).toBe(404);
    } finally {
      server.close();
    }
    const plain = await startRuntimeServer(resolve(repoRoot(), 'dist'));
    try {
      const r = await get(plain.url, '/');
      expect(r.headers['cross-origin-opener-policy']).toBeUndefined();
      expect((await get(plain.url, '/peer/page/wllama.html')).status).toBe(404);
    } finally {
      plain.server.close();
    }
  });
});
