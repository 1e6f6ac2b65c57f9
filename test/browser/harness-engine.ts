/**
 * Harness functions of the engine-lifecycle tests (test/browser/engine-api.test.ts), spread into
 * the harness page's API by harness.ts: live GPU buffer counts over load / generate / dispose
 * cycles, dispose() while a generation runs, concurrent generate calls, and bad arguments.
 * Plain JSON in, plain JSON out.
 */
import { liveBuffers, startCounting, stopCounting } from './gpu-buffers.ts';
import { Engine, type GenerateOptions, type LoadOptions } from '../../src/api/engine.ts';


function snapshot() {
  const { buffers, bytes, labels } = liveBuffers();
  return { buffers, bytes, labels };
}

type ErrorData = { code: string | null; message: string; name: string };
function errorData(e: unknown): ErrorData {
  return { code: (e as { code?: string }).code ?? null, message: String((e as Error)?.message ?? e), name: String((e as Error)?.name ?? typeof e) };
}

async function settle<T>(p: Promise<T>): Promise<{ value: T | null; error: ErrorData | null }> {
  try {
    return { value: await p, error: null };
  } catch (e) {
    return { value: null, error: errorData(e) };
  }
}

export const engineApi = {
  /**
   * `cycles` × (Engine.load with cycleLoads[i % n], `generates` generate calls, await dispose()),
   * counting live GPU buffers from before the first load. Returns the count after each cycle.
   */
  async leakCycles(a: { model: string; cycles: number; generates: number; loads: LoadOptions[]; gen?: GenerateOptions[] }) {
    startCounting();
    try {
      const base = snapshot();
      const after: Array<{ buffers: number; bytes: number; labels: string[] }> = [];
      let peak = 0;
      let tokens = 0;
      for (let c = 0; c < a.cycles; c++) {
        const engine = await Engine.load(a.model, a.loads[c % a.loads.length]);
        for (let g = 0; g < a.generates; g++) {
          const opts = a.gen?.[g % a.gen.length] ?? {};
          const r = await engine.generate('Once upon a time', { maxNewTokens: 4, ignoreEos: true, ...opts }).result;
          tokens += r.tokenIds.length;
        }
        peak = Math.max(peak, liveBuffers().buffers);
        await engine.dispose();
        after.push(snapshot());
      }
      return { base, after, peak, tokens };
    } finally {
      stopCounting();
    }
  },

  /**
   * Starts a long generation, disposes the engine once `afterPieces` pieces streamed (a second
   * call is queued behind it), and reports how each call ended, what a call after dispose() gets,
   * and the live buffers once dispose() resolved.
   */
  async disposeWhileGenerating(a: { model: string; afterPieces: number }) {
    startCounting();
    const unhandled: string[] = [];
    const onUnhandled = (ev: PromiseRejectionEvent) => unhandled.push(String(ev.reason?.message ?? ev.reason));
    globalThis.addEventListener('unhandledrejection', onUnhandled);
    try {
      const engine = await Engine.load(a.model);
      const running = engine.generate('Once upon a time', { maxNewTokens: 1000, ignoreEos: true });
      const queued = engine.generate('The dog', { maxNewTokens: 8 });
      let pieces = 0;
      let iterError: ErrorData | null = null;
      let disposed: Promise<void> | null = null;
      try {
        for await (const _ of running) {
          if (++pieces === a.afterPieces) disposed = engine.dispose();
        }
      } catch (e) {
        iterError = errorData(e);
      }
      const first = await settle(running.result);
      const second = await settle(queued.result);
      const later = await settle(engine.generate('Hi', { maxNewTokens: 2 }).result);
      const laterLogits = await settle(engine.logits([1, 2, 3]));
      await disposed;
      await new Promise((r) => setTimeout(r, 50));
      return {
        pieces,
        iterError,
        first: first.error,
        firstTokens: first.value?.tokenIds.length ?? null,
        second: second.error,
        later: later.error,
        laterLogits: laterLogits.error,
        liveAfter: snapshot(),
        unhandled,
      };
    } finally {
      stopCounting();
      globalThis.removeEventListener('unhandledrejection', onUnhandled);
    }
  },

  /**
   * Runs every request at once on one engine (all started before any is awaited); with
   * `abortAfter`, that request's signal fires after that many streamed pieces. Returns the results
   * (or errors) in request order, then one more plain generation run after all of them.
   */
  async concurrentRuns(a: {
    model: string;
    load?: LoadOptions;
    runs: Array<{ prompt?: string; opts?: GenerateOptions; abortAfter?: number }>;
    after?: { prompt: string; opts?: GenerateOptions };
  }) {
    const engine = await Engine.load(a.model, a.load);
    try {
      const jobs = a.runs.map(async (run) => {
        const ctl = new AbortController();
        const gen = engine.generate(run.prompt ?? '', { ...run.opts, signal: ctl.signal });
        const pieces: string[] = [];
        try {
          for await (const t of gen) {
            pieces.push(t);
            if (run.abortAfter !== undefined && pieces.length >= run.abortAfter) ctl.abort();
          }
          const r = await gen.result;
          return { text: r.text, tokenIds: r.tokenIds, finishReason: r.finishReason, pieces, error: null };
        } catch (e) {
          return { text: null, tokenIds: null, finishReason: null, pieces, error: errorData(e) };
        }
      });
      const results = await Promise.all(jobs);
      const after = a.after ? await settle(engine.generate(a.after.prompt, a.after.opts).result) : null;
      return { results, after: after && { tokenIds: after.value?.tokenIds ?? null, finishReason: after.value?.finishReason ?? null, error: after.error } };
    } finally {
      await engine.dispose();
    }
  },

  /** A load expected to fail: its error, and the GPU buffers it left alive (none, after a failure). */
  async failedLoad(a: { model: string; load?: LoadOptions }) {
    startCounting();
    try {
      const r = await settle(Engine.load(a.model, a.load));
      if (r.value) {
        const tokens = (await r.value.generate('Once', { maxNewTokens: 2 }).result).tokenIds;
        await r.value.dispose();
        return { error: null, tokens, live: snapshot().labels };
      }
      return { error: r.error, tokens: null, live: snapshot().labels };
    } finally {
      stopCounting();
    }
  },

  /** generate() with raw (possibly ill-typed) arguments; how each call ended. */
  async rawGenerate(a: { model: string; load?: LoadOptions; calls: Array<{ prompt: unknown; opts?: unknown; noOpts?: boolean }> }) {
    const engine = await Engine.load(a.model, a.load);
    try {
      const out = [];
      for (const c of a.calls) {
        const gen = (engine.generate as (p: unknown, o?: unknown) => ReturnType<Engine['generate']>)(c.prompt, c.noOpts ? undefined : c.opts);
        const r = await settle(gen.result);
        out.push({
          error: r.error,
          tokenIds: r.value?.tokenIds ?? null,
          promptTokens: r.value?.promptTokenIds.length ?? null,
          finishReason: r.value?.finishReason ?? null,
        });
      }
      // nothing of a small model is compiled after its load: optimized has resolved (within 5 s)
      const optimized = await Promise.race([engine.optimized.then(() => 'resolved'), new Promise((r) => setTimeout(() => r('pending'), 5000))]);
      return { out, contextLength: engine.info.contextLength, optimized };
    } finally {
      await engine.dispose();
    }
  },
};
