/**
 * Loads the GPU weights a model declares (a list of WeightSpec: src/model/spec.ts for the Llama
 * graph): from the weight cache where an intact entry exists (no download, no quantization),
 * otherwise by streaming the checkpoint through the scheduler (stream.ts) into the weight formats'
 * builders — and then storing what was built in the cache. Nothing here knows a model's layout:
 * planning and keys are jobs.ts, the cache store cache-store.ts, the streaming build build.ts.
 *
 * Phases are reported through onProgress (LoadProgress lists them): metadata (one HEAD per weight
 * file on the Hub, cache lookup), cache, weights (streamed, sha256 of LFS files verified, built),
 * quantize, and this loader's own 'done' (Engine.load adds 'compile' and its final 'done').
 * On any failure or abort every GPU buffer made so far is destroyed and nothing is cached.
 */
import { NibbleError } from '../errors.ts';
import type { Runtime } from '../kernels/runtime.ts';
import type { GpuWeight } from '../quant/format.ts';
import { NonFiniteCheck } from '../quant/gpu-builder.ts';
import type { ModelSource } from '../source/types.ts';
import type { WeightCache } from '../cache/types.ts';
import { HostBudget } from '../util/host-budget.ts';
import { buildTargets, checkComplete, dropBuilders } from './build.ts';
import { WeightStore } from './cache-store.ts';
import { assignKeys, gpuNonFiniteError, makeJobs, memberBytes, readMetadata, type Job } from './jobs.ts';
import type { TensorInfo } from './safetensors.ts';
import { DEFAULT_CHUNK_BYTES, DEFAULT_PARALLEL_READS, streamTensors } from './stream.ts';

export { VECTOR_FORMAT } from '../cache/model-cache.ts';

export const DEFAULT_HOST_MEMORY_BUDGET = 256 << 20;

/**
 * A load's progress. Phases, in order (a phase with no work is skipped; 'weights' and 'quantize'
 * overlap, the GPU quantizing what was downloaded while the next bytes arrive):
 *   metadata  file sizes / ETags, cache lookup
 *   cache     cached weights uploaded to the GPU
 *   weights   the checkpoint downloaded (bytesDone / bytesTotal: bytes read)
 *   quantize  the GPU finished building (quantizing, uploading) the downloaded weights
 *             (bytesDone / bytesTotal: their checkpoint bytes)
 *   compile   the model's compute pipelines compiled (pipelinesDone / pipelinesTotal)
 *   done      the model can generate: Engine.load resolves right after this event
 */
export interface LoadProgress {
  phase: 'metadata' | 'cache' | 'weights' | 'quantize' | 'compile' | 'done';
  /** Bytes done in this phase (downloaded in 'weights', read from the cache in 'cache', built on the GPU in 'quantize'). */
  bytesDone: number;
  bytesTotal: number;
  tensorsDone: number;
  tensorsTotal: number;
  /** The tensor (weight) being loaded. */
  tensor?: string;
  /**
   * The whole load done, 0..1, never decreasing: download (or cache), quantize and compile each
   * have a share (set by Engine.load; reaches 1 only with the 'done' event).
   */
  fraction?: number;
  /** 'compile': pipelines compiled so far / in all (known once the graph is built). */
  pipelinesDone?: number;
  pipelinesTotal?: number;
}

export interface WeightLoadOptions {
  /** Bytes of one Range read (default 16 MiB; always whole rows). */
  chunkBytes?: number;
  /** Range reads in flight at once (default 4). */
  parallelReads?: number;
  /** Most bytes the loader holds on the host at once (default 256 MiB). */
  hostMemoryBudget?: number;
  /** Check the sha256 of files whose source gives one (Hub LFS ETags); default true. */
  verify?: boolean;
  /**
   * Weight cache: a WeightCache, true (the browser's default store), or false. Default: the
   * browser's store for Hub models, no cache otherwise.
   */
  cache?: WeightCache | boolean;
  signal?: AbortSignal;
  onProgress?: (p: LoadProgress) => void;
}

export interface LoadStats {
  /** 'hit': every weight from the cache; 'partial'; 'miss': none; 'off': no cache; 'unavailable': the source has no identity or no file validators. */
  cache: 'off' | 'unavailable' | 'miss' | 'partial' | 'hit';
  /** The cache store and the model's key in it (for deleteCachedModel). */
  cacheStore?: string;
  cacheKey?: string;
  /** GPU weights (2-D weights and vectors) uploaded from the cache / built from the checkpoint. */
  weightsFromCache: number;
  weightsBuilt: number;
  /** Weights this load wrote to the cache. */
  weightsCached: number;
  bytesFromCache: number;
  /** Checkpoint bytes requested for weights (headers, read earlier, not included). */
  bytesDownloaded: number;
  /** Range requests the scheduler made (before retries). */
  requests: number;
  maxInFlight: number;
  /** Files whose sha256 was verified. */
  verifiedFiles: string[];
  hostMemoryBudget: number;
  peakHostBytes: number;
  timeMs: { metadata: number; cache: number; weights: number; cacheWrite: number };
  /** Why writing the cache failed, if it did (the load itself succeeded). */
  cacheError?: string;
}

/** One member of a weight: rows [rowStart, rowStart + rowCount) of a checkpoint tensor (a vector takes all of it). */
export interface WeightMember {
  tensor: TensorInfo;
  rowStart: number;
  /** Rows taken (a vector's: its first dimension, all of it). */
  rowCount: number;
}

/**
 * One GPU weight a model declares: a 2-D weight (the rows of its members, concatenated: a fused
 * q/k/v, or a row part of a split embedding) in a weight format, or an f32 vector (norm weights,
 * biases; VECTOR_FORMAT) of its members' elements. Labels are unique: the loaded weights are
 * returned by label.
 */
export interface WeightSpec {
  label: string;
  kind: 'matrix' | 'vector';
  members: WeightMember[];
  /** The weight format (matrices), or VECTOR_FORMAT. */
  format: string;
  /** Matrices: rows × cols; vectors: 1 × elements. */
  rows: number;
  cols: number;
}

export interface LoadedWeights {
  /** The built matrix of a label (a bad-argument error for an unknown one). */
  matrix(label: string): GpuWeight;
  /** The f32 vector of a label. */
  vector(label: string): GPUBuffer;
  /** Every GPU buffer made (the caller owns them now). */
  owned: GPUBuffer[];
  weightBytes: number;
  matrixBytes: number;
  weightCount: number;
  formats: Record<string, number>;
  budget: HostBudget;
  stats: LoadStats;
}

function newStats(budget: HostBudget): LoadStats {
  return {
    cache: 'off',
    weightsFromCache: 0,
    weightsBuilt: 0,
    weightsCached: 0,
    bytesFromCache: 0,
    bytesDownloaded: 0,
    requests: 0,
    maxInFlight: 0,
    verifiedFiles: [],
    hostMemoryBudget: budget.limit,
    peakHostBytes: 0,
    timeMs: { metadata: 0, cache: 0, weights: 0, cacheWrite: 0 },
  };
}

function aborted(signal: AbortSignal | undefined): NibbleError {
  return new NibbleError('aborted', 'model load aborted', { cause: signal?.reason });
}

/** One load's shared state. */
interface Load {
  rt: Runtime;
  source: ModelSource;
  opts: WeightLoadOptions;
  jobs: Job[];
  budget: HostBudget;
  chunkBytes: number;
  stats: LoadStats;
  /** The load's own signal: aborted by the caller's and by any failure (background cache writes stop too). */
  signal: AbortSignal;
  owned: GPUBuffer[];
  tensorsDone: number;
  failed: boolean;
  checkAbort(): void;
  progress(phase: LoadProgress['phase'], bytesDone: number, bytesTotal: number, tensor?: string): void;
}

/** Uploads every weight with an intact cache entry ('cache' phase). */
async function uploadCached(load: Load, store: WeightStore): Promise<void> {
  const found = await store.lookup(load.jobs);
  const total = found.reduce((a, [, m]) => a + m.dataBytes, 0);
  let done = 0;
  if (found.length > 0) load.progress('cache', 0, total);
  for (const [j, m] of found) {
    load.checkAbort();
    try {
      if (!(await store.upload(j, m, load.owned, () => !!load.opts.signal?.aborted))) continue; // rebuilt from the checkpoint
    } catch {
      throw aborted(load.opts.signal);
    }
    done += m.dataBytes;
    load.tensorsDone += j.members.length;
    load.progress('cache', done, total, j.label);
  }
}

/** Streams and builds every weight not taken from the cache ('weights' and 'quantize' phases). */
async function buildRest(load: Load, store: WeightStore | null, nonFinite: NonFiniteCheck, verify: { sha256: Map<string, string>; sizes: Map<string, number> }): Promise<void> {
  const { rt, stats, jobs } = load;
  // 'quantize': a marker after each built weight's GPU work (queue order), so the phase reports
  // what the GPU finished, not what was queued
  const quantTotal = jobs.reduce((a, j) => a + (j.kind === 'matrix' && !j.fromCache ? memberBytes(j) : 0), 0);
  let quantDone = 0;
  const quantMarkers: Array<Promise<void>> = [];
  const targets = buildTargets(jobs, {
    rt,
    owned: load.owned,
    nonFinite,
    tensorDone: () => load.tensorsDone++,
    started: () => stats.weightsBuilt++,
    built: (j, buffers) => {
      if (j.kind === 'vector') stats.weightsBuilt++;
      else {
        const n = memberBytes(j);
        const marker = () => {
          quantDone += n;
          load.progress('quantize', quantDone, quantTotal, j.label);
        };
        quantMarkers.push(rt.device.queue.onSubmittedWorkDone().then(marker, () => {}));
      }
      store?.stage(j, buffers);
    },
  });
  // Empty tensors carry no bytes: complete them now.
  for (const tg of targets) if (tg.tensor.end <= tg.tensor.start) tg.write(0, new Uint8Array(0));
  if (targets.length > 0) {
    const r = await streamTensors(load.source, targets, {
      budget: load.budget,
      chunkBytes: load.chunkBytes,
      parallel: load.opts.parallelReads ?? DEFAULT_PARALLEL_READS,
      signal: load.signal,
      ...verify,
      onProgress: (done, total) => load.progress('weights', done, total),
    });
    stats.requests = r.requests;
    stats.bytesDownloaded = r.bytesRead;
    stats.verifiedFiles = r.verified;
    stats.maxInFlight = r.maxInFlight;
  }
  load.checkAbort();
  checkComplete(jobs);
  await Promise.all(quantMarkers);
  // the quantizers' non-finite counts (one readback for every weight built on the GPU)
  for (const r of await nonFinite.results()) {
    const j = jobs.find((x) => x.label === r.label && x.kind === 'matrix');
    if (j) throw gpuNonFiniteError(j, r);
    throw new NibbleError('bad-tensor', `weight ${r.label} holds ${r.count} non-finite values (NaN or ±Inf): the checkpoint is corrupt`);
  }
}

/** The metadata, cache and build phases, then the cache's commit. */
async function runLoad(load: Load, nonFinite: NonFiniteCheck, setStore: (s: WeightStore) => void): Promise<void> {
  const { stats, opts } = load;
  let t0 = performance.now();
  load.progress('metadata', 0, 0);
  const meta = await readMetadata(load.source, load.jobs, opts.verify !== false, load.signal);
  load.checkAbort();
  const store = await WeightStore.open(opts.cache, load.source, meta.fingerprints, load.rt, stats, {
    chunkBytes: load.chunkBytes,
    budget: load.budget,
    signal: load.signal,
  });
  if (store) {
    setStore(store);
    assignKeys(load.jobs, meta.fingerprints!);
  }
  stats.timeMs.metadata = performance.now() - t0;

  t0 = performance.now();
  if (store) await uploadCached(load, store);
  stats.timeMs.cache = performance.now() - t0;

  t0 = performance.now();
  await buildRest(load, store, nonFinite, meta);
  stats.timeMs.weights = performance.now() - t0;

  await store?.settle();
  load.checkAbort();
  if (!store) return;
  await store.finish();
  stats.timeMs.cacheWrite = store.writeMs;
  stats.cache = stats.weightsFromCache === load.jobs.length ? 'hit' : stats.weightsFromCache > 0 ? 'partial' : 'miss';
}

/** What the loaded weights add up to, and the lookup by label. */
function loaded(load: Load): LoadedWeights {
  let weightBytes = 0;
  let matrixBytes = 0;
  let weightCount = 0;
  const formats: Record<string, number> = {};
  const byLabel = new Map(load.jobs.map((j) => [j.label, j]));
  for (const j of load.jobs) {
    if (j.kind === 'matrix') {
      const w = j.weight!;
      weightBytes += w.bytes;
      matrixBytes += w.bytes;
      weightCount += w.rows * w.cols;
      formats[w.format] = (formats[w.format] ?? 0) + w.rows * w.cols;
    } else {
      weightBytes += j.buffer!.size;
    }
  }
  const get = (label: string, kind: Job['kind']): Job => {
    const j = byLabel.get(label);
    if (!j || j.kind !== kind) throw new NibbleError('bad-argument', `no ${kind} weight labelled "${label}" was loaded`);
    return j;
  };
  return {
    matrix: (label) => get(label, 'matrix').weight!,
    vector: (label) => get(label, 'vector').buffer!,
    owned: load.owned,
    weightBytes,
    matrixBytes,
    weightCount,
    formats,
    budget: load.budget,
    stats: load.stats,
  };
}

/**
 * Loads the weights `specs` declare (see the file's header). On any failure or abort every GPU
 * buffer made so far is destroyed and nothing is cached.
 */
export async function loadWeights(rt: Runtime, specs: readonly WeightSpec[], source: ModelSource, opts: WeightLoadOptions = {}): Promise<LoadedWeights> {
  const budget = new HostBudget(opts.hostMemoryBudget ?? DEFAULT_HOST_MEMORY_BUDGET);
  const ctl = new AbortController();
  const onOuterAbort = () => ctl.abort(opts.signal?.reason);
  if (opts.signal?.aborted) throw aborted(opts.signal);
  const jobs = makeJobs(specs);
  const tensorsTotal = jobs.reduce((a, j) => a + j.members.length, 0);
  const load: Load = {
    rt,
    source,
    opts,
    jobs,
    budget,
    // a chunk never exceeds the budget, so every read, cache read and read-back fits in it
    chunkBytes: Math.min(budget.limit, Math.max(1 << 16, opts.chunkBytes ?? DEFAULT_CHUNK_BYTES)),
    stats: newStats(budget),
    signal: ctl.signal,
    owned: [],
    tensorsDone: 0,
    failed: false,
    checkAbort: () => {
      if (opts.signal?.aborted) throw aborted(opts.signal);
    },
    progress: (phase, bytesDone, bytesTotal, tensor) => {
      if (!load.failed) opts.onProgress?.({ phase, bytesDone, bytesTotal, tensorsDone: load.tensorsDone, tensorsTotal, tensor });
    },
  };
  opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
  // NaN / ±Inf in the checkpoint: counted by the GPU quantizers, read back before anything is cached
  const nonFinite = new NonFiniteCheck(rt);
  let store: WeightStore | null = null;
  try {
    await runLoad(load, nonFinite, (s) => (store = s));
  } catch (e) {
    load.failed = true;
    ctl.abort(e);
    await (store as WeightStore | null)?.abandon();
    dropBuilders(jobs);
    for (const b of load.owned) b.destroy();
    load.owned.length = 0;
    if (opts.signal?.aborted && !(e instanceof NibbleError && e.code === 'aborted')) throw aborted(opts.signal);
    throw e;
  } finally {
    nonFinite.end();
    opts.signal?.removeEventListener('abort', onOuterAbort);
  }
  load.stats.peakHostBytes = budget.meter.peak;
  const total = load.stats.bytesDownloaded + load.stats.bytesFromCache;
  load.progress('done', total, total);
  return loaded(load);
}
