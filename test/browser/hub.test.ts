import type { FormatName } from '../../src/quant/plan.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openHarness, type Caller } from './page.ts';
import { modelsDir } from '../../src/node/paths.ts';
import { startHubServer, type HubServer } from '../../src/node/hub-server.ts';
import { GATED_TOKEN, prepareHubMirror } from '../helpers/hub-mirror.ts';
import { maxAbsDiff } from '../ref/cpu.ts';
import { loadGolden } from '../helpers/golden.ts';

/**
 * The streaming Hub loader end to end, in headless Chromium: Engine.load('org/name') against the
 * local Hub mirror (started here, in Node; the page fetches from it cross-origin).
 */
const golden = loadGolden();
const once = golden.prompts.find((p) => p.prompt === 'Once upon a time')!;

let call: Caller;
let close: () => Promise<void>;
let server: HubServer;

beforeAll(async () => {
  const dir = await prepareHubMirror({ synth: true });
  server = await startHubServer({ dir });
  ({ call, close } = await openHarness());
}, 180_000);
afterAll(async () => {
  await close?.();
  await server?.close();
});
beforeEach(() => {
  server.setFaults(undefined);
  server.resetStats();
});

const hub = () => ({ hubEndpoint: server.url, retries: 6, retryDelayMs: 50 });
/** Range GETs of weight files that reach past the safetensors header (which ends at `dataStart`). */
const weightRangeGets = (dataStart: number) =>
  server.requests.filter((r) => {
    if (r.method !== 'GET' || !r.path.endsWith('.safetensors')) return false;
    const m = /bytes=(\d+)-(\d*)/.exec(r.range ?? '');
    if (!m) return true; // a whole-file GET
    return Number(m[2] || Infinity) >= dataStart;
  });
const STORIES_DATA_START = (() => {
  const b = readFileSync(join(modelsDir(), 'stories260K', 'model.safetensors'));
  return 8 + Number(b.readBigUInt64LE(0));
})();

describe('Hub loader through the local mirror', () => {
  it('stories260K loads from org/name and reproduces golden.json (ids, greedy tokens, logits)', async () => {
    const r = await call('hubLoad', {
      model: 'org/stories260K',
      load: hub(),
      cache: false,
      logitsFor: once.hf_input_ids,
      generate: golden.prompts.slice(2, 4).map((p) => ({ prompt: p.prompt, maxNewTokens: 16 })),
    });
    if (r.error) throw new Error(JSON.stringify(r.error));
    golden.prompts.slice(2, 4).forEach((g, i) => {
      expect(r.generated[i]!.promptIds).toEqual(g.hf_input_ids);
      expect(r.generated[i]!.tokenIds).toEqual(g.generated_ids.slice(0, 16));
    });
    expect(maxAbsDiff(r.logits!, once.logits_first_generated_position.values)).toBeLessThan(1e-3);
    const load = r.info.load!;
    expect(load.verifiedFiles).toEqual(['model.safetensors']); // sha256 of the LFS file checked
    expect(load.cache).toBe('off');
    expect(load.peakHostBytes).toBeLessThanOrEqual(256 << 20);
    // quantize (the GPU built the weights) and compile (when this page had not compiled them) follow
    expect(r.phases.map((p) => p.phase).filter((p) => p !== 'compile')).toEqual(['metadata', 'weights', 'quantize', 'done']);
    const w = r.phases[1]!;
    expect(w.monotonic).toBe(true);
    expect(w.last.bytesDone).toBe(w.last.bytesTotal);
    expect(w.last.tensorsDone).toBe(w.last.tensorsTotal);
    // weights came through the CDN redirect with Range reads; config through resolve/
    expect(server.requests.some((q) => q.path === '/org/stories260K/resolve/main/config.json')).toBe(true);
    expect(server.requests.some((q) => q.path.startsWith('/cdn/org/stories260K/model.safetensors') && q.range)).toBe(true);
  });

  it('a sharded synthetic model (3 shards) gives the same logits as the unsharded one', async () => {
    const ids = [1, 450, 4996];
    const run = (model: string) =>
      call('hubLoad', { model, load: { ...hub(), contextLength: 64, chunkBytes: 4 << 20 }, cache: false, logitsFor: ids });
    const one = await run('org/synth-s1');
    const three = await run('org/synth-s3');
    if (one.error) throw new Error(JSON.stringify(one.error));
    if (three.error) throw new Error(JSON.stringify(three.error));
    expect(three.info.load!.verifiedFiles.sort()).toEqual([
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
    ]);
    expect(one.logits!.length).toBe(49152);
    expect(maxAbsDiff(one.logits!, three.logits!)).toBe(0);
    expect(one.logits!.some((x) => x !== 0)).toBe(true);
    expect(one.info.load!.maxInFlight).toBeGreaterThan(1); // parallel Range reads
    console.log(`[synth 135M-shape, 2 layers] load ${one.loadMs.toFixed(0)} / ${three.loadMs.toFixed(0)} ms`, JSON.stringify(one.info.load!.timeMs), JSON.stringify(three.info.load!.timeMs));
  });

  it('cut connections, 500s and latency together still give a correct model (gated repo, token through CORS + redirects)', async () => {
    server.setFaults({ cutAfterBytes: 40_000, failRate: 0.2, seed: 4, latencyMs: 25 });
    const r = await call('hubLoad', {
      model: 'org/gated260K',
      load: { ...hub(), token: GATED_TOKEN, chunkBytes: 128 << 10 },
      cache: false,
      logitsFor: once.hf_input_ids,
    });
    if (r.error) throw new Error(JSON.stringify(r.error));
    expect(maxAbsDiff(r.logits!, once.logits_first_generated_position.values)).toBeLessThan(1e-3);
    expect(r.info.load!.verifiedFiles).toEqual(['model.safetensors']);
    expect(r.info.load!.requests).toBeGreaterThan(5);
    expect(server.requests.some((q) => q.status === 500)).toBe(true); // 500s happened
    expect(server.requests.filter((q) => q.bytesSent === 40_000).length).toBeGreaterThan(3); // cuts happened
  });

  it('a corrupted byte → integrity error naming the file, and nothing is cached', async () => {
    server.setFaults({ corruptByteAt: STORIES_DATA_START + 300_001 });
    const cache = { kind: 'opfs' as const, root: 'nibble-test-integrity' };
    await call('cacheOp', { ...cache, op: 'clear' });
    const r = await call('hubLoad', { model: 'org/stories260K', load: hub(), cache, logitsFor: [1] });
    expect(r.error?.code).toBe('integrity');
    if (!r.error) return;
    expect(r.error.message).toMatch(/model\.safetensors.*sha256/);
    expect(r.liveBuffers.filter((l) => l !== 'step' && l !== 'dummy')).toEqual([]);
    expect(await call('cacheOp', { ...cache, op: 'files' })).toEqual([]);
  });

  it('404 and 401 give their messages', async () => {
    const missing = await call('hubLoad', { model: 'org/no-config', load: hub(), cache: false });
    expect(missing.error).toEqual({
      code: 'not-found',
      message: 'file config.json not found in repo org/no-config at revision main',
    });
    const noRepo = await call('hubLoad', { model: 'org/not-a-repo', load: { ...hub(), revision: 'v1' }, cache: false });
    expect(noRepo.error?.code).toBe('not-found');
    expect(noRepo.error?.message).toMatch(/repo org\/not-a-repo does not exist/);
    const gated = await call('hubLoad', { model: 'org/gated260K', load: hub(), cache: false });
    expect(gated.error?.code).toBe('unauthorized');
    expect(gated.error?.message).toMatch(/gated or private: pass a token/);
    const wrong = await call('hubLoad', { model: 'org/gated260K', load: { ...hub(), token: 'hf_wrong' }, cache: false });
    expect(wrong.error?.code).toBe('unauthorized');
    expect(wrong.error?.message).toMatch(/token was refused/);
  });

  it('an abort mid-download stops it and destroys the GPU buffers made so far', async () => {
    server.setFaults({ latencyMs: 30 });
    const r = await call('hubLoad', {
      model: 'org/stories260K',
      load: { ...hub(), chunkBytes: 64 << 10, parallelReads: 2 },
      cache: false,
      abortAt: 300_000,
    });
    expect(r.error?.code).toBe('aborted');
    if (!r.error) return;
    expect(r.createdBuffers).toBeGreaterThan(5); // weights were on the GPU when it stopped
    expect(r.liveBuffers.filter((l) => l !== 'step' && l !== 'dummy')).toEqual([]);
    const got = server.requests.filter((q) => q.path.startsWith('/cdn/') && q.range).length;
    expect(got).toBeLessThan(Math.ceil(1_044_984 / (64 << 10))); // it stopped early
  });
});

describe('cache of quantized weights', () => {
  let quant: FormatName = 'f32';
  beforeAll(async () => {
    for (const q of ['nf4', 'int8'] as const) {
      if (await call('hasFormat', { format: q })) {
        quant = q;
        break;
      }
    }
  });

  for (const kind of ['opfs', 'cache-api'] as const) {
    it(`${kind}: the second load requests no weight bytes and builds nothing${kind === 'opfs' ? '; a corrupt entry is rebuilt' : ''}; list and delete`, async () => {
      const cache = { kind, root: `nibble-test-${kind}` };
      await call('cacheOp', { ...cache, op: 'clear' });
      const load = { ...hub(), quant };
      const cold = await call('hubLoad', { model: 'org/stories260K', load, cache, logitsFor: once.hf_input_ids });
      if (cold.error) throw new Error(JSON.stringify(cold.error));
      const jobs = cold.info.load!.weightsBuilt;
      expect(cold.info.load!.cache).toBe('miss');
      expect(cold.info.load!.weightsCached).toBe(jobs);
      expect(weightRangeGets(STORIES_DATA_START).length).toBeGreaterThan(0);

      server.resetStats();
      const warm = await call('hubLoad', { model: 'org/stories260K', load, cache, logitsFor: once.hf_input_ids });
      if (warm.error) throw new Error(JSON.stringify(warm.error));
      const w = warm.info.load!;
      expect(w.cache).toBe('hit');
      expect(w.weightsFromCache).toBe(jobs);
      expect(w.weightsBuilt).toBe(0); // no quantization ran
      expect(w.bytesDownloaded).toBe(0);
      expect(weightRangeGets(STORIES_DATA_START)).toEqual([]); // zero weight bytes requested from the mirror
      expect(warm.logits).toEqual(cold.logits);
      expect(warm.phases.map((p) => p.phase)).toEqual(['metadata', 'cache', 'done']);
      expect(warm.info.formats).toEqual(cold.info.formats);

      const list = await call('cacheOp', { ...cache, op: 'list' });
      expect(Array.isArray(list) && list.length).toBe(1);
      const model = (list as Array<{ key: string; cacheId: string; bytes: number; entries: number; formats: string[] }>)[0]!;
      expect(model.cacheId).toBe(`hub:${server.url}/org/stories260K@main`);
      expect(model.entries).toBe(jobs);
      expect(model.bytes).toBeGreaterThan(0);
      if (quant !== 'f32') expect(model.formats).toContain(quant);

      if (kind === 'opfs') await damageAndRebuild();
      async function damageAndRebuild() {
      // a damaged entry is detected and rebuilt from the checkpoint
      const damaged = await call('cacheOp', { ...cache, op: 'corrupt', match: 'layer1.gate_up' });
      expect(damaged).toMatch(/layer1\.gate_up/);
      server.resetStats();
      const fixed = await call('hubLoad', { model: 'org/stories260K', load, cache, logitsFor: once.hf_input_ids });
      if (fixed.error) throw new Error(JSON.stringify(fixed.error));
      expect(fixed.info.load!.cache).toBe('partial');
      expect(fixed.info.load!.weightsFromCache).toBe(jobs - 1);
      expect(fixed.info.load!.weightsBuilt).toBe(1);
      expect(fixed.logits).toEqual(cold.logits);
      const after = await call('cacheOp', { ...cache, op: 'list' });
      expect((after as Array<{ entries: number }>)[0]!.entries).toBe(jobs); // the rebuilt entry is back
      }

      expect(await call('cacheOp', { ...cache, op: 'delete', key: model.key })).toBe(true);
      expect(await call('cacheOp', { ...cache, op: 'list' })).toEqual([]);
      console.log(
        `[cache ${kind}, ${quant}] cold load ${cold.loadMs.toFixed(0)} ms (write ${cold.info.load!.timeMs.cacheWrite.toFixed(0)} ms), ` +
          `cached load ${warm.loadMs.toFixed(0)} ms; peak host ${cold.info.load!.peakHostBytes} B ${JSON.stringify(cold.info.load!.timeMs)} ${JSON.stringify(warm.info.load!.timeMs)}`,
      );
    });
  }
});
