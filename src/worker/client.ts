/**
 * WorkerEngine: nibble's Engine API with the engine in a dedicated Web Worker. The page thread
 * only posts messages: fetching, tokenizer and safetensors parsing, quantization, the GPU device
 * and every kernel run in the worker (src/worker/host.ts), so the page stays responsive.
 *
 *   import { WorkerEngine } from 'nibble/worker';
 *   const engine = await WorkerEngine.load('HuggingFaceTB/SmolLM2-360M-Instruct', { quant: 'nf4', onProgress });
 *   for await (const text of engine.generate('Once upon a time')) out.textContent += text;
 *
 * This module imports nothing of the engine at run time (types only, NibbleError, and two small
 * helpers of src/util/model-input.ts), so a bundle of it holds no kernels, parsers or
 * tokenizer.
 */
import { NibbleError, show } from '../errors.ts';
import type { EngineInfo, GenerateOptions, GenerateResult, Generation } from '../api/engine.ts';
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Completion, CompletionChunk, CompletionRequest } from '../api/openai.ts';
import { fromWireError, type LoadProgress, type LoadReply, type Reply, type Request, type WireLoadOptions, type WireModel } from './protocol.ts';
import { isHubId, pickedFiles } from '../util/model-input.ts';

/** Engine.load's options that can cross to a worker, plus where the worker comes from. */
export interface WorkerLoadOptions extends WireLoadOptions {
  /** Called on the page with the worker's load progress (the same objects Engine.load reports). */
  onProgress?: (p: LoadProgress) => void;
  /** Aborts the load in the worker (the load then fails with an `aborted` NibbleError). */
  signal?: AbortSignal;
  /**
   * The worker to run in: a Worker running nibble's worker script (or a script that calls
   * exposeEngine()), which WorkerEngine then never terminates; or the URL of such a script, made
   * into a module worker. Default: nibble's own worker script, bundled beside this module
   * (`new Worker(new URL('./worker.js', import.meta.url), { type: 'module' })`).
   */
  worker?: Worker | URL | string;
}

/** A model: a Hub id or URL (a relative URL is resolved against the page), or picked files. */
export type WorkerModel = string | ArrayLike<File> | Map<string, Blob>;

type Hooks = { signal?: AbortSignal; onEvent?: (r: Reply) => void; engine?: number };
type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void; onEvent?: (r: Reply) => void; engine?: number; done: () => void };
type NewRequest = Request extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

let nextId = 1;

/** One Worker's message channel: request ids, their pending promises, streamed events, cancellation. */
class Connection {
  private static readonly all = new WeakMap<Worker, Connection>();
  readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private started = false;
  private failure: Error | null = null;

  /** The connection of a Worker (several WorkerEngines on one Worker share it). */
  static of(worker: Worker): Connection {
    let c = Connection.all.get(worker);
    if (!c) Connection.all.set(worker, (c = new Connection(worker)));
    return c;
  }

  private constructor(worker: Worker) {
    this.worker = worker;
    worker.addEventListener('message', (ev: MessageEvent) => this.receive(ev.data as Reply));
    worker.addEventListener('error', (ev: Event) => {
      // before `ready` an error event means the script did not load or threw while starting
      if (this.started) return;
      const msg = (ev as ErrorEvent).message;
      this.fail(new NibbleError('network', `the nibble worker did not start: ${msg || 'its script could not be loaded (check the worker URL and that it is served as JavaScript)'}`));
    });
    worker.addEventListener('messageerror', () => {
      this.fail(new NibbleError('aborted', 'a message from the nibble worker could not be read'));
    });
  }

  /** Ends every pending request (and later ones) with `e`. */
  fail(e: Error, engine?: number): void {
    if (engine === undefined) this.failure = e;
    for (const [id, p] of this.pending) {
      if (engine !== undefined && p.engine !== engine) continue;
      this.pending.delete(id);
      p.done();
      p.reject(e);
    }
  }

  request<T>(msg: NewRequest, hooks: Hooks = {}): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const id = nextId++;
    const { signal } = hooks;
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => this.post({ kind: 'cancel', id: nextId++, target: id, reason: abortReason(signal) });
      const p: Pending = {
        resolve: resolve as (v: unknown) => void,
        reject,
        onEvent: hooks.onEvent,
        engine: hooks.engine,
        done: () => signal?.removeEventListener('abort', onAbort),
      };
      try {
        this.worker.postMessage({ ...msg, id });
      } catch (e) {
        reject(new NibbleError('bad-argument', `the ${msg.kind} request could not be sent to the worker (${(e as Error).message}): options must be plain data`, { cause: e }));
        return;
      }
      this.pending.set(id, p);
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private post(msg: Request): void {
    try {
      this.worker.postMessage(msg);
    } catch {
      // a terminated worker: nothing to cancel
    }
  }

  private receive(r: Reply): void {
    if (!r || typeof r !== 'object') return;
    if (r.kind === 'ready') {
      this.started = true;
      return;
    }
    this.started = true;
    const p = this.pending.get(r.id);
    if (!p) return; // another client's request on a shared worker, or one already ended
    if (r.kind === 'result' || r.kind === 'error') {
      this.pending.delete(r.id);
      p.done();
      if (r.kind === 'result') p.resolve(r.value);
      else p.reject(fromWireError(r.error));
      return;
    }
    try {
      p.onEvent?.(r);
    } catch (e) {
      // a throwing callback (onProgress) ends its request, as it would in Engine.load
      this.pending.delete(r.id);
      p.done();
      this.post({ kind: 'cancel', id: nextId++, target: r.id, reason: 'a callback threw' });
      p.reject(e);
    }
  }
}

function abortReason(signal: AbortSignal | undefined): string | undefined {
  const r = signal?.reason as unknown;
  if (r === undefined) return undefined;
  return r instanceof Error ? r.message : String(r);
}

/** An async queue of streamed pieces, iterated once (like Engine.generate's Generation). */
class Channel<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private done = false;
  private failure: unknown = null;
  private wake: (() => void) | null = null;

  push(x: T): void {
    this.items.push(x);
    this.notify();
  }

  end(failure: unknown = null): void {
    this.done = true;
    this.failure = failure;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.items.length) {
        yield this.items.shift()!;
        continue;
      }
      if (this.done) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((r) => (this.wake = r));
    }
  }
}

/** A URL relative to the page made absolute (the worker would resolve it against its script's URL). */
function absolute(model: string): string {
  if (isHubId(model) || /^[a-z][a-z0-9+.-]*:/i.test(model)) return model;
  const loc = (globalThis as { location?: Location }).location;
  return loc ? new URL(model, loc.href).href : model;
}

function wireModel(model: WorkerModel): WireModel {
  if (typeof model === 'string') return absolute(model);
  if (model instanceof Map) return { blobs: model };
  if (model && typeof model === 'object' && typeof (model as ArrayLike<File>).length === 'number') return pickedFiles(model as ArrayLike<File>);
  throw new NibbleError(
    'bad-argument',
    `WorkerEngine.load's model must be a Hub id, a URL, picked Files or a Map of paths to Blobs (a ModelSource object cannot cross to the worker), got ${show(model)}`,
  );
}

/** Checks the load options that cannot cross to the worker; returns the ones that are sent. */
function wireOptions(opts: WorkerLoadOptions): WireLoadOptions {
  if (opts === null || typeof opts !== 'object') throw new NibbleError('bad-argument', `load options must be an object, got ${show(opts)}`);
  const { onProgress: _p, signal: _s, worker: _w, ...rest } = opts;
  for (const k of ['gpu', 'device', 'fetch'] as const) {
    if ((rest as Record<string, unknown>)[k] !== undefined) {
      throw new NibbleError('bad-argument', `the ${k} option cannot cross to a worker: the worker uses its own navigator.gpu and fetch (use Engine.load on the page for ${k})`);
    }
  }
  if (rest.cache !== undefined && typeof rest.cache !== 'boolean') {
    throw new NibbleError('bad-argument', `a WorkerEngine's cache option must be true or false (a WeightCache object cannot cross to the worker), got ${show(rest.cache)}`);
  }
  if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') throw new NibbleError('bad-argument', `onProgress must be a function, got ${show(opts.onProgress)}`);
  if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal)) throw new NibbleError('bad-argument', `signal must be an AbortSignal, got ${show(opts.signal)}`);
  if (rest.draft?.model !== undefined) {
    if (typeof rest.draft.model !== 'string') throw new NibbleError('bad-argument', `a WorkerEngine's draft model must be a Hub id or URL, got ${show(rest.draft.model)}`);
    return { ...rest, draft: { ...rest.draft, model: absolute(rest.draft.model) } };
  }
  return rest;
}

function makeWorker(w: WorkerLoadOptions['worker']): { worker: Worker; owned: boolean } {
  if (w === undefined) {
    // the literal pattern bundlers (Vite, webpack, Rollup plugins, esbuild plugins) rewrite and bundle
    return { worker: new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'nibble' }), owned: true };
  }
  if (typeof w === 'string' || w instanceof URL) return { worker: new Worker(w, { type: 'module', name: 'nibble' }), owned: true };
  if (w && typeof (w as Worker).postMessage === 'function') return { worker: w as Worker, owned: false };
  throw new NibbleError('bad-argument', `worker must be a Worker, a URL or a string, got ${show(w)}`);
}

/** Splits off an AbortSignal (it becomes `cancel` messages); anything else is sent for the worker to check. */
function splitSignal<T extends { signal?: AbortSignal }>(o: T): { rest: Omit<T, 'signal'>; signal?: AbortSignal } {
  if (o && typeof o === 'object' && o.signal instanceof AbortSignal) {
    const { signal, ...rest } = o;
    return { rest, signal };
  }
  return { rest: o };
}

/** OpenAI-style chat endpoint of a WorkerEngine (the same shapes as Engine's). */
export interface WorkerChatCompletions {
  create(req: ChatCompletionRequest & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(req: ChatCompletionRequest & { stream?: false | null }): Promise<ChatCompletion>;
  create(req: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
}

export interface WorkerCompletions {
  create(req: CompletionRequest & { stream: true }): Promise<AsyncIterable<CompletionChunk>>;
  create(req: CompletionRequest & { stream?: false | null }): Promise<Completion>;
  create(req: CompletionRequest): Promise<Completion | AsyncIterable<CompletionChunk>>;
}

/**
 * nibble's Engine in a dedicated worker. The same calls as Engine (load, generate, chat and
 * completions, perplexity, dispose) with the same options, results, streaming and NibbleError
 * codes; the tokenizer is reached through encode() / decode(), which are asynchronous here.
 */
export class WorkerEngine {
  /** The engine's info, as Engine.info (a copy made when the load finished). */
  readonly info: EngineInfo;
  /** The worker the engine runs in. */
  readonly worker: Worker;
  /** OpenAI-style chat API: `engine.chat.completions.create({ messages, stream, ... })`. */
  readonly chat: { completions: WorkerChatCompletions };
  /** OpenAI-style completions on a raw prompt: `engine.completions.create({ prompt, ... })`. */
  readonly completions: WorkerCompletions;
  /**
   * Resolves once the worker's engine has its kernels compiled after the load in use
   * (Engine.optimized); never rejects (a worker that is gone, or a disposed engine, resolves it too).
   */
  readonly optimized: Promise<void>;
  private readonly conn: Connection;
  private readonly handle: number;
  private readonly owned: boolean;
  private disposing: Promise<void> | null = null;

  private constructor(conn: Connection, handle: number, info: EngineInfo, owned: boolean) {
    this.conn = conn;
    this.worker = conn.worker;
    this.handle = handle;
    this.info = info;
    this.owned = owned;
    this.chat = { completions: { create: (req: ChatCompletionRequest) => this.create('chat', req) } as WorkerChatCompletions };
    this.completions = { create: (req: CompletionRequest) => this.create('completion', req) } as WorkerCompletions;
    this.optimized = conn.request({ kind: 'optimized', engine: handle }).then(
      () => undefined,
      () => undefined,
    );
  }

  /**
   * Starts a worker (or uses `opts.worker`) and loads a model in it: a Hub id, a URL of a folder in
   * Hugging Face layout, or picked files. Options are Engine.load's, less the ones that cannot
   * cross a worker boundary (`gpu`, `device`, `fetch`, a WeightCache object): those are
   * `bad-argument` errors. Resolves once the model can generate.
   */
  static async load(model: WorkerModel, opts: WorkerLoadOptions = {}): Promise<WorkerEngine> {
    const options = wireOptions(opts);
    const wm = wireModel(model);
    const { worker, owned } = makeWorker(opts.worker);
    const conn = Connection.of(worker);
    const onProgress = opts.onProgress;
    try {
      const r = await conn.request<LoadReply>(
        { kind: 'load', model: wm, options, progress: !!onProgress },
        { signal: opts.signal, onEvent: (ev) => ev.kind === 'progress' && onProgress?.(ev.progress) },
      );
      return new WorkerEngine(conn, r.engine, r.info, owned);
    } catch (e) {
      if (owned) {
        conn.fail(new NibbleError('aborted', 'the worker was terminated'));
        worker.terminate();
      }
      throw e;
    }
  }

  /**
   * Generates from a text prompt (or `promptIds`) in the worker, streaming text as it is produced:
   * iterate the returned Generation for text pieces; `result` resolves with the GenerateResult.
   * An AbortSignal in `opts.signal` stops it (finishReason 'abort'; the engine stays usable).
   */
  generate(prompt: string, opts: GenerateOptions = {}): Generation {
    const pieces = new Channel<string>();
    let result: Promise<GenerateResult>;
    if (this.disposing) result = Promise.reject(disposedError());
    else {
      const { rest, signal } = splitSignal(opts);
      result = this.conn.request<GenerateResult>(
        { kind: 'generate', engine: this.handle, prompt, options: rest },
        { signal, engine: this.handle, onEvent: (ev) => ev.kind === 'text' && pieces.push(ev.text) },
      );
    }
    result.then(
      () => pieces.end(),
      (e) => pieces.end(e),
    );
    result.catch(() => {}); // delivered through the iterator or `result`
    return {
      result,
      [Symbol.asyncIterator]: () => pieces[Symbol.asyncIterator](),
    };
  }

  /** Token ids of a text with the model's tokenizer (Engine.tokenizer.encode, in the worker). */
  encode(text: string, addSpecialTokens = true): Promise<number[]> {
    return this.call<number[]>({ kind: 'encode', engine: this.handle, text, addSpecialTokens });
  }

  /** Text of token ids (Engine.tokenizer.decode, in the worker). */
  decode(ids: number[], skipSpecialTokens = true): Promise<string> {
    return this.call<string>({ kind: 'decode', engine: this.handle, ids, skipSpecialTokens });
  }

  /** Perplexity of a token sequence (Engine.perplexity). */
  perplexity(ids: number[]): Promise<{ perplexity: number; nll: number; tokens: number }> {
    return this.call({ kind: 'perplexity', engine: this.handle, ids });
  }

  /**
   * Frees the engine's GPU memory in the worker (a running call ends with `aborted`, as with
   * Engine.dispose) and terminates the worker if WorkerEngine started it. Later calls are
   * `bad-argument` errors.
   */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      try {
        await this.conn.request({ kind: 'dispose', engine: this.handle });
      } catch {
        // a worker that is gone holds no memory
      } finally {
        this.conn.fail(new NibbleError('aborted', 'the engine was disposed while this call was running'), this.handle);
        if (this.owned) {
          this.conn.fail(new NibbleError('aborted', 'the worker was terminated'));
          this.worker.terminate();
        }
      }
    })();
    return this.disposing;
  }

  private call<T>(msg: NewRequest): Promise<T> {
    if (this.disposing) return Promise.reject(disposedError());
    return this.conn.request<T>(msg, { engine: this.handle });
  }

  private async create(kind: 'chat' | 'completion', req: ChatCompletionRequest | CompletionRequest): Promise<unknown> {
    if (this.disposing) throw disposedError();
    const { rest, signal } = splitSignal(req);
    const stream = !!(req && typeof req === 'object' && req.stream);
    if (!stream) return this.conn.request({ kind, engine: this.handle, request: rest } as NewRequest, { signal, engine: this.handle });
    // resolves when the worker's create() resolved (template rendered, generation queued); chunks follow
    const chunks = new Channel<ChatCompletionChunk | CompletionChunk>();
    let started: (() => void) | null = null;
    const begun = new Promise<void>((r) => (started = r));
    const done = this.conn.request({ kind, engine: this.handle, request: rest } as NewRequest, {
      signal,
      engine: this.handle,
      onEvent: (ev) => {
        if (ev.kind === 'stream') started?.();
        else if (ev.kind === 'chunk') chunks.push(ev.chunk);
      },
    });
    done.then(
      () => chunks.end(),
      (e) => chunks.end(e),
    );
    await Promise.race([begun, done]);
    return chunks;
  }
}

function disposedError(): NibbleError {
  return new NibbleError('bad-argument', 'the engine was disposed: load a new one');
}
