/**
 * The worker side of WorkerEngine: hosts Engines in a dedicated worker and answers the requests of
 * src/worker/protocol.ts. Everything heavy (fetching, tokenizer and safetensors parsing,
 * quantization, the GPU device and its kernels) runs here, off the page's thread.
 */
import { Engine, type LoadOptions } from '../api/engine.ts';
import { NibbleError } from '../errors.ts';
import { BlobSource } from '../source/blob.ts';
import type { ModelSource } from '../source/types.ts';
import { PROTOCOL_VERSION, toWireError, type Reply, type Request, type WireModel } from './protocol.ts';

/** What the host needs of its global scope (a DedicatedWorkerGlobalScope, or a MessagePort). */
export interface HostScope {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: (ev: MessageEvent) => void): void;
}

/** Serves WorkerEngine requests on `scope` (the worker's global scope by default). */
export function exposeEngine(scope: HostScope = globalThis as unknown as HostScope): void {
  const engines = new Map<number, Engine>();
  const controllers = new Map<number, AbortController>();
  let nextEngine = 1;

  const post = (msg: Reply) => {
    try {
      scope.postMessage(msg);
    } catch (e) {
      // a value that does not clone (DataCloneError): the request fails instead of hanging
      if (msg.kind === 'result' || msg.kind === 'chunk' || msg.kind === 'progress') {
        scope.postMessage({ kind: 'error', id: msg.id, error: toWireError(e) } satisfies Reply);
      } else throw e;
    }
  };

  const engineOf = (id: number): Engine => {
    const e = engines.get(id);
    if (!e) throw new NibbleError('bad-argument', 'the engine was disposed: load a new one');
    return e;
  };

  const handle = async (req: Request, signal: AbortSignal): Promise<unknown> => {
    switch (req.kind) {
      case 'load': {
        const opts: LoadOptions = {
          ...req.options,
          signal,
          onProgress: req.progress ? (p) => post({ kind: 'progress', id: req.id, progress: p }) : undefined,
        };
        const engine = await Engine.load(sourceOf(req.model), opts);
        if (signal.aborted) {
          await engine.dispose();
          throw new NibbleError('aborted', 'the load was aborted');
        }
        const id = nextEngine++;
        engines.set(id, engine);
        return { engine: id, info: engine.info };
      }
      case 'generate': {
        const opts = req.options && typeof req.options === 'object' ? { ...req.options, signal } : req.options;
        const gen = engineOf(req.engine).generate(req.prompt, opts);
        for await (const text of gen) post({ kind: 'text', id: req.id, text });
        return await gen.result;
      }
      case 'chat':
      case 'completion': {
        const engine = engineOf(req.engine);
        const r = { ...req.request, signal } as never;
        const created = req.kind === 'chat' ? await engine.chat.completions.create(r) : await engine.completions.create(r);
        if (!req.request.stream) return created;
        post({ kind: 'stream', id: req.id });
        for await (const chunk of created as AsyncIterable<never>) post({ kind: 'chunk', id: req.id, chunk });
        return null;
      }
      case 'perplexity':
        return engineOf(req.engine).perplexity(req.ids);
      case 'encode':
        return engineOf(req.engine).tokenizer.encode(req.text, req.addSpecialTokens);
      case 'decode':
        return engineOf(req.engine).tokenizer.decode(req.ids, req.skipSpecialTokens);
      case 'optimized':
        await engineOf(req.engine).optimized;
        return null;
      case 'dispose': {
        const e = engines.get(req.engine);
        engines.delete(req.engine);
        await e?.dispose();
        return null;
      }
      default:
        throw new NibbleError('bad-argument', `unknown request ${JSON.stringify((req as { kind?: unknown }).kind)}`);
    }
  };

  scope.addEventListener('message', (ev: MessageEvent) => {
    const req = ev.data as Request;
    if (!req || typeof req !== 'object' || typeof req.id !== 'number') return;
    if (req.kind === 'cancel') {
      controllers.get(req.target)?.abort(new NibbleError('aborted', req.reason ?? 'aborted by the caller'));
      return;
    }
    const ctl = new AbortController();
    controllers.set(req.id, ctl);
    handle(req, ctl.signal).then(
      (value) => post({ kind: 'result', id: req.id, value }),
      (e) => post({ kind: 'error', id: req.id, error: toWireError(e) }),
    ).finally(() => controllers.delete(req.id));
  });
  scope.postMessage({ kind: 'ready', version: PROTOCOL_VERSION } satisfies Reply);
}

function sourceOf(m: WireModel): string | ModelSource {
  if (typeof m === 'string') return m;
  if (m && typeof m === 'object' && 'blobs' in m) return new BlobSource(m.blobs, m.description);
  throw new NibbleError('bad-argument', 'model must be a URL, a Hub id or picked files');
}
