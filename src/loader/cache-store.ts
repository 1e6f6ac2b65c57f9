/**
 * The weight cache as the loader uses it: look up each job's entry and upload intact ones to the
 * GPU (no download, no quantization), and store what the load builds — a background writer reads
 * finished weights back beside the download and stages them; commit() makes them visible at the
 * end of a successful load, discard() drops them after a failure.
 */
import { resolveCache } from '../cache/index.ts';
import { ModelCacheHandle, type EntryManifest } from '../cache/model-cache.ts';
import type { WeightCache } from '../cache/types.ts';
import { createFromEntry, describeBuffers, readable, readBack, readBackAll } from '../cache/gpu.ts';
import type { Runtime } from '../kernels/runtime.ts';
import type { ModelSource } from '../source/types.ts';
import type { HostBudget } from '../util/host-budget.ts';
import type { Job } from './jobs.ts';
import type { LoadStats } from './weights.ts';

const message = (e: unknown) => (e as Error)?.message ?? String(e);

/** A finished weight waiting to be written. */
interface Pending {
  j: Job;
  buffers: GPUBuffer[];
}

const sizeOf = (x: Pending) => x.buffers.reduce((a, b) => a + b.size, 0);

function manifestOf(j: Job, buffers: GPUBuffer[]) {
  const base = { key: j.key!, kind: j.kind, label: j.label, buffers: describeBuffers(buffers), dataBytes: buffers.reduce((a, b) => a + b.size, 0) };
  return j.kind === 'matrix'
    ? { ...base, format: j.weight!.format, rows: j.weight!.rows, cols: j.weight!.cols, bytes: j.weight!.bytes, constants: j.weight!.constants }
    : { ...base, bytes: buffers[0]!.size };
}

export class WeightStore {
  private readonly queue: Pending[] = [];
  private writerBusy = false;
  private staging: Promise<void> = Promise.resolve();
  private failed = false;
  /** Milliseconds spent writing. */
  writeMs = 0;

  private readonly handle: ModelCacheHandle;
  private readonly rt: Runtime;
  private readonly stats: LoadStats;
  private readonly io: { chunkBytes: number; budget: HostBudget; signal: AbortSignal };

  private constructor(handle: ModelCacheHandle, rt: Runtime, stats: LoadStats, io: WeightStore['io']) {
    this.handle = handle;
    this.rt = rt;
    this.stats = stats;
    this.io = io;
  }

  /**
   * Opens the model's folder in the cache the option names (sets stats.cache): null when there is
   * no cache, the source has no identity or its files no validators, or the store cannot be opened.
   */
  static async open(
    option: WeightCache | boolean | undefined,
    source: ModelSource,
    fingerprints: Record<string, string> | null,
    rt: Runtime,
    stats: LoadStats,
    io: WeightStore['io'],
  ): Promise<WeightStore | null> {
    const store = resolveCache(option, source.cacheId?.startsWith('hub:') ?? false);
    if (!store) return null;
    if (!source.cacheId || !fingerprints) {
      stats.cache = 'unavailable';
      return null;
    }
    try {
      const handle = await ModelCacheHandle.open(store, source.cacheId, source.description, fingerprints);
      stats.cacheStore = store.description;
      stats.cacheKey = handle.key;
      stats.cache = 'miss';
      return new WeightStore(handle, rt, stats, io);
    } catch (e) {
      stats.cacheError = `opening the cache failed: ${message(e)}`;
      return null;
    }
  }

  /** The jobs with an intact entry of the right kind and geometry, with their manifests. */
  async lookup(jobs: readonly Job[]): Promise<Array<[Job, EntryManifest]>> {
    const found: Array<[Job, EntryManifest]> = [];
    for (const j of jobs) {
      const m = await this.handle.lookup(j.key!);
      const fits =
        m &&
        m.kind === j.kind &&
        (j.kind === 'vector' ? m.buffers.length === 1 && m.buffers[0]!.size >= j.cols * 4 : m.format === j.format && m.rows === j.rows && m.cols === j.cols);
      if (fits) found.push([j, m!]);
    }
    return found;
  }

  /**
   * Uploads one entry into new GPU buffers and completes the job (weight or buffer, fromCache).
   * Returns false when the entry is damaged (now deleted) or the store unreadable: the job is then
   * built from the checkpoint. Throws only when the load is aborted.
   */
  async upload(j: Job, m: EntryManifest, owned: GPUBuffer[], aborted: () => boolean): Promise<boolean> {
    const made = createFromEntry(this.rt, m.buffers);
    let ok: boolean;
    try {
      ok = await this.handle.readEntry(m, this.io.chunkBytes, this.io.budget, (off, bytes) => made.write(off, bytes), this.io.signal);
    } catch (e) {
      for (const b of made.buffers) b.destroy();
      if (aborted()) throw e;
      this.stats.cacheError = `reading the cache failed: ${message(e)}`;
      return false;
    }
    if (!ok) {
      for (const b of made.buffers) b.destroy();
      return false;
    }
    owned.push(...made.buffers);
    j.fromCache = true;
    if (j.kind === 'matrix') {
      j.weight = { format: m.format!, rows: m.rows!, cols: m.cols!, buffers: made.buffers, bytes: m.bytes, constants: m.constants ?? {} };
    } else {
      j.buffer = made.buffers[0]!;
    }
    this.stats.weightsFromCache++;
    this.stats.bytesFromCache += m.dataBytes;
    return true;
  }

  /** Queues a finished weight for writing (in the background, beside the download). */
  stage(j: Job, buffers: GPUBuffer[]): void {
    if (this.failed || !j.key || !readable(buffers)) return;
    this.queue.push({ j, buffers });
    if (this.writerBusy) return;
    this.writerBusy = true;
    this.staging = this.staging.then(() => this.writeLoop());
  }

  /**
   * Reads back as many small weights as fit in one chunk with a single copy pass + mapAsync (a
   * round trip per weight would dominate), and big ones in chunks, and stages their entries.
   */
  private async writeLoop(): Promise<void> {
    const { chunkBytes, budget, signal } = this.io;
    for (;;) {
      if (this.queue.length === 0 || this.failed || signal.aborted) {
        this.writerBusy = false; // in the same step as the check: a weight queued later starts a new loop
        return;
      }
      const s = performance.now();
      const batch = [this.queue.shift()!];
      let total = sizeOf(batch[0]!);
      while (this.queue.length > 0 && total + sizeOf(this.queue[0]!) <= chunkBytes) total += sizeOf((batch[batch.length] = this.queue.shift()!));
      try {
        if (batch.length === 1 && total > chunkBytes) {
          const { j, buffers } = batch[0]!;
          await this.handle.stage(manifestOf(j, buffers), readBack(this.rt, buffers, chunkBytes, budget, signal));
          this.stats.weightsCached++;
        } else {
          await this.stageBatch(batch, total);
        }
      } catch (e) {
        if (!signal.aborted) {
          this.failed = true;
          this.stats.cacheError = `writing the cache failed: ${message(e)}`;
        }
        for (const { j } of batch) await this.handle.dropData(j.key!);
      } finally {
        this.writeMs += performance.now() - s;
      }
    }
  }

  private async stageBatch(batch: Pending[], total: number): Promise<void> {
    const { budget, signal } = this.io;
    await budget.acquire(total, signal);
    try {
      const bytes = await readBackAll(this.rt, batch.flatMap((x) => x.buffers));
      let off = 0;
      for (const x of batch) {
        const part = bytes.subarray(off, off + sizeOf(x));
        off += sizeOf(x);
        await this.handle.stage(manifestOf(x.j, x.buffers), (async function* () {
          yield part;
        })());
        this.stats.weightsCached++;
      }
    } finally {
      budget.release(total);
    }
  }

  /** Waits for the writer to stage every queued weight. */
  async settle(): Promise<void> {
    await this.staging;
  }

  /** After a successful load (settled): commits, or after a write failure discards. */
  async finish(): Promise<void> {
    await this.staging;
    if (this.failed) {
      await this.handle.discard();
      return;
    }
    try {
      if (this.stats.weightsCached > 0 || this.stats.weightsFromCache > 0) await this.handle.commit();
    } catch (e) {
      this.stats.cacheError = `writing the cache failed: ${message(e)}`;
      await this.handle.discard();
    }
  }

  /** After a failed load: waits for the writer (aborted with the load) and drops what it staged. */
  async abandon(): Promise<void> {
    await this.staging.catch(() => {});
    await this.handle.discard().catch(() => {});
  }
}
