/**
 * The weight cache's layout and bookkeeping, independent of the GPU and of the storage backend.
 *
 * Layout inside a WeightCache (format version CACHE_FORMAT_VERSION):
 *
 *   v1/<model>/model.json        { version, cacheId, description, files: { file: fingerprint }, created, lastUsed }
 *   v1/<model>/<entry>.bin       the entry's GPU buffers, concatenated (each buffer's full size)
 *   v1/<model>/<entry>.json      the entry's manifest; written last, so it marks the entry complete
 *
 * <model> = a readable slug of the source's cacheId (repo or URL + revision) and a hash of it.
 * File fingerprints are the files' sha256 (Hub LFS ETag), else their ETag, else size + mtime. When a
 * model's fingerprints change (a new upload on the same revision) the whole model folder is stale
 * and is dropped before anything new is written.
 *
 * <entry> = label . format . hash(CACHE_FORMAT_VERSION, the member tensors' names, dtypes, shapes
 * and file fingerprints, the weight format and a hash of its shader code). One entry is one GPU
 * weight (a 2-D weight in its quantized format: codes + scales, plus its override constants) or one
 * f32 vector (norm weights, biases), so a cached model loads with no download and no quantization.
 *
 * Manifest: { version, key, kind, label, format, rows, cols, bytes, constants, buffers: [{ size,
 * usage, label }], dataBytes, checksum (Checksum64 of the .bin), created }. Reading verifies the
 * length and the checksum; a mismatch deletes the entry and the weight is rebuilt from the source.
 * Writes during a load are staged (.bin only) and committed (manifests + model.json) only once the
 * whole load succeeded — after every downloaded file passed its sha256 check — so a failed or
 * aborted load caches nothing.
 */
import { NibbleError } from '../errors.ts';
import { Sha256 } from '../util/sha256.ts';
import type { HostBudget } from '../util/host-budget.ts';
import { Checksum64 } from './checksum.ts';
import { readText, writeText, type WeightCache } from './types.ts';

/** Bump when the entry layout or the meaning of cached bytes changes. */
export const CACHE_FORMAT_VERSION = 1;
const ROOT = `v${CACHE_FORMAT_VERSION}/`;

export interface CachedBufferInfo {
  size: number;
  usage: number;
  label: string;
}

export interface EntryManifest {
  version: number;
  key: string;
  kind: 'matrix' | 'vector';
  label: string;
  format?: string;
  rows?: number;
  cols?: number;
  /** GpuWeight.bytes (logical bytes) for matrices; the buffer size for vectors. */
  bytes: number;
  constants?: Record<string, number>;
  buffers: CachedBufferInfo[];
  dataBytes: number;
  checksum: string;
  created: string;
}

export interface CachedModelInfo {
  /** Pass to deleteCachedModel. */
  key: string;
  /** The source's identity, e.g. `hub:https://huggingface.co/org/name@main`. */
  cacheId: string;
  description: string;
  /** Bytes stored for this model (all plans). */
  bytes: number;
  /** Complete weight entries. */
  entries: number;
  /** Weight formats present (one model may be cached under several plans). */
  formats: string[];
  created: string;
  lastUsed: string;
}

interface ModelJson {
  version: number;
  cacheId: string;
  description: string;
  files: Record<string, string>;
  created: string;
  lastUsed: string;
}

export function shortHash(s: string, hexChars = 16): string {
  return new Sha256().update(new TextEncoder().encode(s)).hex().slice(0, hexChars);
}

function slug(s: string, max = 48): string {
  const t = s
    .replace(/^[a-z]+:(?![/][/])/i, '') // our prefix: hub: / url: / fs: / blob:
    .replace(/^[a-z]+:[/][/][^/]*/i, '') // scheme://host
    .replace(/[^A-Za-z0-9._@-]+/g, '--')
    .replace(/^[-.]+|[-.]+$/g, '');
  return (t || 'model').slice(-max);
}

/** Format name used in entry keys of f32 vectors (norms, biases). */
export const VECTOR_FORMAT = 'vec';

/** The folder name of a model in the cache. */
export function modelKey(cacheId: string): string {
  return `${slug(cacheId)}-${shortHash(cacheId, 12)}`;
}

/** Entry key of one GPU weight. */
export function entryKey(label: string, format: string, identity: unknown): string {
  return `${slug(label, 40)}.${slug(format, 16)}.${shortHash(JSON.stringify([CACHE_FORMAT_VERSION, identity]))}`;
}

async function readJson<T>(cache: WeightCache, path: string): Promise<T | null> {
  try {
    const t = await readText(cache, path);
    return t === null ? null : (JSON.parse(t) as T);
  } catch {
    return null; // unreadable or half-written: treated as absent
  }
}

function validManifest(m: EntryManifest | null, key: string): m is EntryManifest {
  return (
    !!m &&
    m.version === CACHE_FORMAT_VERSION &&
    m.key === key &&
    Array.isArray(m.buffers) &&
    m.buffers.every((b) => Number.isSafeInteger(b.size) && b.size >= 0 && Number.isInteger(b.usage)) &&
    m.dataBytes === m.buffers.reduce((a, b) => a + b.size, 0) &&
    typeof m.checksum === 'string'
  );
}

/** One model's folder in a WeightCache, opened for a load. */
export class ModelCacheHandle {
  readonly cache: WeightCache;
  readonly key: string;
  private readonly dir: string;
  private readonly model: ModelJson;
  private readonly staged = new Map<string, EntryManifest>();

  private constructor(cache: WeightCache, key: string, model: ModelJson) {
    this.cache = cache;
    this.key = key;
    this.dir = `${ROOT}${key}/`;
    this.model = model;
  }

  /**
   * Opens (or prepares) the folder of `cacheId`. When the stored file fingerprints differ from
   * `files`, the folder's entries are stale and are deleted.
   */
  static async open(cache: WeightCache, cacheId: string, description: string, files: Record<string, string>): Promise<ModelCacheHandle> {
    const key = modelKey(cacheId);
    const dir = `${ROOT}${key}/`;
    const now = new Date().toISOString();
    const old = await readJson<ModelJson>(cache, `${dir}model.json`);
    const same = !!old && old.cacheId === cacheId && JSON.stringify(sortKeys(old.files)) === JSON.stringify(sortKeys(files));
    if (old && !same) await cache.delete(dir);
    const model: ModelJson = same ? { ...old!, lastUsed: now } : { version: CACHE_FORMAT_VERSION, cacheId, description, files, created: now, lastUsed: now };
    return new ModelCacheHandle(cache, key, model);
  }

  /** The entry's manifest if a complete entry exists, else null. */
  async lookup(key: string): Promise<EntryManifest | null> {
    const m = await readJson<EntryManifest>(this.cache, `${this.dir}${key}.json`);
    return validManifest(m, key) ? m : null;
  }

  /**
   * Streams an entry's data in chunks (each counted in `budget` while held) to `onChunk(offset,
   * bytes)`; verifies length and checksum. Returns false — and deletes the entry — when the data is
   * missing, short or corrupt.
   */
  async readEntry(
    m: EntryManifest,
    chunkBytes: number,
    budget: HostBudget,
    onChunk: (offset: number, bytes: Uint8Array) => void,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const path = `${this.dir}${m.key}.bin`;
    const sum = new Checksum64();
    let off = 0;
    while (off < m.dataBytes) {
      const n = Math.min(chunkBytes, m.dataBytes - off);
      await budget.acquire(n, signal);
      try {
        const bytes = await this.cache.read(path, off, off + n);
        if (!bytes || bytes.length !== n) {
          await this.remove(m.key);
          return false;
        }
        sum.update(bytes);
        onChunk(off, bytes);
      } finally {
        budget.release(n);
      }
      off += n;
    }
    // Longer than the manifest says: also a damaged entry.
    const extra = await this.cache.read(path, m.dataBytes, m.dataBytes + 1);
    if (sum.hex() !== m.checksum || (extra && extra.length > 0)) {
      await this.remove(m.key);
      return false;
    }
    return true;
  }

  /**
   * Writes an entry's data now and keeps its manifest until commit(). `chunks` must yield exactly
   * `manifest.dataBytes` bytes.
   */
  async stage(manifest: Omit<EntryManifest, 'checksum' | 'version' | 'created'>, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    const sum = new Checksum64();
    let n = 0;
    const counted = (async function* () {
      for await (const c of chunks) {
        sum.update(c);
        n += c.length;
        yield c;
      }
    })();
    await this.cache.write(`${this.dir}${manifest.key}.bin`, counted);
    if (n !== manifest.dataBytes) {
      await this.cache.delete(`${this.dir}${manifest.key}.bin`);
      throw new NibbleError('bad-argument', `cache entry ${manifest.key}: wrote ${n} bytes, expected ${manifest.dataBytes}`);
    }
    this.staged.set(manifest.key, { ...manifest, version: CACHE_FORMAT_VERSION, checksum: sum.hex(), created: new Date().toISOString() });
  }

  /** Makes the staged entries visible (manifests) and records the model. */
  async commit(): Promise<void> {
    for (const m of this.staged.values()) await writeText(this.cache, `${this.dir}${m.key}.json`, JSON.stringify(m));
    this.staged.clear();
    this.model.lastUsed = new Date().toISOString();
    await writeText(this.cache, `${this.dir}model.json`, JSON.stringify(this.model, null, 1));
  }

  /** Drops staged data (a failed or aborted load). */
  async discard(): Promise<void> {
    const keys = [...this.staged.keys()];
    this.staged.clear();
    for (const k of keys) await this.cache.delete(`${this.dir}${k}.bin`).catch(() => {});
  }

  /** Forgets that a .bin may have been written for `key` without being staged (failed write). */
  async dropData(key: string): Promise<void> {
    await this.cache.delete(`${this.dir}${key}.bin`).catch(() => {});
  }

  async remove(key: string): Promise<void> {
    await this.cache.delete(`${this.dir}${key}.json`).catch(() => {});
    await this.cache.delete(`${this.dir}${key}.bin`).catch(() => {});
  }
}

function sortKeys(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Every model in a cache, with its size (complete entries and leftovers alike). */
export async function listModels(cache: WeightCache): Promise<CachedModelInfo[]> {
  const files = await cache.list(ROOT);
  const byModel = new Map<string, Array<{ name: string; size: number }>>();
  for (const f of files) {
    const rest = f.path.slice(ROOT.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) continue;
    const key = rest.slice(0, slash);
    let list = byModel.get(key);
    if (!list) byModel.set(key, (list = []));
    list.push({ name: rest.slice(slash + 1), size: f.size });
  }
  const out: CachedModelInfo[] = [];
  for (const [key, list] of byModel) {
    const model = await readJson<ModelJson>(cache, `${ROOT}${key}/model.json`);
    const manifests = list.filter((f) => f.name.endsWith('.json') && f.name !== 'model.json');
    const formats = new Set<string>();
    for (const f of manifests) {
      const parts = f.name.split('.');
      if (parts.length >= 4 && parts[parts.length - 3] !== VECTOR_FORMAT) formats.add(parts[parts.length - 3]!);
    }
    out.push({
      key,
      cacheId: model?.cacheId ?? '(unknown)',
      description: model?.description ?? '(incomplete)',
      bytes: list.reduce((a, f) => a + f.size, 0),
      entries: manifests.length,
      formats: [...formats].sort(),
      created: model?.created ?? '',
      lastUsed: model?.lastUsed ?? '',
    });
  }
  return out.sort((a, b) => (a.lastUsed < b.lastUsed ? 1 : -1));
}

/** Deletes one model (a key from listModels); returns whether anything was there. */
export async function deleteModel(cache: WeightCache, key: string): Promise<boolean> {
  if (!/^[A-Za-z0-9._@-]+$/.test(key)) throw new NibbleError('bad-argument', `not a cached model key: ${JSON.stringify(key)}`);
  const dir = `${ROOT}${key}/`;
  const had = (await cache.list(dir)).length > 0;
  await cache.delete(dir);
  return had;
}
