/**
 * Loads every GPU weight of a Llama-family model: from the weight cache where an intact entry
 * exists (no download, no quantization), otherwise by streaming the checkpoint through the
 * scheduler (stream.ts) into the weight formats' builders — and then storing what was built in the
 * cache. LlamaModel.load calls this and wires the result into the graph.
 *
 * Phases are reported through onProgress (LoadProgress lists them): metadata (one HEAD per weight
 * file on the Hub, cache lookup), cache, weights (streamed, sha256 of LFS files verified, built),
 * quantize, and this loader's own 'done' (Engine.load adds 'compile' and its final 'done').
 * On any failure or abort every GPU buffer made so far is destroyed and nothing is cached.
 */
import { NibbleError } from '../errors.ts';
import type { Runtime } from '../kernels/runtime.ts';
import { tensorNames, type LlamaConfig } from '../model/config.ts';
import { getFormat, type GpuWeight, type WeightBuilder } from '../quant/format.ts';
import { formatFor, formatForFused, type QuantPlan } from '../quant/plan.ts';
import type { FileMetadata, ModelSource } from '../source/types.ts';
import { resolveCache } from '../cache/index.ts';
import { entryKey, ModelCacheHandle, shortHash, VECTOR_FORMAT, type EntryManifest } from '../cache/model-cache.ts';
import type { WeightCache } from '../cache/types.ts';
import { createFromEntry, describeBuffers, readable, readBack, readBackAll } from '../cache/gpu.ts';
import { NonFiniteCheck, type NonFiniteReport } from '../quant/gpu-builder.ts';
import { HostBudget } from './memory.ts';
import { scanNonFinite } from './nonfinite.ts';
import { toF32, type TensorInfo } from './safetensors.ts';
import { DEFAULT_CHUNK_BYTES, DEFAULT_PARALLEL_READS, streamTensors, type StreamTarget } from './stream.ts';

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

export interface LayerWeightSet {
  inputNorm: GPUBuffer;
  postNorm: GPUBuffer;
  qkv: GpuWeight;
  qkvBias: GPUBuffer | null;
  o: GpuWeight;
  oBias: GPUBuffer | null;
  gateUp: GpuWeight;
  down: GpuWeight;
}

export interface LoadedWeights {
  embed: GpuWeight;
  head: GpuWeight;
  finalNorm: GPUBuffer;
  layers: LayerWeightSet[];
  /** Every GPU buffer made (the caller owns them now). */
  owned: GPUBuffer[];
  weightBytes: number;
  matrixBytes: number;
  weightCount: number;
  formats: Record<string, number>;
  budget: HostBudget;
  stats: LoadStats;
}

/** A weight being loaded: its spec and the load's state. */
interface Job extends WeightSpec {
  /** Cache entry key (when a cache is open). */
  key?: string;
  rowsLeft: number;
  builder?: WeightBuilder;
  vec?: Float32Array;
  weight?: GpuWeight;
  buffer?: GPUBuffer;
  fromCache?: boolean;
  /** Weight rows (matrix) or elements (vector) where each member tensor starts. */
  bases?: number[];
}

/** The bad-tensor error of a weight whose checkpoint values hold NaN or ±Inf. */
function nonFiniteError(tensor: string, count: number, where: string): NibbleError {
  return new NibbleError(
    'bad-tensor',
    `tensor "${tensor}" holds ${count === 1 ? 'a non-finite value' : `${count} non-finite values`} (NaN or ±Inf), the first ${where}: the checkpoint is corrupt`,
  );
}

/** The member tensor holding weight row `row` of a (possibly fused) matrix job. */
function memberAt(j: Job, row: number): { name: string; row: number } {
  const bases = j.bases ?? [0];
  let i = bases.length - 1;
  while (i > 0 && bases[i]! > row) i--;
  return { name: j.members[i]!.name, row: row - bases[i]! };
}

function gpuNonFiniteError(j: Job, r: NonFiniteReport): NibbleError {
  const m = memberAt(j, r.firstRow);
  const fused = j.members.length > 1 ? ` of ${j.label}` : '';
  return nonFiniteError(m.name, r.count, `in row ${m.row}${fused ? ` (${r.count} in all${fused})` : ''}`);
}

function fingerprint(m: FileMetadata | undefined): string | null {
  if (!m) return null;
  if (m.sha256) return `sha256:${m.sha256}`;
  if (m.etag) return `etag:${m.etag}:${m.size}`;
  if (m.lastModified !== undefined) return `mtime:${m.size}:${m.lastModified}`;
  return null;
}

function aborted(signal: AbortSignal | undefined): NibbleError {
  return new NibbleError('aborted', 'model load aborted', { cause: signal?.reason });
}

/** One GPU weight the graph needs: a 2-D weight (possibly fused from several tensors) or an f32 vector. */
export interface WeightSpec {
  label: string;
  kind: 'matrix' | 'vector';
  members: TensorInfo[];
  /** The weight format (matrices), or VECTOR_FORMAT. */
  format: string;
  /** Matrices: rows × cols; vectors: 1 × elements. */
  rows: number;
  cols: number;
}

export interface WeightSpecs {
  embed: WeightSpec;
  /** The embedding itself when the model ties them. */
  head: WeightSpec;
  finalNorm: WeightSpec;
  layers: Array<{
    inputNorm: WeightSpec;
    qkv: WeightSpec;
    qkvBias: WeightSpec | null;
    o: WeightSpec;
    oBias: WeightSpec | null;
    postNorm: WeightSpec;
    gateUp: WeightSpec;
    down: WeightSpec;
  }>;
  /** Every distinct weight, in load order. */
  all: WeightSpec[];
}

/**
 * The GPU weights of a Llama-family checkpoint under a plan: which tensors fill each one (q/k/v
 * and gate/up fused), its format and shape. loadWeights builds exactly these; the memory preflight
 * (src/api/preflight.ts) sizes them with the formats' layouts before anything is downloaded.
 */
export function describeWeights(cfg: LlamaConfig, tensors: Map<string, TensorInfo>, plan: QuantPlan): WeightSpecs {
  const names = tensorNames(cfg);
  const info = (name: string): TensorInfo => {
    const t = tensors.get(name);
    if (!t) throw new NibbleError('missing-tensor', `tensor "${name}" is missing from the checkpoint`);
    return t;
  };
  const all: WeightSpec[] = [];
  const matrix = (members: string[], format: string, label: string): WeightSpec => {
    const ts = members.map(info);
    const f = getFormat(format);
    if (!f) throw new NibbleError('bad-argument', `unknown weight format "${format}"`);
    const cols = ts[0]!.shape[1]!;
    const rows = ts.reduce((a, t) => a + t.shape[0]!, 0);
    const w: WeightSpec = { label, kind: 'matrix', members: ts, format, rows, cols };
    all.push(w);
    return w;
  };
  const vector = (members: string[], label: string): WeightSpec => {
    const ts = members.map(info);
    const n = ts.reduce((a, t) => a + t.shape.reduce((x, d) => x * d, 1), 0);
    const w: WeightSpec = { label, kind: 'vector', members: ts, format: VECTOR_FORMAT, rows: 1, cols: n };
    all.push(w);
    return w;
  };
  const embed = matrix([names.embed], formatFor(plan, names.embed), names.embed);
  const layers = names.layers.map((L, i) => {
    const qkvNames = [L.q, L.k, L.v];
    const guNames = [L.gate, L.up];
    return {
      inputNorm: vector([L.inputNorm], L.inputNorm),
      qkv: matrix(qkvNames, formatForFused(plan, qkvNames), `layer${i}.qkv`),
      qkvBias: L.qBias && L.kBias && L.vBias ? vector([L.qBias, L.kBias, L.vBias], `layer${i}.qkv_bias`) : null,
      o: matrix([L.o], formatFor(plan, L.o), `layer${i}.o`),
      oBias: L.oBias ? vector([L.oBias], L.oBias) : null,
      postNorm: vector([L.postNorm], L.postNorm),
      gateUp: matrix(guNames, formatForFused(plan, guNames), `layer${i}.gate_up`),
      down: matrix([L.down], formatFor(plan, L.down), `layer${i}.down`),
    };
  });
  const finalNorm = vector([names.finalNorm], names.finalNorm);
  const head = names.lmHead ? matrix([names.lmHead], formatFor(plan, names.lmHead), names.lmHead) : embed;
  return { embed, head, finalNorm, layers, all };
}

export async function loadWeights(
  rt: Runtime,
  cfg: LlamaConfig,
  source: ModelSource,
  tensors: Map<string, TensorInfo>,
  plan: QuantPlan,
  opts: WeightLoadOptions = {},
): Promise<LoadedWeights> {
  const budget = new HostBudget(opts.hostMemoryBudget ?? DEFAULT_HOST_MEMORY_BUDGET);
  // A chunk never exceeds the budget, so every read, cache read and read-back fits in it.
  const chunkBytes = Math.min(budget.limit, Math.max(1 << 16, opts.chunkBytes ?? DEFAULT_CHUNK_BYTES));
  const stats: LoadStats = {
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
  // Our own controller: aborted by the caller's signal and by any failure, so that background
  // cache writes stop too.
  const ctl = new AbortController();
  const onOuterAbort = () => ctl.abort(opts.signal?.reason);
  if (opts.signal?.aborted) throw aborted(opts.signal);
  opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const signal = ctl.signal;
  const checkAbort = () => {
    if (opts.signal?.aborted) throw aborted(opts.signal);
  };

  // ---- the GPU weights the graph needs ----------------------------------------------------------
  const spec = describeWeights(cfg, tensors, plan);
  const jobs: Job[] = spec.all.map((w) => ({ ...w, rowsLeft: w.kind === 'matrix' ? w.rows : w.members.length }));
  const jobOf = new Map(spec.all.map((w, i) => [w, jobs[i]!]));
  const job = (w: WeightSpec): Job => jobOf.get(w)!;
  const embedJob = job(spec.embed);
  const layerJobs = spec.layers.map((L) => ({
    inputNorm: job(L.inputNorm),
    qkv: job(L.qkv),
    qkvBias: L.qkvBias ? job(L.qkvBias) : null,
    o: job(L.o),
    oBias: L.oBias ? job(L.oBias) : null,
    postNorm: job(L.postNorm),
    gateUp: job(L.gateUp),
    down: job(L.down),
  }));
  const finalNormJob = job(spec.finalNorm);
  const headJob = job(spec.head);

  const allTensors = jobs.flatMap((j) => j.members);
  const tensorsTotal = allTensors.length;
  let tensorsDone = 0;
  let failed = false;
  const progress = (phase: LoadProgress['phase'], bytesDone: number, bytesTotal: number, tensor?: string) => {
    if (!failed) opts.onProgress?.({ phase, bytesDone, bytesTotal, tensorsDone, tensorsTotal, tensor });
  };
  // 'quantize': a marker after each built weight's GPU work (queue order), so the phase reports
  // what the GPU finished, not what was queued
  let quantDone = 0;
  let quantTotal = 0;
  const quantMarkers: Array<Promise<void>> = [];
  const tensorBytes = (j: Job) => j.members.reduce((a, t) => a + (t.end - t.start), 0);
  const built = (j: Job) => {
    const n = tensorBytes(j);
    quantMarkers.push(
      rt.device.queue.onSubmittedWorkDone().then(
        () => {
          quantDone += n;
          progress('quantize', quantDone, quantTotal, j.label);
        },
        () => {},
      ),
    );
  };

  const owned: GPUBuffer[] = [];
  // NaN / ±Inf in the checkpoint: counted by the GPU quantizers, read back before anything is cached
  const nonFinite = new NonFiniteCheck(rt);
  let handle: ModelCacheHandle | null = null;
  let staging: Promise<void> = Promise.resolve();
  let cacheFailed = false;

  try {
    // ---- metadata --------------------------------------------------------------------------------
    let t0 = performance.now();
    progress('metadata', 0, 0);
    const files = [...new Set(allTensors.map((t) => t.file))];
    const meta = new Map<string, FileMetadata>();
    if (source.metadata) {
      const ms = await Promise.all(files.map((f) => source.metadata!(f, signal)));
      files.forEach((f, i) => meta.set(f, ms[i]!));
    }
    checkAbort();
    const sha256 = new Map<string, string>();
    const sizes = new Map<string, number>();
    if (opts.verify !== false) {
      for (const [f, m] of meta) {
        if (m.sha256) {
          sha256.set(f, m.sha256);
          sizes.set(f, m.size);
        }
      }
    }
    for (const t of allTensors) {
      const m = meta.get(t.file);
      if (m && t.end > m.size) {
        throw new NibbleError('bad-safetensors', `${t.file}: tensor "${t.name}" ends at byte ${t.end} but the file has ${m.size} bytes`);
      }
    }

    const store = resolveCache(opts.cache, source.cacheId?.startsWith('hub:') ?? false);
    const fps: Record<string, string> = {};
    let fpOk = files.length > 0;
    for (const f of files) {
      const fp = fingerprint(meta.get(f));
      if (fp) fps[f] = fp;
      else fpOk = false;
    }
    if (store && source.cacheId && fpOk) {
      try {
        handle = await ModelCacheHandle.open(store, source.cacheId, source.description, fps);
        stats.cacheStore = store.description;
        stats.cacheKey = handle.key;
        stats.cache = 'miss';
      } catch (e) {
        stats.cacheError = `opening the cache failed: ${(e as Error)?.message ?? String(e)}`;
        handle = null;
      }
    } else if (store) {
      stats.cache = 'unavailable';
    }
    if (handle) {
      for (const j of jobs) {
        const f = getFormat(j.format);
        // What the cached bytes depend on besides the checkpoint: the format's code (its layout and
        // its quantizer's output show there).
        const code = j.kind === 'matrix' && f ? shortHash(f.cacheKey) : 'f32';
        const identity = {
          format: j.format,
          code,
          members: j.members.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, file: fps[t.file] })),
        };
        j.key = entryKey(j.label, j.format, identity);
      }
    }
    stats.timeMs.metadata = performance.now() - t0;

    // ---- cache hits ------------------------------------------------------------------------------
    t0 = performance.now();
    if (handle) {
      const found: Array<[Job, EntryManifest]> = [];
      for (const j of jobs) {
        const m = await handle.lookup(j.key!);
        const fits =
          m &&
          m.kind === j.kind &&
          (j.kind === 'vector' ? m.buffers.length === 1 && m.buffers[0]!.size >= j.cols * 4 : m.format === j.format && m.rows === j.rows && m.cols === j.cols);
        if (fits) found.push([j, m!]);
      }
      const total = found.reduce((a, [, m]) => a + m.dataBytes, 0);
      let done = 0;
      if (found.length > 0) progress('cache', 0, total);
      for (const [j, m] of found) {
        checkAbort();
        const made = createFromEntry(rt, m.buffers);
        let ok: boolean;
        try {
          ok = await handle.readEntry(m, chunkBytes, budget, (off, bytes) => made.write(off, bytes), signal);
        } catch (e) {
          for (const b of made.buffers) b.destroy();
          if (opts.signal?.aborted) throw aborted(opts.signal);
          stats.cacheError = `reading the cache failed: ${(e as Error)?.message ?? String(e)}`;
          continue; // an unreadable store: build this weight from the checkpoint
        }
        if (!ok) {
          for (const b of made.buffers) b.destroy();
          continue; // damaged entry (now deleted): rebuilt from the checkpoint below
        }
        owned.push(...made.buffers);
        j.fromCache = true;
        if (j.kind === 'matrix') {
          j.weight = { format: m.format!, rows: m.rows!, cols: m.cols!, buffers: made.buffers, bytes: m.bytes, constants: m.constants ?? {} };
        } else {
          j.buffer = made.buffers[0]!;
        }
        stats.weightsFromCache++;
        stats.bytesFromCache += m.dataBytes;
        done += m.dataBytes;
        tensorsDone += j.members.length;
        progress('cache', done, total, j.label);
      }
    }
    stats.timeMs.cache = performance.now() - t0;

    // ---- download + build the rest ---------------------------------------------------------------
    t0 = performance.now();
    let cacheWriteMs = 0;
    // Cache writes run beside the download: finished weights queue up here; the writer reads back
    // as many small ones as fit in one chunk with a single copy pass + mapAsync (a round trip per
    // weight would dominate), and big ones in chunks. Entries are staged; commit() comes at the end.
    const queue: Array<{ j: Job; buffers: GPUBuffer[] }> = [];
    let writerBusy = false;
    const manifestOf = (j: Job, buffers: GPUBuffer[]) => {
      const base = { key: j.key!, kind: j.kind, label: j.label, buffers: describeBuffers(buffers), dataBytes: buffers.reduce((a, b) => a + b.size, 0) };
      return j.kind === 'matrix'
        ? { ...base, format: j.weight!.format, rows: j.weight!.rows, cols: j.weight!.cols, bytes: j.weight!.bytes, constants: j.weight!.constants }
        : { ...base, bytes: buffers[0]!.size };
    };
    const writeLoop = async (h: ModelCacheHandle) => {
      for (;;) {
        if (queue.length === 0 || cacheFailed || signal.aborted) {
          writerBusy = false; // in the same step as the check: a weight queued later starts a new loop
          return;
        }
        const s = performance.now();
        const size = (x: { buffers: GPUBuffer[] }) => x.buffers.reduce((a, b) => a + b.size, 0);
        const batch = [queue.shift()!];
        let total = size(batch[0]!);
        while (queue.length > 0 && total + size(queue[0]!) <= chunkBytes) total += size(batch[batch.length] = queue.shift()!);
        try {
          if (batch.length === 1 && total > chunkBytes) {
            const { j, buffers } = batch[0]!;
            await h.stage(manifestOf(j, buffers), readBack(rt, buffers, chunkBytes, budget, signal));
            stats.weightsCached++;
          } else {
            await budget.acquire(total, signal);
            try {
              const bytes = await readBackAll(rt, batch.flatMap((x) => x.buffers));
              let off = 0;
              for (const { j, buffers } of batch) {
                const n = size({ buffers });
                const part = bytes.subarray(off, off + n);
                off += n;
                await h.stage(manifestOf(j, buffers), (async function* () {
                  yield part;
                })());
                stats.weightsCached++;
              }
            } finally {
              budget.release(total);
            }
          }
        } catch (e) {
          if (!signal.aborted) {
            cacheFailed = true;
            stats.cacheError = `writing the cache failed: ${(e as Error)?.message ?? String(e)}`;
          }
          for (const { j } of batch) await h.dropData(j.key!);
        } finally {
          cacheWriteMs += performance.now() - s;
        }
      }
    };
    const stage = (j: Job, buffers: GPUBuffer[]) => {
      if (!handle || cacheFailed || !j.key || !readable(buffers)) return;
      queue.push({ j, buffers });
      if (writerBusy) return;
      writerBusy = true;
      const h = handle;
      staging = staging.then(() => writeLoop(h));
    };

    const targets: StreamTarget[] = [];
    quantTotal = jobs.reduce((a, j) => a + (j.kind === 'matrix' && !j.fromCache ? tensorBytes(j) : 0), 0);
    for (const j of jobs) {
      if (j.fromCache) continue;
      let base = 0;
      j.bases = [];
      for (const t of j.members) {
        const memberBase = base;
        j.bases.push(memberBase);
        const rowsOf = t.shape.length >= 2 ? t.shape[0]! : 1;
        let left = rowsOf;
        const elems = t.shape.reduce((x, d) => x * d, 1);
        base += j.kind === 'matrix' ? rowsOf : elems;
        targets.push({
          tensor: t,
          write: (row0, bytes) => {
            if (j.kind === 'matrix') {
              if (!j.builder) {
                j.builder = getFormat(j.format)!.create(rt, j.rows, j.cols, j.label);
                if (j.builder.nonFinite) nonFinite.add(j.label, j.builder.nonFinite);
                stats.weightsBuilt++;
              }
              if (!j.builder.nonFinite) {
                const nf = scanNonFinite(bytes, t.dtype);
                if (nf.count > 0) throw nonFiniteError(t.name, nf.count, `in row ${row0 + Math.floor(nf.first / j.cols)}`);
              }
              j.builder.write(memberBase + row0, t.dtype, bytes);
            } else {
              const nf = scanNonFinite(bytes, t.dtype);
              if (nf.count > 0) throw nonFiniteError(t.name, nf.count, `at element ${nf.first}`);
              j.vec ??= new Float32Array(j.cols);
              j.vec.set(toF32(bytes, t.dtype), memberBase);
            }
            const rows = j.kind === 'matrix' ? bytes.length / ((t.end - t.start) / rowsOf) : 1;
            left -= rows;
            if (left > 0) return;
            tensorsDone++;
            j.rowsLeft -= j.kind === 'matrix' ? rowsOf : 1;
            if (j.rowsLeft > 0) return;
            if (j.kind === 'matrix') {
              const w = j.builder!.finish();
              j.builder = undefined;
              j.weight = w;
              owned.push(...w.buffers);
              built(j);
              stage(j, w.buffers);
            } else {
              const b = rt.upload(j.vec!, j.label);
              j.vec = undefined;
              j.buffer = b;
              owned.push(b);
              stats.weightsBuilt++;
              stage(j, [b]);
            }
          },
        });
      }
    }
    // Empty tensors carry no bytes: complete them now.
    for (const tg of targets) if (tg.tensor.end <= tg.tensor.start) tg.write(0, new Uint8Array(0));

    if (targets.length > 0) {
      const r = await streamTensors(source, targets, {
        budget,
        chunkBytes,
        parallel: opts.parallelReads ?? DEFAULT_PARALLEL_READS,
        signal,
        sha256,
        sizes,
        onProgress: (done, total) => progress('weights', done, total),
      });
      stats.requests = r.requests;
      stats.bytesDownloaded = r.bytesRead;
      stats.verifiedFiles = r.verified;
      stats.maxInFlight = r.maxInFlight;
    }
    checkAbort();
    for (const j of jobs) {
      if (j.kind === 'matrix' ? !j.weight : !j.buffer) {
        throw new NibbleError('missing-tensor', `weight ${j.label} did not receive all its bytes`);
      }
    }
    await Promise.all(quantMarkers);
    // the quantizers' non-finite counts (one readback for every weight built on the GPU)
    for (const r of await nonFinite.results()) {
      const j = jobs.find((x) => x.label === r.label && x.kind === 'matrix');
      if (j) throw gpuNonFiniteError(j, r);
      throw new NibbleError('bad-tensor', `weight ${r.label} holds ${r.count} non-finite values (NaN or ±Inf): the checkpoint is corrupt`);
    }
    stats.timeMs.weights = performance.now() - t0;

    // ---- commit the cache -------------------------------------------------------------------------
    await staging;
    checkAbort();
    if (handle && !cacheFailed) {
      try {
        if (stats.weightsCached > 0 || stats.weightsFromCache > 0) await handle.commit();
      } catch (e) {
        stats.cacheError = `writing the cache failed: ${(e as Error)?.message ?? String(e)}`;
        await handle.discard();
      }
    } else if (handle) {
      await handle.discard();
    }
    stats.timeMs.cacheWrite = cacheWriteMs;
    if (handle) stats.cache = stats.weightsFromCache === jobs.length ? 'hit' : stats.weightsFromCache > 0 ? 'partial' : 'miss';
  } catch (e) {
    failed = true;
    ctl.abort(e);
    await staging.catch(() => {});
    await handle?.discard().catch(() => {});
    for (const j of jobs) {
      if (j.builder) {
        try {
          for (const b of j.builder.finish().buffers) b.destroy();
        } catch {
          // a builder that cannot finish a partial weight: its buffers go with the device
        }
        j.builder = undefined;
      }
    }
    for (const b of owned) b.destroy();
    owned.length = 0;
    if (opts.signal?.aborted && !(e instanceof NibbleError && e.code === 'aborted')) throw aborted(opts.signal);
    throw e;
  } finally {
    nonFinite.end();
    opts.signal?.removeEventListener('abort', onOuterAbort);
  }

  stats.peakHostBytes = budget.meter.peak;
  let weightBytes = 0;
  let matrixBytes = 0;
  let weightCount = 0;
  const formats: Record<string, number> = {};
  for (const j of jobs) {
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
  progress('done', stats.bytesDownloaded + stats.bytesFromCache, stats.bytesDownloaded + stats.bytesFromCache);
  return {
    embed: embedJob.weight!,
    head: headJob.weight!,
    finalNorm: finalNormJob.buffer!,
    layers: layerJobs.map((L) => ({
      inputNorm: L.inputNorm.buffer!,
      postNorm: L.postNorm.buffer!,
      qkv: L.qkv.weight!,
      qkvBias: L.qkvBias?.buffer ?? null,
      o: L.o.weight!,
      oBias: L.oBias?.buffer ?? null,
      gateUp: L.gateUp.weight!,
      down: L.down.weight!,
    })),
    owned,
    weightBytes,
    matrixBytes,
    weightCount,
    formats,
    budget,
    stats,
  };
}
