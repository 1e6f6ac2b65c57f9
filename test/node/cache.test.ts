import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, truncateSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryCache } from '../../src/cache/memory.ts';
import { DirCache } from '../../src/cache/node-dir.ts';
import { deleteModel, entryKey, listModels, modelKey, ModelCacheHandle, type EntryManifest } from '../../src/cache/model-cache.ts';
import type { WeightCache } from '../../src/cache/types.ts';
import { HostBudget } from '../../src/util/host-budget.ts';

/**
 * The weight cache without a GPU: the layout (staged .bin, manifest on commit), checksums that
 * catch corrupt / truncated / half-written entries, stale models dropped when their files change,
 * listing with sizes and deleting — over the Node folder store and the in-memory store.
 */
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function* chunksOf(b: Uint8Array, n: number) {
  for (let i = 0; i < b.length; i += n) yield b.slice(i, i + n);
}

function manifest(key: string, data: Uint8Array, split: number): Omit<EntryManifest, 'checksum' | 'version' | 'created'> {
  return {
    key,
    kind: 'matrix',
    label: 'layer0.qkv',
    format: 'nf4',
    rows: 8,
    cols: 64,
    bytes: data.length,
    constants: { GROUP: 64 },
    buffers: [
      { size: split, usage: 140, label: 'codes' },
      { size: data.length - split, usage: 140, label: 'scales' },
    ],
    dataBytes: data.length,
  };
}

async function readAll(h: ModelCacheHandle, m: EntryManifest): Promise<{ ok: boolean; bytes: Uint8Array }> {
  const out = new Uint8Array(m.dataBytes);
  const budget = new HostBudget(1 << 20);
  const ok = await h.readEntry(m, 1000, budget, (off, b) => out.set(b, off));
  expect(budget.meter.current).toBe(0);
  expect(budget.meter.peak).toBeLessThanOrEqual(1000);
  return { ok, bytes: out };
}

for (const kind of ['DirCache', 'MemoryCache'] as const) {
  describe(`weight cache over ${kind}`, () => {
    const make = (): WeightCache => {
      if (kind === 'MemoryCache') return new MemoryCache();
      const d = mkdtempSync(join(tmpdir(), 'nibble-cache-'));
      dirs.push(d);
      return new DirCache(d);
    };

    it('stages entries, shows them only after commit, reads them back verified, lists and deletes the model', async () => {
      const store = make();
      const files = { 'model.safetensors': 'sha256:abc' };
      const h = await ModelCacheHandle.open(store, 'hub:http://x/org/name@main', 'org/name@main', files);
      expect(h.key).toBe(modelKey('hub:http://x/org/name@main'));
      expect(h.key).toMatch(/^org--name@main-[0-9a-f]{12}$/);
      const key = entryKey('layer0.qkv', 'nf4', { members: ['q', 'k', 'v'] });
      expect(key).toMatch(/^layer0\.qkv\.nf4\.[0-9a-f]{16}$/);
      expect(entryKey('layer0.qkv', 'nf4', { members: ['q', 'k', 'v'], fp: 'other' })).not.toBe(key);
      const data = new Uint8Array(randomBytes(10_000));
      await h.stage(manifest(key, data, 4096), chunksOf(data, 777));
      expect(await h.lookup(key)).toBeNull(); // not committed yet
      await h.commit();
      const m = await h.lookup(key);
      expect(m?.format).toBe('nf4');
      expect(m?.constants).toEqual({ GROUP: 64 });
      const r = await readAll(h, m!);
      expect(r.ok).toBe(true);
      expect(Buffer.from(r.bytes).equals(Buffer.from(data))).toBe(true);

      const again = await ModelCacheHandle.open(store, 'hub:http://x/org/name@main', 'org/name@main', files);
      expect(await again.lookup(key)).not.toBeNull();

      const list = await listModels(store);
      expect(list).toHaveLength(1);
      expect(list[0]!.key).toBe(h.key);
      expect(list[0]!.cacheId).toBe('hub:http://x/org/name@main');
      expect(list[0]!.entries).toBe(1);
      expect(list[0]!.formats).toEqual(['nf4']);
      expect(list[0]!.bytes).toBeGreaterThan(10_000);
      expect(await deleteModel(store, h.key)).toBe(true);
      expect(await listModels(store)).toEqual([]);
      expect(await deleteModel(store, h.key)).toBe(false);
    });

    it('a corrupt, truncated or extended entry is detected, deleted and reported as a miss', async () => {
      const store = make();
      const h = await ModelCacheHandle.open(store, 'url:http://x/m', 'm', { 'model.safetensors': 'etag:1:5' });
      const data = new Uint8Array(randomBytes(5000));
      const keys = ['a', 'b', 'c'].map((l) => entryKey(l, 'f32', l));
      for (const k of keys) await h.stage(manifest(k, data, 1000), chunksOf(data, 999));
      await h.commit();
      const binPath = (k: string) => `v1/${h.key}/${k}.bin`;
      // damage the stored files through the store's own API (works for every backend)
      const flip = (await store.read(binPath(keys[0]!), 0, 1e9))!;
      flip[1234] ^= 0x40;
      await store.write(binPath(keys[0]!), chunksOf(flip, 4096));
      const short = (await store.read(binPath(keys[1]!), 0, 1e9))!;
      await store.write(binPath(keys[1]!), chunksOf(short.subarray(0, 4000), 4096));
      const long = new Uint8Array(5001);
      long.set(data);
      await store.write(binPath(keys[2]!), chunksOf(long, 4096));
      for (const k of keys) {
        const m = await h.lookup(k);
        expect(m, k).not.toBeNull();
        expect((await readAll(h, m!)).ok, k).toBe(false);
        expect(await h.lookup(k), `${k} deleted`).toBeNull();
      }
    });

    it('a half-written manifest or missing data is a miss; discard() drops staged data; changed files make the model stale', async () => {
      const store = make();
      const files = { 'a.safetensors': 'sha256:1', 'b.safetensors': 'sha256:2' };
      const h = await ModelCacheHandle.open(store, 'fs:/m', 'm', files);
      const data = new Uint8Array(randomBytes(300));
      const k = entryKey('w', 'int8', 1);
      await h.stage(manifest(k, data, 100), chunksOf(data, 64));
      await h.commit();
      await store.write(`v1/${h.key}/${k}.json`, chunksOf(new TextEncoder().encode('{"version":1,"key":'), 10));
      expect(await h.lookup(k)).toBeNull();

      const k2 = entryKey('w2', 'int8', 2);
      await h.stage(manifest(k2, data, 100), chunksOf(data, 64));
      await h.discard();
      expect((await store.list(`v1/${h.key}/`)).some((f) => f.path.includes(k2))).toBe(false);

      await h.stage(manifest(k2, data, 100), chunksOf(data, 64));
      await h.commit();
      expect(await h.lookup(k2)).not.toBeNull();
      // a new upload of one file: the model's folder is stale and emptied
      const h2 = await ModelCacheHandle.open(store, 'fs:/m', 'm', { ...files, 'b.safetensors': 'sha256:3' });
      expect(await h2.lookup(k2)).toBeNull();
      expect(await store.list(`v1/${h.key}/`)).toEqual([]);
    });
  });
}

describe('DirCache specifics', () => {
  it('never leaves partial files: an interrupted write leaves no file behind; direct damage on disk is caught', async () => {
    const d = mkdtempSync(join(tmpdir(), 'nibble-cache-'));
    dirs.push(d);
    const store = new DirCache(d);
    async function* failing() {
      yield new Uint8Array(100);
      throw new Error('disk full');
    }
    await expect(store.write('v1/m/x.bin', failing())).rejects.toThrow(/disk full/);
    expect(readdirSync(join(d, 'v1', 'm'))).toEqual([]);

    const h = await ModelCacheHandle.open(store, 'fs:/q', 'q', { f: 'mtime:1:2' });
    const data = new Uint8Array(randomBytes(4000));
    const k = entryKey('e', 'f32', 0);
    await h.stage(manifest(k, data, 2000), chunksOf(data, 1500));
    await h.commit();
    const bin = join(d, 'v1', h.key, `${k}.bin`);
    truncateSync(bin, 3999);
    expect((await readAll(h, (await h.lookup(k))!)).ok).toBe(false);
    await h.stage(manifest(k, data, 2000), chunksOf(data, 1500));
    await h.commit();
    const b = readFileSync(bin);
    b[0] ^= 1;
    writeFileSync(bin, b);
    expect((await readAll(h, (await h.lookup(k))!)).ok).toBe(false);
  });
});
