import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHarness, type Caller } from './page.ts';

/**
 * Memory preflight: Engine.load sizes the weights in the plan's formats (each format's layout, the
 * geometry its builder allocates), the KV cache at the context length and the scratch buffers
 * before a weight byte is requested, and refuses a load that does not fit — one buffer over the
 * adapter's binding limit, or the total over `maxGpuBytes` — with `gpu-limit`, naming the numbers
 * and a format or context length that fits. Requests are counted on the model source.
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const MODEL = '/models/stories260K';
const MiB = 2 ** 20;

describe('memory preflight', () => {
  it("each format's layout is what its builder allocates", async () => {
    const rows = await call('layoutCheck', {
      formats: ['f32', 'f16', 'int8', 'int8-g32', 'int8-g128', 'int8-row', 'nf4', 'nf4-dq'],
      shapes: [[64, 64], [172, 64], [64, 172], [7, 100], [1, 33], [300, 1000]],
    });
    expect(rows.length).toBe(48);
    for (const r of rows) {
      expect(r.layout, `${r.format} ${r.rows}x${r.cols}`).toEqual(r.built);
      expect(r.layoutBytes, `${r.format} ${r.rows}x${r.cols}`).toBe(r.bytes);
    }
  });

  it('the estimate matches what a load allocates', async () => {
    const scratch: Record<string, number> = {};
    for (const quant of ['f32', 'nf4'] as const) {
      const r = await call('countedLoad', { model: MODEL, load: { quant, cache: false } });
      expect(r.error, quant).toBeNull();
      const g = r.gpuMemory!;
      scratch[quant] = g.scratch;
      expect(g.weights, quant).toBe(r.weightBytes);
      expect(g.contextLength).toBe(r.contextLength);
      expect(g.total).toBeGreaterThanOrEqual(g.weights + g.kvCache + g.scratch + g.loadScratch);
      expect(g.kvCache).toBe(5 * 2 * 4 * 512 * 8 * 4); // layers × (k, v) × kv heads × positions × head_dim × f32
      // what the loaded engine holds (the sampler comes on first use) is within the estimate
      expect(r.liveBytes!, quant).toBeLessThanOrEqual(g.total);
      expect(r.liveBytes!, quant).toBeGreaterThanOrEqual(g.weights + g.kvCache);
      expect(r.weightRequests, 'the counter sees weight reads').toBeGreaterThan(0);
    }
    // SwiftShader (a CPU adapter) prefills nf4 through an f32 copy of the largest layer weight: gate_up, 2 · 172 × 64
    expect(scratch.nf4! - scratch.f32!).toBe(2 * 172 * 64 * 4);
  });

  it("kvCache 'f16' halves the KV cache the estimate and the load hold; a bad value is bad-argument", async () => {
    const r = await call('countedLoad', { model: MODEL, load: { quant: 'f32', cache: false, kvCache: 'f16' } });
    expect(r.error).toBeNull();
    expect(r.gpuMemory!.kvCache).toBe(5 * 2 * 4 * 512 * 8 * 2); // f16: 2 bytes per element
    expect(r.liveBytes!).toBeLessThanOrEqual(r.gpuMemory!.total);
    expect(r.liveBytes!).toBeGreaterThanOrEqual(r.gpuMemory!.weights + r.gpuMemory!.kvCache);
    const bad = await call('countedLoad', { model: MODEL, load: { quant: 'f32', cache: false, kvCache: 'bf16' as never } });
    expect(bad.error?.code).toBe('bad-argument');
    expect(bad.error?.message).toContain('kvCache');
    expect(bad.weightRequests).toBe(0);
  });

  it('over maxGpuBytes: gpu-limit before any weight byte is requested, naming sizes and what fits', async () => {
    const ok = await call('countedLoad', { model: MODEL, load: { quant: 'f32', cache: false } });
    const need = ok.gpuMemory!.total;
    const budget = need - 1;
    const r = await call('countedLoad', { model: MODEL, load: { quant: 'f32', cache: false, maxGpuBytes: budget } });
    if (process.env.SHOW) console.log(r.error?.message);
    expect(r.error?.code).toBe('gpu-limit');
    expect(r.weightRequests).toBe(0);
    expect(r.requests).toBeGreaterThan(0); // the headers were read
    const msg = r.error!.message;
    expect(msg).toContain(`${need} bytes`);
    expect(msg).toContain(`maxGpuBytes is`);
    expect(msg).toContain(`(${budget} bytes)`);
    expect(msg).toMatch(/KV cache [\d.]+ [KM]iB at contextLength 512/);
    expect(msg).toMatch(/weights [\d.]+ [KM]iB as 'f32'/);
    // the suggestions work: a smaller format, or the context length it names
    expect(msg).toMatch(/quant 'f16' \(/);
    const ctx = Number(/contextLength ≤ (\d+)/.exec(msg)?.[1]);
    expect(ctx).toBeGreaterThan(1);
    expect(ctx).toBeLessThan(512);
    const shorter = await call('countedLoad', { model: MODEL, load: { quant: 'f32', cache: false, maxGpuBytes: budget, contextLength: ctx } });
    expect(shorter.error).toBeNull();
    expect(shorter.gpuMemory!.total).toBeLessThanOrEqual(budget);
    const smaller = await call('countedLoad', { model: MODEL, load: { quant: 'f16', cache: false, maxGpuBytes: budget } });
    expect(smaller.error).toBeNull();

    // far too small: nothing fits, still nothing downloaded
    const tiny = await call('countedLoad', { model: MODEL, load: { quant: 'nf4', cache: false, maxGpuBytes: 100_000 } });
    expect(tiny.error?.code).toBe('gpu-limit');
    expect(tiny.error?.message).toMatch(/Neither a smaller weight format nor a shorter context/);
    expect(tiny.weightRequests).toBe(0);

    const bad = await call('countedLoad', { model: MODEL, load: { maxGpuBytes: '1e9' as unknown as number } });
    expect(bad.error?.code).toBe('bad-argument');
    expect(bad.error?.message).toContain('maxGpuBytes');
    expect(bad.requests).toBe(0);
  });

  it('a 1.2 B-parameter model on a device with the default limits: the embedding is split to bind, gpu-limit naming what does not fit, nothing downloaded', async () => {
    // f32: the 1002 MiB tied embedding / LM head (128256 × 2048 × 4 bytes) is stored in row parts
    // that each bind (src/model/spec.ts), so no buffer is over the limit: a 1.5 GiB budget refuses the
    // load on its total (only nf4 would fit), before a weight byte is requested, naming no buffer
    const r = await call('hugeLoad', { tokenizerFrom: MODEL, load: { quant: 'f32', cache: false, maxGpuBytes: 1.5 * 2 ** 30 } });
    if (process.env.SHOW) console.log(r.error?.message);
    expect(r.limits.maxStorageBufferBindingSize).toBeLessThanOrEqual(128 * MiB);
    expect(r.error?.code).toBe('gpu-limit');
    expect(r.weightRequests).toBe(0);
    const msg = r.error!.message;
    expect(msg).toMatch(/maxGpuBytes is 1\.50 GiB/);
    expect(msg).not.toMatch(/binds at most/);
    expect(msg).toMatch(/weights [\d.]+ GiB as 'f32'/);
    expect(msg).toMatch(/What would fit: quant .*'nf4' \(/);

    // in nf4 every buffer binds, but not within a 256 MiB budget (and no context length helps)
    const nf4 = await call('hugeLoad', { tokenizerFrom: MODEL, load: { quant: 'nf4', cache: false, maxGpuBytes: 256 * MiB, contextLength: 2048 } });
    expect(nf4.error?.code).toBe('gpu-limit');
    expect(nf4.error?.message).toMatch(/maxGpuBytes is 256\.0 MiB/);
    expect(nf4.error?.message).toMatch(/weights [\d.]+ MiB as 'nf4'/);
    expect(nf4.weightRequests).toBe(0);

    // a KV cache buffer over the binding limit: a shorter context fits
    const kv = await call('hugeLoad', { tokenizerFrom: MODEL, load: { quant: 'nf4', cache: false, contextLength: 131072, maxBatch: 16 } });
    if (process.env.SHOW) console.log(nf4.error?.message, '\n', kv.error?.message);
    expect(kv.error?.code).toBe('gpu-limit');
    expect(kv.error?.message).toContain('"layer0.k_cache"');
    const ctx = Number(/contextLength ≤ (\d+)/.exec(kv.error!.message)?.[1]);
    expect(ctx).toBe(Math.floor(kv.limits.maxStorageBufferBindingSize / (8 * 64 * 4)));
    expect(kv.weightRequests).toBe(0);
  });
});
