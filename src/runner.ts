/**
 * The host side of the CLI's runtime: the CLI (Node) hosts this module either in a page of headless
 * Chromium (`page.evaluate(nibbleRunner.run(job))`, events through an exposed `nibbleEmit`) or in a
 * Deno process (src/deno/main.ts: one JSON line per job on stdin, replies and events on stdout). The
 * same Engine as in any web app runs the job. The protocol is typed both ways: a job of kind K
 * (`JobOf<K>`) answers `Reply<JobResults[K]>`, and the events it emits are `RunnerEvent`s.
 */
import { Engine, type EngineInfo, type GenerateResult, type LoadOptions, type Timings } from './api/engine.ts';
import type { ChatMessage } from './api/chat.ts';
import type { ChatCompletionChunk, OpenAIFinishReason, Usage } from './api/openai.ts';
import type { SamplingOptions } from './generate/sampling.ts';
import type { SpeculativeStats } from './generate/speculative.ts';
import type { LoadProgress } from './model/llama.ts';
import type { WeightCache } from './cache/types.ts';
import type { FormatName } from './quant/plan.ts';
import type { ModelSource } from './source/types.ts';
import { isNibbleError, NibbleError } from './errors.ts';
import { createGpuContext } from './gpu/context.ts';
import { measureRoofline, OpProfiler, type ProfileResult, type RooflineResult } from './kernels/probe.ts';

/**
 * LoadOptions as they travel in a job (JSON: no callbacks, signals or objects). `cache: true` is the
 * host's weight store: the browser's (OPFS / Cache API) in Chromium, the directory cache in Deno.
 */
export type JobLoadOptions = Omit<LoadOptions, 'onProgress' | 'signal' | 'cache' | 'draft' | 'quant'> & {
  quant?: JobQuant;
  cache?: boolean;
  draft?: { model?: string; quant?: JobQuant; tokens?: number; adaptive?: boolean; pipeline?: boolean };
};

/** A QuantOption that survives JSON: override patterns as strings. */
export type JobQuant = FormatName | { default: FormatName; overrides?: Array<{ pattern: string; format: FormatName }> };

export type Job =
  | { kind: 'load'; model: string; load: JobLoadOptions }
  | {
      kind: 'generate';
      prompt: string;
      maxNewTokens: number;
      stream: boolean;
      promptIds?: number[];
      ignoreEos?: boolean;
      /** Sampling settings (default greedy). */
      sampling?: SamplingOptions;
      stop?: string[];
      /** GenerateOptions.speculative: false decodes plainly although a draft is loaded. */
      speculative?: boolean;
    }
  | {
      /** One chat turn through engine.chat.completions.create (streams 'text' events when `stream`). */
      kind: 'chat';
      messages: ChatMessage[];
      maxNewTokens?: number;
      sampling?: SamplingOptions;
      stop?: string[];
      stream: boolean;
      /**
       * When the rendered conversation leaves no room in the context (at least
       * min(maxNewTokens, context / 4) tokens for the reply), drop the oldest turns after the
       * leading system messages until it does; the result's `dropped` counts the messages
       * dropped. The last message is never dropped.
       */
      fitContext?: boolean;
    }
  /** Stops the running `chat` job: it ends with finishReason 'abort' and the text so far. */
  | { kind: 'abort' }
  /** Checks that the model has a chat template (throws no-chat-template). */
  | { kind: 'chat-template' }
  | { kind: 'eval'; text: string }
  | { kind: 'info' }
  /** Waits for engine.optimized (the kernels compiled after the load); `waitedMs`: how long that took. */
  | { kind: 'optimized' }
  | { kind: 'logits'; ids: number[]; rows: number }
  /** The roofline probe (streaming-read GB/s) on the host's shared GPU device: see kernels/probe.ts. */
  | { kind: 'probe'; bytes?: number; reps?: number }
  /**
   * Greedy plain decoding of `maxNewTokens` after `promptIds` with every decode step's ops timed
   * by timestamp-query (Runtime.profiler); per-kernel GPU time per step. With `speculative` (a
   * draft is loaded) the decoding is speculative and every pass is timed: a "step" is then one
   * pass (a draft step or a target verify pass), and the kernels are told apart by their labels.
   */
  | { kind: 'profile'; promptIds: number[]; maxNewTokens: number; speculative?: boolean };

export type JobKind = Job['kind'];
export type JobOf<K extends JobKind> = Extract<Job, { kind: K }>;

/** The `generate` job's result: the engine's, with the adapter's summary. */
export type GenerateJobResult = GenerateResult & { adapter: string };

/** The `chat` job's result (the last stream chunk's figures; null where the turn was aborted). */
export interface ChatJobResult {
  content: string;
  /** Messages fitContext dropped from the front (after the system messages). */
  dropped: number;
  finishReason: OpenAIFinishReason | 'abort' | null;
  usage: Usage | null;
  timings: Timings | null;
  speculative: SpeculativeStats | null;
  seed: number | null;
  adapter: string;
}

/** The `eval` job's result. */
export interface EvalJobResult {
  perplexity: number;
  nll: number;
  tokens: number;
  quant: string;
  bitsPerWeight: number;
  weightBytes: number;
  adapter: string;
}

/** The `probe` job's result. */
export type ProbeJobResult = RooflineResult & { adapter: string };

/** The `profile` job's result: `available` false (and `reason`) when the device has no timestamp-query. */
export type ProfileJobResult =
  | ({ available: true; decodeTokensPerSecond: number; cachedPromptTokens: number } & ProfileResult)
  | { available: false; reason: string };

/** What each kind of job answers (EngineInfo as JSON: a plan's RegExp overrides do not survive). */
export interface JobResults {
  load: EngineInfo;
  generate: GenerateJobResult;
  chat: ChatJobResult;
  abort: { aborted: boolean };
  'chat-template': { bytes: number };
  eval: EvalJobResult;
  info: EngineInfo;
  optimized: { waitedMs: number };
  logits: number[][];
  probe: ProbeJobResult;
  profile: ProfileJobResult;
}

/** A job's answer: its result, or the error as data (`code`: the NibbleError code, null for others). */
export type Reply<R> = { ok: R } | { error: { code: string | null; message: string } };

/** What a running job emits: load progress (at most every 250 ms, and 'done') and streamed text. */
export type RunnerEvent = ({ type: 'progress' } & LoadProgress) | { type: 'text'; text: string };

/** The host's hooks: the Deno host sets them; in Chromium the page's exposed `nibbleEmit` is used. */
interface HostHooks {
  emit?: (ev: RunnerEvent) => void;
  /** The store `cache: true` means (default: the browser's). */
  cache?: WeightCache;
  /** A model string the host reads itself (Deno: a file: URL → its folder on disk), else null: the engine resolves it. */
  openModel?: (model: string) => ModelSource | null;
}
const hooks: HostHooks = {};

/** Sets the host's hooks (the Deno host: its event writer and the directory cache). */
export function configure(h: HostHooks): void {
  Object.assign(hooks, h);
}

let engine: Engine | null = null;
/** The running chat job's abort controller (the `abort` job fires it). */
let current: AbortController | null = null;

function emit(ev: RunnerEvent): void {
  const f = hooks.emit ?? (globalThis as unknown as { nibbleEmit?: (ev: RunnerEvent) => void }).nibbleEmit;
  if (f) void f(ev);
}

async function load(job: JobOf<'load'>): Promise<EngineInfo> {
  engine?.dispose();
  engine = null;
  let last = 0;
  const { cache, draft, ...opts } = job.load;
  const open = (m: string) => hooks.openModel?.(m) ?? m;
  engine = await Engine.load(open(job.model), {
    ...opts,
    ...(draft ? { draft: { ...draft, model: draft.model === undefined ? undefined : open(draft.model) } } : {}),
    cache: cache === true && hooks.cache ? hooks.cache : cache,
    onProgress: (p) => {
      const now = performance.now();
      if (now - last > 250 || p.phase === 'done') {
        last = now;
        emit({ type: 'progress', ...p });
      }
    },
  });
  return engine.info;
}

async function generate(job: JobOf<'generate'>): Promise<GenerateJobResult> {
  const e = need();
  const gen = e.generate(job.prompt, {
    maxNewTokens: job.maxNewTokens,
    promptIds: job.promptIds,
    ignoreEos: job.ignoreEos,
    ...job.sampling,
    stop: job.stop,
    ...(job.speculative === undefined ? {} : { speculative: job.speculative }),
  });
  if (job.stream) for await (const text of gen) emit({ type: 'text', text });
  const r = await gen.result;
  return { ...r, adapter: e.info.adapter.summary };
}

async function chat(job: JobOf<'chat'>): Promise<ChatJobResult> {
  const e = need();
  const s = job.sampling ?? {};
  let messages = job.messages;
  let dropped = 0;
  const ac = new AbortController();
  current = ac;
  let content = '';
  let last: ChatCompletionChunk | null = null;
  try {
    if (job.fitContext) ({ messages, dropped } = await fitContext(e, messages, job.maxNewTokens));
    if (ac.signal.aborted) throw new NibbleError('aborted', 'the request was aborted');
    const stream = await e.chat.completions.create({
      messages,
      signal: ac.signal,
      max_tokens: job.maxNewTokens,
      temperature: s.temperature ?? 0,
      top_p: s.topP,
      top_k: s.topK,
      min_p: s.minP,
      repetition_penalty: s.repetitionPenalty,
      presence_penalty: s.presencePenalty,
      frequency_penalty: s.frequencyPenalty,
      seed: s.seed,
      stop: job.stop,
      stream: true,
    });
    for await (const chunk of stream) {
      const t = chunk.choices[0]?.delta.content;
      if (t) {
        content += t;
        if (job.stream) emit({ type: 'text', text: t });
      }
      last = chunk;
    }
  } catch (err) {
    if (!(ac.signal.aborted && isNibbleError(err) && err.code === 'aborted')) throw err;
    return { content, finishReason: 'abort', usage: null, timings: null, speculative: null, seed: null, dropped, adapter: e.info.adapter.summary };
  } finally {
    if (current === ac) current = null;
  }
  return {
    content,
    dropped,
    finishReason: last?.choices[0]?.finish_reason ?? null,
    usage: last?.usage ?? null,
    timings: last?.timings ?? null,
    speculative: last?.speculative ?? null,
    seed: last?.seed ?? null,
    adapter: e.info.adapter.summary,
  };
}

async function evaluate(job: JobOf<'eval'>): Promise<EvalJobResult> {
  const e = need();
  const ids = e.tokenizer.encode(job.text);
  const r = await e.perplexity(ids);
  return {
    perplexity: r.perplexity,
    nll: r.nll,
    tokens: r.tokens,
    quant: e.info.quantKey,
    bitsPerWeight: e.info.bitsPerWeight,
    weightBytes: e.info.weightBytes,
    adapter: e.info.adapter.summary,
  };
}

async function probe(job: JobOf<'probe'>): Promise<ProbeJobResult> {
  // the same shared device an Engine.load() without GPU options gets
  const ctx = await createGpuContext();
  const r = await measureRoofline(ctx.device, { bytes: job.bytes, reps: job.reps });
  return { ...r, adapter: ctx.adapterInfo.summary };
}

async function profile(job: JobOf<'profile'>): Promise<ProfileJobResult> {
  const e = need();
  if (!e.info.features.timestampQuery) {
    return { available: false, reason: `the adapter (${e.info.adapter.summary}) has no timestamp-query feature` };
  }
  const rt = e.model.rt;
  const spec = job.speculative === true;
  // plain: the decode steps only (T = 1); speculative: every pass after the prompt's
  const profiler = new OpProfiler(rt.device, { filter: spec ? (s) => s.pos0 >= job.promptIds.length : (s) => s.T === 1 });
  try {
    rt.profiler = profiler;
    let r;
    try {
      r = await e.generate('', { promptIds: job.promptIds, maxNewTokens: job.maxNewTokens, ignoreEos: true, speculative: spec }).result;
    } finally {
      rt.profiler = null;
    }
    const p = await profiler.collect();
    return { available: true, decodeTokensPerSecond: r.timings.decodeTokensPerSecond, cachedPromptTokens: r.cachedPromptTokens, ...p };
  } finally {
    profiler.destroy();
  }
}

/** One handler per kind of job. */
const HANDLERS: { [K in JobKind]: (job: JobOf<K>) => Promise<JobResults[K]> } = {
  load,
  generate,
  chat,
  abort: async () => {
    current?.abort();
    return { aborted: current !== null };
  },
  'chat-template': async () => ({ bytes: (await need().chatTemplate()).source.length }),
  eval: evaluate,
  info: async () => need().info,
  optimized: async () => {
    const t0 = performance.now();
    await need().optimized;
    return { waitedMs: performance.now() - t0 };
  },
  logits: async (job) => (await need().logits(job.ids, job.rows)).map((r) => Array.from(r)),
  probe,
  profile,
};

/**
 * `messages` without their oldest turns (after the leading system messages; never the last
 * message) until the rendered prompt leaves min(maxNewTokens, context / 4) tokens for the reply.
 * A prompt that still does not fit is left to the engine (context-overflow).
 */
async function fitContext(e: Engine, messages: ChatMessage[], maxNewTokens: number | undefined): Promise<{ messages: ChatMessage[]; dropped: number }> {
  const template = await e.chatTemplate();
  const ctx = e.info.contextLength;
  const room = Math.max(1, Math.min(maxNewTokens ?? Infinity, Math.floor(ctx / 4)));
  const fits = (m: ChatMessage[]) => e.tokenizer.encode(template.render(m, { addGenerationPrompt: true }), false).length + room <= ctx;
  let head = 0;
  while (head < messages.length - 1 && messages[head].role === 'system') head++;
  let rest = messages.slice(head);
  let dropped = 0;
  while (rest.length > 1 && !fits([...messages.slice(0, head), ...rest])) {
    // drop a whole exchange (a user message and the replies after it) where there is one
    let n = 1;
    while (n < rest.length - 1 && rest[n].role !== 'user') n++;
    rest = rest.slice(n);
    dropped += n;
  }
  return { messages: [...messages.slice(0, head), ...rest], dropped };
}

function need(): Engine {
  if (!engine) throw new NibbleError('bad-argument', 'no model loaded: send a load job first');
  return engine;
}

/** Runs a job; errors come back as data ({ error: { code, message } }) so the host can report them. */
export async function run<K extends JobKind>(job: JobOf<K>): Promise<Reply<JobResults[K]>> {
  try {
    const handler = HANDLERS[job.kind] as (j: JobOf<K>) => Promise<JobResults[K]>;
    if (typeof handler !== 'function') throw new NibbleError('bad-argument', `unknown job kind ${JSON.stringify(job.kind)}`);
    return { ok: await handler(job) };
  } catch (e) {
    return { error: { code: isNibbleError(e) ? e.code : null, message: e instanceof Error ? e.message : String(e) } };
  }
}

/** The bundle's own NibbleError (a host's ModelSource throws it, so the engine recognises its codes). */
export { NibbleError };

(globalThis as unknown as { nibbleRunner: { run: typeof run } }).nibbleRunner = { run };
