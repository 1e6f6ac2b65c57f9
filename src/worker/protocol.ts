/**
 * The message protocol between WorkerEngine (the page, src/worker/client.ts) and the engine host
 * in a dedicated worker (src/worker/host.ts). Everything is structured-cloneable; no functions or
 * AbortSignals cross: a page-side signal becomes a `cancel` message, `onProgress` a flag.
 *
 * Every request carries an id unique on its worker. The host answers each with any number of
 * events (`progress`, `text`, `stream`, `chunk`) and then exactly one `result` or `error`:
 *
 *   page → worker                                  worker → page
 *   load {model, options, progress}          →     progress* · result {engine, info} | error
 *   generate {engine, prompt, options}       →     text* · result {GenerateResult} | error
 *   chat / completion {engine, request}      →     (stream · chunk*)? · result | error
 *   perplexity / encode / decode {engine, …} →     result | error
 *   optimized {engine}                       →     result (once Engine.optimized has resolved)
 *   dispose {engine}                         →     result (once its GPU memory is freed)
 *   cancel {target}                          →     (none; the target request ends as an abort would)
 *
 * On start the host posts `ready` (with PROTOCOL_VERSION), so the page can tell a worker that
 * never started from one that is busy.
 */
import { NibbleError, type NibbleErrorCode } from '../errors.ts';
import type { ChatCompletionChunk, ChatCompletionRequest, CompletionChunk, CompletionRequest } from '../api/openai.ts';
import type { EngineInfo, GenerateOptions, LoadOptions } from '../api/engine.ts';

export const PROTOCOL_VERSION = 1;

/** What Engine.load's onProgress reports (the same objects cross to the page). */
export type LoadProgress = Parameters<NonNullable<LoadOptions['onProgress']>>[0];

/**
 * A model the worker can load: a URL or Hub id, or files by path (→ BlobSource in the worker; the
 * page maps picked Files to their paths, since a File's webkitRelativePath does not survive cloning).
 */
export type WireModel = string | { blobs: Map<string, Blob>; description?: string };

/** LoadOptions without what cannot cross a worker boundary (functions, GPU objects, a WeightCache). */
export type WireLoadOptions = Omit<LoadOptions, 'onProgress' | 'signal' | 'gpu' | 'device' | 'fetch' | 'cache' | 'draft'> & {
  cache?: boolean;
  draft?: Omit<NonNullable<LoadOptions['draft']>, 'model'> & { model?: string };
};

export type WireGenerateOptions = Omit<GenerateOptions, 'signal'>;

export type Request =
  | { kind: 'load'; id: number; model: WireModel; options: WireLoadOptions; progress: boolean }
  | { kind: 'generate'; id: number; engine: number; prompt: string; options: WireGenerateOptions }
  | { kind: 'chat'; id: number; engine: number; request: Omit<ChatCompletionRequest, 'signal'> }
  | { kind: 'completion'; id: number; engine: number; request: Omit<CompletionRequest, 'signal'> }
  | { kind: 'perplexity'; id: number; engine: number; ids: number[] }
  | { kind: 'encode'; id: number; engine: number; text: string; addSpecialTokens: boolean }
  | { kind: 'decode'; id: number; engine: number; ids: number[]; skipSpecialTokens: boolean }
  | { kind: 'optimized'; id: number; engine: number }
  | { kind: 'dispose'; id: number; engine: number }
  | { kind: 'cancel'; id: number; target: number; reason?: string };

/** An error as it crosses the boundary; `code` is set for NibbleErrors. */
export interface WireError {
  name: string;
  message: string;
  code?: NibbleErrorCode;
  stack?: string;
}

export type Reply =
  | { kind: 'ready'; version: number }
  | { kind: 'progress'; id: number; progress: LoadProgress }
  | { kind: 'text'; id: number; text: string }
  /** A streaming create() resolved: chunks follow. */
  | { kind: 'stream'; id: number }
  | { kind: 'chunk'; id: number; chunk: ChatCompletionChunk | CompletionChunk }
  | { kind: 'result'; id: number; value: unknown }
  | { kind: 'error'; id: number; error: WireError };

export type LoadReply = { engine: number; info: EngineInfo };

export function toWireError(e: unknown): WireError {
  if (e instanceof NibbleError) return { name: e.name, message: e.message, code: e.code, stack: e.stack };
  if (e instanceof Error || (e && typeof e === 'object' && 'message' in e)) {
    const x = e as Error;
    return { name: String(x.name ?? 'Error'), message: String(x.message), stack: typeof x.stack === 'string' ? x.stack : undefined };
  }
  return { name: 'Error', message: String(e) };
}

/**
 * The page-side error of a WireError: a NibbleError with the same code and message (its `cause`
 * holds the worker-side stack), or an Error of the same name.
 */
export function fromWireError(w: WireError): Error {
  const cause = w.stack ? { workerStack: w.stack } : undefined;
  if (w.code) return new NibbleError(w.code, w.message, cause ? { cause } : undefined);
  const e = new Error(w.message, cause ? { cause } : undefined);
  e.name = w.name;
  return e;
}
