/**
 * One generate() call: its arguments checked before it is queued (validateGenerate), the run
 * itself (prompt → tokens → plain or speculative decoding → text with stop strings, timings), and
 * the streaming iterator the caller reads (streamGeneration).
 */
import { NibbleError, show } from '../errors.ts';
import { plainDecode, type FinishReason, type LoopResult, type TokenSink } from '../generate/decode.ts';
import type { GpuSampler } from '../generate/sampler.ts';
import { hasPenalties, isPlainArgmax, resolveSampling, type ResolvedSampling } from '../generate/sampling.ts';
import { checkTokenIds, type Sequence } from '../generate/sequence.ts';
import type { Speculator, SpeculativeStats } from '../generate/speculative.ts';
import { StopStringMatcher } from '../generate/stop.ts';
import type { LlamaModel } from '../model/llama.ts';
import type { TextTokenizer } from '../tokenizer.ts';
import type { GenerateOptions, GenerateResult, Generation } from './types.ts';

/** A generate() call whose arguments were checked. */
export interface Request {
  prompt: string;
  promptIds: number[] | undefined;
  opts: GenerateOptions;
  maxNew: number;
  stops: string[];
  /** The sampling settings, resolved once (a random seed is drawn here when none is given). */
  sampling: ResolvedSampling;
}

function bad(msg: string): never {
  throw new NibbleError('bad-argument', msg);
}

/** Checks generate()'s arguments before the call is queued; every failure is a bad-argument NibbleError. */
export function validateGenerate(prompt: unknown, opts: unknown, vocabSize: number): Request {
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) bad(`generate options must be an object, got ${show(opts)}`);
  const o = opts as GenerateOptions;
  let promptIds: number[] | undefined;
  if (o.promptIds !== undefined) {
    checkTokenIds(o.promptIds, 'promptIds', vocabSize);
    promptIds = o.promptIds.slice();
    if (prompt !== undefined && prompt !== '' && typeof prompt !== 'string') bad(`prompt must be a string, got ${show(prompt)}`);
  } else if (typeof prompt !== 'string') {
    bad(`prompt must be a string (or pass promptIds), got ${show(prompt)}`);
  }
  const maxNew = o.maxNewTokens ?? 128;
  if (typeof maxNew !== 'number' || !(maxNew === Infinity || (Number.isInteger(maxNew) && maxNew >= 0))) {
    bad(`maxNewTokens must be a non-negative integer or Infinity, got ${show(o.maxNewTokens)}`);
  }
  for (const k of ['addSpecialTokens', 'ignoreEos', 'speculative'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'boolean') bad(`${k} must be a boolean, got ${show(o[k])}`);
  }
  if (o.eosTokenIds !== undefined) {
    if (!Array.isArray(o.eosTokenIds) || o.eosTokenIds.some((id) => !Number.isInteger(id) || id < 0)) {
      bad(`eosTokenIds must be an array of non-negative integer token ids, got ${show(o.eosTokenIds)}`);
    }
  }
  const stops = o.stop === undefined ? [] : typeof o.stop === 'string' ? [o.stop] : o.stop;
  if (!Array.isArray(stops) || stops.some((x) => typeof x !== 'string')) bad(`stop must be a string or an array of strings, got ${show(o.stop)}`);
  if (o.signal !== undefined && (o.signal === null || typeof (o.signal as AbortSignal).aborted !== 'boolean')) {
    bad(`signal must be an AbortSignal, got ${show(o.signal)}`);
  }
  const sampling = resolveSampling(o, vocabSize);
  return { prompt: typeof prompt === 'string' ? prompt : '', promptIds, opts: o, maxNew, stops, sampling };
}

/** What a run needs of the engine. */
export interface RunHost {
  model: LlamaModel;
  tokenizer: TextTokenizer;
  seq: Sequence;
  loadMs: number;
  /** Throws when the engine was disposed or broke (after every readback). */
  check(): void;
  /** The target's sampler (made on first use). */
  sampler(): GpuSampler;
  /** The speculator when a draft is loaded (made on first use), else null. */
  speculator(): Speculator | null;
}

/** Decodes from `ids` (plainly or speculatively) into `sink`. */
async function decode(h: RunHost, req: Request, ids: number[], sink: TokenSink): Promise<LoopResult & { stats?: SpeculativeStats }> {
  const m = h.model;
  const { opts, sampling } = req;
  const control = { maxNewTokens: req.maxNew, signal: opts.signal, check: () => h.check() };
  const spec = (opts.speculative ?? true) && !hasPenalties(sampling) ? h.speculator() : null;
  const plainPick = isPlainArgmax(sampling);
  if (!plainPick || spec) h.sampler().configure(sampling, ids);
  if (spec) return spec.run(ids, sampling, sink, control);
  const pick = plainPick ? undefined : h.sampler().op('decode', m.logits, m.tokens);
  return plainDecode(h.seq, ids, pick, sink, control);
}

/** Runs one checked request, emitting text as it is produced. */
export async function runGeneration(h: RunHost, req: Request, emit: (text: string) => void): Promise<GenerateResult> {
  h.check();
  const m = h.model;
  const { opts, maxNew } = req;
  const ids = req.promptIds ?? h.tokenizer.encode(req.prompt, opts.addSpecialTokens ?? true);
  if (ids.length === 0) {
    throw new NibbleError('bad-argument', 'the prompt has no tokens (an empty text without special tokens): give some text or promptIds');
  }
  if (ids.length > m.contextLength) {
    throw new NibbleError('context-overflow', `the prompt has ${ids.length} tokens but the context holds ${m.contextLength}; use a longer contextLength`);
  }
  const eos = new Set(opts.ignoreEos ? [] : (opts.eosTokenIds ?? m.cfg.eosTokenIds));
  const decoder = h.tokenizer.streamDecoder(ids);
  const matcher = new StopStringMatcher(req.stops);
  const out: number[] = [];
  const sink: TokenSink = (id) => {
    if (eos.has(id)) return 'stop';
    out.push(id);
    const text = matcher.push(decoder.push(id));
    if (text) emit(text);
    if (matcher.matched !== null) return 'stop';
    return out.length >= maxNew ? 'length' : null;
  };
  let finishReason: FinishReason = 'length';
  let stats: SpeculativeStats | undefined;
  const t0 = performance.now();
  let tFirst = t0;
  let cached = 0;
  // prompt + generated tokens never exceed the context: a prompt that fills it leaves no room
  if (ids.length < m.contextLength && maxNew > 0) {
    const r = await decode(h, req, ids, sink);
    stats = r.stats;
    cached = h.seq.reused;
    finishReason = r.reason;
    tFirst = r.firstTokenAt;
    const rest = matcher.push(decoder.flush()) + matcher.flush();
    if (rest) emit(rest);
  }
  const t1 = performance.now();
  const prefillMs = tFirst - t0;
  const decodeMs = t1 - tFirst;
  const n = out.length;
  let text = decoder.text;
  if (matcher.matched !== null) {
    const at = text.indexOf(matcher.matched);
    if (at >= 0) text = text.slice(0, at);
  }
  return {
    text,
    promptTokenIds: ids,
    tokenIds: out,
    finishReason,
    ...(matcher.matched !== null ? { stopString: matcher.matched } : {}),
    cachedPromptTokens: cached,
    seed: req.sampling.seed,
    timings: {
      loadMs: h.loadMs,
      prefillMs,
      decodeMs,
      decodeTokensPerSecond: n > 1 && decodeMs > 0 ? ((n - 1) * 1000) / decodeMs : 0,
      prefillTokensPerSecond: prefillMs > 0 ? ((ids.length - cached) * 1000) / prefillMs : 0,
    },
    ...(stats ? { speculative: stats } : {}),
  };
}

/**
 * The Generation a caller iterates: text chunks as `start` emits them, then the end (or its error);
 * `result` resolves with the whole result. `start` is null when the call was refused (`invalid`).
 */
export function streamGeneration(start: ((emit: (text: string) => void) => Promise<GenerateResult>) | null, invalid: unknown): Generation {
  const chunks: string[] = [];
  let wake: (() => void) | null = null;
  let done = false;
  let failure: unknown = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const started: Promise<GenerateResult> = start
    ? start((t) => {
        chunks.push(t);
        notify();
      })
    : Promise.reject(invalid);
  const result = started.then(
    (r) => {
      done = true;
      notify();
      return r;
    },
    (e) => {
      done = true;
      failure = e;
      notify();
      throw e;
    },
  );
  result.catch(() => {}); // the error is delivered through the iterator or `result`
  return {
    result,
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (chunks.length) {
          yield chunks.shift()!;
          continue;
        }
        if (done) {
          if (failure) throw failure;
          return;
        }
        await new Promise<void>((r) => (wake = r));
      }
    },
  };
}
