/**
 * The page side of the CLI's runtime: the CLI (Node) opens a page in headless Chromium that
 * imports this module and calls `nibbleRunner.run(job)`. The same Engine as in any web app runs
 * the job; text streams back through `globalThis.nibbleEmit` (exposed by puppeteer).
 */
import { Engine, type LoadOptions } from './api/engine.ts';
import type { ChatMessage } from './api/chat.ts';
import type { ChatCompletionChunk } from './api/openai.ts';
import type { SamplingOptions } from './generate/sampling.ts';
import { isNibbleError, NibbleError } from './errors.ts';
import { createGpuContext } from './gpu/context.ts';
import { measureRoofline, OpProfiler, type ProfileResult, type RooflineResult } from './kernels/probe.ts';

export type Job =
  | { kind: 'load'; model: string; load: LoadOptions }
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
  | { kind: 'logits'; ids: number[]; rows: number }
  /** The roofline probe (streaming-read GB/s) on the page's shared GPU device: see kernels/probe.ts. */
  | { kind: 'probe'; bytes?: number; reps?: number }
  /**
   * Greedy plain decoding of `maxNewTokens` after `promptIds` with every decode step's ops timed
   * by timestamp-query (Runtime.profiler); per-kernel GPU time per step. With `speculative` (a
   * draft is loaded) the decoding is speculative and every pass is timed: a "step" is then one
   * pass (a draft step or a target verify pass), and the kernels are told apart by their labels.
   */
  | { kind: 'profile'; promptIds: number[]; maxNewTokens: number; speculative?: boolean };

/** The `probe` job's result. */
export type ProbeJobResult = RooflineResult & { adapter: string };

/** The `profile` job's result: `available` false (and `reason`) when the device has no timestamp-query. */
export type ProfileJobResult =
  | ({ available: true; decodeTokensPerSecond: number; cachedPromptTokens: number } & ProfileResult)
  | { available: false; reason: string };

type Emit = (ev: { type: string; [k: string]: unknown }) => void;

let engine: Engine | null = null;
/** The running chat job's abort controller (the `abort` job fires it). */
let current: AbortController | null = null;

function emit(ev: { type: string; [k: string]: unknown }): void {
  const f = (globalThis as unknown as { nibbleEmit?: Emit }).nibbleEmit;
  if (f) void f(ev);
}

async function runJob(job: Job): Promise<unknown> {
  switch (job.kind) {
    case 'load': {
      engine?.dispose();
      engine = null;
      let last = 0;
      engine = await Engine.load(job.model, {
        ...job.load,
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
    case 'generate': {
      const e = need();
      const gen = e.generate(job.prompt, {
        maxNewTokens: job.maxNewTokens,
        promptIds: job.promptIds,
        ignoreEos: job.ignoreEos,
        ...job.sampling,
        stop: job.stop,
      });
      if (job.stream) for await (const text of gen) emit({ type: 'text', text });
      const r = await gen.result;
      return { ...r, adapter: e.info.adapter.summary };
    }
    case 'chat': {
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
    case 'abort':
      current?.abort();
      return { aborted: current !== null };
    case 'chat-template': {
      const t = await need().chatTemplate();
      return { bytes: t.source.length };
    }
    case 'eval': {
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
    case 'info':
      return need().info;
    case 'logits':
      return (await need().logits(job.ids, job.rows)).map((r) => Array.from(r));
    case 'probe': {
      // the same shared device an Engine.load() without GPU options gets
      const ctx = await createGpuContext();
      const r = await measureRoofline(ctx.device, { bytes: job.bytes, reps: job.reps });
      return { ...r, adapter: ctx.adapterInfo.summary } satisfies ProbeJobResult;
    }
    case 'profile': {
      const e = need();
      if (!e.info.features.timestampQuery) {
        return { available: false, reason: `the adapter (${e.info.adapter.summary}) has no timestamp-query feature` } satisfies ProfileJobResult;
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
        return {
          available: true,
          decodeTokensPerSecond: r.timings.decodeTokensPerSecond,
          cachedPromptTokens: r.cachedPromptTokens,
          ...p,
        } satisfies ProfileJobResult;
      } finally {
        profiler.destroy();
      }
    }
  }
}

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
  if (!engine) throw new Error('no model loaded');
  return engine;
}

/** Runs a job; errors come back as data ({ error: { code, message } }) so Node can report them. */
export async function run(job: Job): Promise<{ ok: unknown } | { error: { code: string | null; message: string } }> {
  try {
    return { ok: await runJob(job) };
  } catch (e) {
    return { error: { code: isNibbleError(e) ? e.code : null, message: e instanceof Error ? e.message : String(e) } };
  }
}

(globalThis as unknown as { nibbleRunner: { run: typeof run } }).nibbleRunner = { run };
