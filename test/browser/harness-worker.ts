/**
 * Harness page of the worker-engine tests (test/browser/worker.test.ts). Unlike harness.ts it
 * imports nothing of the engine: only WorkerEngine (src/worker.ts), so every kernel, parser and
 * GPU call has to happen in the worker. The test spies on the page's navigator.gpu before this
 * module runs. Plain JSON in, plain JSON out.
 */
import { WorkerEngine, NibbleError, type GenerateOptions, type WorkerLoadOptions, type ChatCompletionRequest } from '../../src/worker.ts';

type WorkerApi = typeof import('../../src/worker.ts');
type ErrorData = { code: string | null; name: string; message: string; isNibbleError: boolean };

function errorData(e: unknown, api: { NibbleError: typeof NibbleError } = { NibbleError }): ErrorData {
  return {
    code: (e as { code?: string }).code ?? null,
    name: String((e as Error)?.name ?? typeof e),
    message: String((e as Error)?.message ?? e),
    isNibbleError: e instanceof api.NibbleError,
  };
}

async function settle<T>(p: Promise<T>): Promise<{ value: T | null; error: ErrorData | null }> {
  try {
    return { value: await p, error: null };
  } catch (e) {
    return { value: null, error: errorData(e) };
  }
}

const engines = new Map<string, WorkerEngine>();
function engine(key: string): WorkerEngine {
  const e = engines.get(key);
  if (!e) throw new Error(`no engine "${key}"`);
  return e;
}

/** One streamed generation: its pieces and result. */
async function run(e: WorkerEngine, prompt: string, opts: GenerateOptions) {
  const pieces: string[] = [];
  const gen = e.generate(prompt, opts);
  for await (const t of gen) pieces.push(t);
  const r = await gen.result;
  return { pieces, tokenIds: r.tokenIds, promptTokenIds: r.promptTokenIds, text: r.text, finishReason: r.finishReason, timings: r.timings };
}

const api = {
  /**
   * Loads a model in a worker under `key` (from the built package's dist/worker.js with `bundle`),
   * reporting load progress events seen on the page.
   */
  async load(a: { key: string; model: string; load?: WorkerLoadOptions; bundle?: boolean }) {
    const lib: WorkerApi = a.bundle ? await import(/* @vite-ignore */ `${location.origin}/dist/worker.js`) : { WorkerEngine, NibbleError } as WorkerApi;
    const progress: Array<{ phase: string; bytesDone: number; bytesTotal: number; tensorsDone: number; tensorsTotal: number }> = [];
    const e = await lib.WorkerEngine.load(a.model, {
      ...a.load,
      onProgress: (p) => progress.push({ phase: p.phase, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, tensorsDone: p.tensorsDone, tensorsTotal: p.tensorsTotal }),
    });
    engines.set(a.key, e);
    return { info: e.info, progress, isWorkerEngine: e instanceof lib.WorkerEngine, workerIsWorker: e.worker instanceof Worker };
  },

  /** Greedy runs of each prompt, streamed. */
  async generate(a: { key: string; prompts: string[]; opts?: GenerateOptions }) {
    const out = [];
    for (const p of a.prompts) out.push(await run(engine(a.key), p, a.opts ?? {}));
    return out;
  },

  /**
   * A long generation whose AbortSignal fires after `afterPieces` streamed pieces, then a plain
   * run of `next` on the same engine.
   */
  async abortMidStream(a: { key: string; prompt: string; afterPieces: number; next: { prompt: string; opts: GenerateOptions } }) {
    const e = engine(a.key);
    const ctl = new AbortController();
    const gen = e.generate(a.prompt, { maxNewTokens: 400, ignoreEos: true, signal: ctl.signal });
    let pieces = 0;
    let iterError: ErrorData | null = null;
    try {
      for await (const _ of gen) if (++pieces === a.afterPieces) ctl.abort();
    } catch (err) {
      iterError = errorData(err);
    }
    const r = await settle(gen.result);
    // a signal that is already aborted: nothing (or next to nothing) is generated
    const pre = await settle(e.generate(a.prompt, { maxNewTokens: 400, ignoreEos: true, signal: AbortSignal.abort() }).result);
    const after = await run(e, a.next.prompt, a.next.opts);
    return {
      pieces,
      iterError,
      error: r.error,
      finishReason: r.value?.finishReason ?? null,
      tokens: r.value?.tokenIds.length ?? null,
      preFinish: pre.value?.finishReason ?? null,
      preError: pre.error,
      preTokens: pre.value?.tokenIds.length ?? null,
      after,
    };
  },

  /** A load expected to fail (optionally aborted at once, or in a worker at `worker`); its error. */
  async loadError(a: { model: string; load?: WorkerLoadOptions; abort?: boolean }) {
    const res = await settle(WorkerEngine.load(a.model, { ...a.load, ...(a.abort ? { signal: AbortSignal.abort() } : {}) }));
    if (res.value) await res.value.dispose();
    return res.error;
  },

  /** A generate call expected to fail in the worker's argument checks (the error crosses back). */
  async generateError(a: { key: string; prompt: unknown; opts: unknown }) {
    const gen = engine(a.key).generate(a.prompt as string, a.opts as GenerateOptions);
    let iterError: ErrorData | null = null;
    try {
      for await (const _ of gen);
    } catch (e) {
      iterError = errorData(e);
    }
    return { result: (await settle(gen.result)).error, iterError };
  },

  /** chat.completions.create, streamed (chunks collected) or not; or its error. */
  async chat(a: { key: string; req: ChatCompletionRequest; abortAfterChunks?: number }) {
    const e = engine(a.key);
    const ctl = new AbortController();
    try {
      if (!a.req.stream) return { response: await e.chat.completions.create({ ...a.req, stream: false }), chunks: null, error: null };
      const chunks: unknown[] = [];
      let iterError: ErrorData | null = null;
      const stream = await e.chat.completions.create({ ...a.req, stream: true, signal: ctl.signal });
      try {
        for await (const c of stream) {
          chunks.push(c);
          if (chunks.length === a.abortAfterChunks) ctl.abort();
        }
      } catch (err) {
        iterError = errorData(err);
      }
      return { response: null, chunks, error: iterError };
    } catch (err) {
      return { response: null, chunks: null, error: errorData(err) };
    }
  },

  /** encode / decode / perplexity through the worker. */
  async tokens(a: { key: string; text: string; pplText: string }) {
    const e = engine(a.key);
    const ids = await e.encode(a.text);
    // optimized: the worker's Engine.optimized (a tiny model registers no upgrade: resolved at once)
    const optimized = await Promise.race([e.optimized.then(() => 'resolved'), new Promise((r) => setTimeout(() => r('pending'), 10_000))]);
    return { ids, text: await e.decode(ids), perplexity: await e.perplexity(await e.encode(a.pplText)), optimized };
  },

  /** Disposes `key`; what a call afterwards gets. */
  async dispose(a: { key: string }) {
    const e = engine(a.key);
    engines.delete(a.key);
    const running = e.generate('Once upon a time', { maxNewTokens: 400, ignoreEos: true });
    let pieces = 0;
    let disposed: Promise<void> | null = null;
    let iterError: ErrorData | null = null;
    try {
      for await (const _ of running) if (++pieces === 2) disposed = e.dispose();
    } catch (err) {
      iterError = errorData(err);
    }
    await disposed;
    await e.dispose(); // idempotent
    const later = await settle(e.generate('Hi', { maxNewTokens: 2 }).result);
    return { pieces, iterError, running: (await settle(running.result)).error, later: later.error };
  },

  /** Two engines on one Worker the page made itself (not terminated by dispose). */
  async sharedWorker(a: { model: string; prompt: string; maxNewTokens: number }) {
    const worker = new Worker(new URL('../../src/worker/worker.ts', import.meta.url), { type: 'module' });
    try {
      const [x, y] = await Promise.all([WorkerEngine.load(a.model, { worker }), WorkerEngine.load(a.model, { worker, quant: 'int8' })]);
      const opts = { maxNewTokens: a.maxNewTokens, ignoreEos: true };
      const [rx, ry] = await Promise.all([x.generate(a.prompt, opts).result, y.generate(a.prompt, opts).result]);
      await x.dispose();
      // the worker lives on: y still works, and a third engine loads in it
      const ry2 = await y.generate(a.prompt, opts).result;
      const z = await WorkerEngine.load(a.model, { worker: worker });
      const rz = await z.generate(a.prompt, opts).result;
      await Promise.all([y.dispose(), z.dispose()]);
      return { x: rx.tokenIds, y: ry.tokenIds, y2: ry2.tokenIds, z: rz.tokenIds, yQuant: y.info.quantKey };
    } finally {
      worker.terminate();
    }
  },

  /** What the page itself did: GPU calls seen by the spy, and the URLs it fetched. */
  async pageActivity() {
    const w = globalThis as unknown as { __gpuCalls?: string[] };
    return {
      gpuCalls: [...(w.__gpuCalls ?? [])],
      spyInstalled: Array.isArray(w.__gpuCalls),
      resources: (performance.getEntriesByType('resource') as PerformanceResourceTiming[]).map((r) => ({ path: new URL(r.name).pathname, initiator: r.initiatorType })),
    };
  },

  /** Calls navigator.gpu.requestAdapter on the page (checks that the spy sees it). */
  async probeSpy() {
    await navigator.gpu?.requestAdapter();
    return [...((globalThis as unknown as { __gpuCalls?: string[] }).__gpuCalls ?? [])];
  },
};

export type WorkerHarnessApi = typeof api;
(globalThis as unknown as { nibbleWorkerTest: WorkerHarnessApi }).nibbleWorkerTest = api;
document.getElementById('status')!.textContent = 'ready';
