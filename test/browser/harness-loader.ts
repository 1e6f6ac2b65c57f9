/**
 * Harness functions of the Hub-loader tests (test/browser/hub.test.ts), spread into the harness
 * page's API by harness.ts. Plain JSON in, plain JSON out: weight caches are named by kind + root
 * and built here.
 */
import { liveBuffers, startCounting, stopCounting } from './gpu-buffers.ts';
import { Engine, type LoadOptions } from '../../src/api/engine.ts';
import { CacheApiCache } from '../../src/cache/cache-api.ts';
import { deleteCachedModel, listCachedModels } from '../../src/cache/index.ts';
import { OpfsCache } from '../../src/cache/opfs.ts';
import type { WeightCache } from '../../src/cache/types.ts';
import type { LoadProgress } from '../../src/model/llama.ts';
import { createGpuContext, type GpuContext } from '../../src/gpu/context.ts';
import { getFormat } from '../../src/quant/format.ts';
import '../../src/quant/formats.ts';

export interface CacheSpec {
  kind: 'opfs' | 'cache-api';
  root: string;
}

function store(c: CacheSpec): WeightCache {
  return c.kind === 'opfs' ? new OpfsCache(c.root) : new CacheApiCache(c.root);
}

// One device for every load of these tests: the browser then reuses compiled pipelines across
// loads, which on the software adapter saves seconds per load.
let shared: Promise<GpuContext> | null = null;


interface PhaseSummary {
  phase: LoadProgress['phase'];
  events: number;
  first: LoadProgress;
  last: LoadProgress;
  /** bytesDone never decreased within the phase. */
  monotonic: boolean;
}

export const loaderApi = {
  /** Whether a weight format is registered (tests pick the cache test's format). */
  async hasFormat(a: { format: string }) {
    return !!getFormat(a.format);
  },

  /**
   * Engine.load with JSON options and a named cache (or none); then logits of `logitsFor` (last
   * position) and greedy generations. Errors come back as { error: { code, message } }.
   */
  async hubLoad(a: {
    model: string;
    load?: LoadOptions;
    cache?: CacheSpec | false;
    logitsFor?: number[];
    generate?: Array<{ prompt: string; maxNewTokens: number }>;
    /** Abort the load once this many weight bytes were delivered. */
    abortAt?: number;
  }) {
    const ctl = new AbortController();
    const phases: PhaseSummary[] = [];
    const onProgress = (p: LoadProgress) => {
      const cur = phases[phases.length - 1];
      if (cur && cur.phase === p.phase) {
        if (p.bytesDone < cur.last.bytesDone) cur.monotonic = false;
        cur.last = { ...p };
        cur.events++;
      } else phases.push({ phase: p.phase, events: 1, first: { ...p }, last: { ...p }, monotonic: true });
      if (a.abortAt !== undefined && p.phase === 'weights' && p.bytesDone >= a.abortAt) ctl.abort(new Error('test abort'));
    };
    const device = (await (shared ??= createGpuContext())).device;
    startCounting();
    const t0 = performance.now();
    let engine: Engine;
    try {
      engine = await Engine.load(a.model, {
        device,
        ...a.load,
        cache: a.cache ? store(a.cache) : false,
        onProgress,
        signal: ctl.signal,
      });
    } catch (e) {
      stopCounting();
      return {
        error: { code: (e as { code?: string }).code ?? null, message: String((e as Error)?.message ?? e) } as { code: string | null; message: string },
        phases,
        liveBuffers: liveBuffers().labels,
        createdBuffers: liveBuffers().created,
      };
    }
    stopCounting();
    const loadMs = performance.now() - t0;
    try {
      const t1 = performance.now();
      const logits = a.logitsFor ? Array.from((await engine.logits(a.logitsFor, 1))[0]!) : null;
      const logitsMs = performance.now() - t1;
      const generated = [];
      for (const g of a.generate ?? []) {
        const r = await engine.generate(g.prompt, { maxNewTokens: g.maxNewTokens, ignoreEos: true }).result;
        generated.push({ promptIds: r.promptTokenIds, tokenIds: r.tokenIds, text: r.text });
      }
      const i = engine.info;
      return {
        error: null,
        loadMs,
        logitsMs,
        info: { load: i.load, loaderPeakHostBytes: i.loaderPeakHostBytes, formats: i.formats, weightBytes: i.weightBytes, quantKey: i.quantKey },
        logits,
        generated,
        phases,
      };
    } finally {
      engine.dispose();
    }
  },

  /** Operations on a named weight cache: list models, delete one, clear, list files, corrupt a file. */
  async cacheOp(a: CacheSpec & { op: 'list' | 'delete' | 'clear' | 'files' | 'corrupt'; key?: string; match?: string }) {
    const s = store(a);
    switch (a.op) {
      case 'list':
        return listCachedModels(s);
      case 'delete':
        return deleteCachedModel(a.key!, s);
      case 'clear':
        await s.delete('');
        return true;
      case 'files':
        return s.list('');
      case 'corrupt': {
        const f = (await s.list('')).find((x) => x.path.endsWith('.bin') && x.path.includes(a.match ?? ''));
        if (!f) return null;
        const bytes = (await s.read(f.path, 0, f.size))!;
        bytes[Math.floor(bytes.length / 2)] ^= 0x5a;
        await s.write(f.path, (async function* () {
          yield bytes;
        })());
        return f.path;
      }
    }
  },
};
