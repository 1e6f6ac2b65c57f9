import { NibbleError } from '../errors.ts';
import type { Runtime } from '../kernels/runtime.ts';
import type { LlamaModel } from '../model/llama.ts';
import { sequenceLogits, sequencePerplexity } from '../generate/eval.ts';
import { GpuSampler } from '../generate/sampler.ts';
import { Sequence } from '../generate/sequence.ts';
import { Speculator } from '../generate/speculative.ts';
import type { TextTokenizer } from '../tokenizer.ts';
import type { ModelSource } from '../source/types.ts';
import { ChatTemplate } from './chat.ts';
import { runGeneration, streamGeneration, validateGenerate, type Request, type RunHost } from './generation.ts';
import { loadEngine, type LoadedEngine } from './load.ts';
import { ChatCompletions, Completions, type CompletionHost } from './openai.ts';
import type { EngineInfo, GenerateOptions, GenerateResult, Generation, LoadOptions } from './types.ts';

export type { DraftOptions, EngineInfo, GenerateOptions, GenerateResult, Generation, LoadOptions, Timings } from './types.ts';

/**
 * The nibble engine: one model on one GPU (plus an optional draft model for speculative decoding).
 *
 *   const engine = await Engine.load('https://host/models/stories260K');
 *   for await (const text of engine.generate('Once upon a time', { maxNewTokens: 64 })) show(text);
 *   const reply = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }] });
 */
export class Engine {
  readonly tokenizer: TextTokenizer;
  readonly model: LlamaModel;
  readonly info: EngineInfo;
  /** OpenAI-style chat API: `engine.chat.completions.create({ messages, stream, ... })`. */
  readonly chat: { completions: ChatCompletions };
  /** OpenAI-style completions on a raw prompt: `engine.completions.create({ prompt, ... })`. */
  readonly completions: Completions;
  /**
   * Resolves once the kernels compiled after the load are in use; never rejects. On CPU adapters
   * (SwiftShader) the big weights' prefill matmuls get a larger tile (1.2–1.6× faster prompts) whose
   * compile would double the load: it runs in the background from the moment load resolves, and
   * prompts until then use the load's tile. Elsewhere it is already resolved. A failed compile
   * keeps the load's kernels (a console warning).
   */
  readonly optimized: Promise<void>;
  private readonly seq: Sequence;
  private readonly rt: Runtime;
  private readonly source: ModelSource;
  private readonly draft: LoadedEngine['draft'];
  private sampler: GpuSampler | null = null;
  private speculator: Speculator | null = null;
  private template: Promise<ChatTemplate | null> | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private lostError: NibbleError | null = null;
  private disposed = false;
  private disposing: Promise<void> | null = null;
  /** What generate()'s runs use of the engine. */
  private readonly host: RunHost;

  private constructor(l: LoadedEngine) {
    this.rt = l.rt;
    this.model = l.model;
    this.tokenizer = l.tokenizer;
    this.info = l.info;
    this.source = l.source;
    this.seq = new Sequence(l.model);
    this.draft = l.draft;
    // (nothing registered: resolves at once)
    this.optimized = this.rt.upgrade().catch((e: unknown) => console.warn(`nibble: background kernel compile failed; keeping the load's kernels: ${(e as Error)?.message ?? String(e)}`));
    const host: CompletionHost = {
      generate: (p, o) => this.generate(p, o),
      chatTemplate: () => this.chatTemplate(),
      encode: (t, special) => this.tokenizer.encode(t, special),
      chatStopIds: () => this.chatStopIds(),
      modelName: l.info.model,
      fingerprint: `nibble-${l.info.quantKey}`,
    };
    this.chat = { completions: new ChatCompletions(host) };
    this.completions = new Completions(host);
    this.host = {
      model: l.model,
      tokenizer: l.tokenizer,
      seq: this.seq,
      loadMs: l.info.loadMs,
      check: () => this.check(),
      sampler: () => this.targetSampler(),
      speculator: () => {
        if (!this.draft) return null;
        this.speculator ??= new Speculator(this.model, this.draft.model, this.seq, this.targetSampler(), this.draft.tokens, this.draft.adaptive, this.draft.pipeline);
        return this.speculator;
      },
    };
  }

  /** Loads a model: a ModelSource, a base URL of a folder in HF layout, or a Hub id ("org/name"). */
  static async load(model: string | ModelSource, opts: LoadOptions = {}): Promise<Engine> {
    const engine = new Engine(await loadEngine(model, opts));
    // the device is shared by every engine of the page and outlives them: what it keeps (the lost
    // promise's reaction, the error listener) must not keep a disposed engine (its model, buffers,
    // bind groups) alive, so it holds the engine through a box that dispose() empties
    const device = engine.rt.device;
    const box: { engine: Engine | null } = { engine };
    device.lost.then((l) => {
      const e = box.engine;
      if (e && !e.disposed) e.lostError = new NibbleError('device-lost', `the GPU device was lost: ${l.reason} ${l.message}`);
    });
    const onError = (ev: Event) => {
      const e = box.engine;
      if (e && !e.lostError) e.lostError = new NibbleError('gpu-error', `GPU error: ${(ev as GPUUncapturedErrorEvent).error.message}`);
    };
    device.addEventListener?.('uncapturederror', onError);
    engine.detachDevice = () => {
      box.engine = null;
      device.removeEventListener?.('uncapturederror', onError);
    };
    return engine;
  }

  /** Set when the device was lost or reported an error; every later call rethrows it. */
  get error(): NibbleError | null {
    return this.lostError;
  }

  /**
   * Generates from a text prompt (or `promptIds`), streaming text as it is produced. Greedy by
   * default; `temperature`, `topK`, `topP`, `minP`, penalties, `logitBias` and `seed` select GPU
   * sampling (see SamplingOptions). With a draft model loaded, decoding is speculative.
   */
  generate(prompt: string, opts: GenerateOptions = {}): Generation {
    let request: Request | null = null;
    let invalid: unknown = null;
    try {
      this.checkUsable();
      request = validateGenerate(prompt, opts, this.model.cfg.vocabSize);
    } catch (e) {
      invalid = e;
    }
    const req = request;
    return streamGeneration(req ? (emit) => this.exclusive(() => runGeneration(this.host, req, emit)) : null, invalid);
  }

  /** The model's chat template; NibbleError('no-chat-template') if it has none. */
  async chatTemplate(): Promise<ChatTemplate> {
    this.template ??= (async () => {
      const cfg = this.tokenizer.config;
      let fallback: string | null = null;
      if (cfg.chat_template === undefined && (await this.source.exists('chat_template.jinja').catch(() => false))) {
        fallback = await this.source.text('chat_template.jinja');
      }
      return ChatTemplate.fromTokenizerConfig(cfg, fallback);
    })();
    const t = await this.template;
    if (!t) {
      throw new NibbleError(
        'no-chat-template',
        `${this.info.model} has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja): use generate() or completions.create() with a plain prompt`,
      );
    }
    return t;
  }

  /** EOS ids that end a chat turn: the model's EOS ids and the tokenizer's eos_token. */
  chatStopIds(): number[] {
    const ids = new Set(this.model.cfg.eosTokenIds);
    const eos = this.tokenizer.config.eos_token;
    const text = typeof eos === 'string' ? eos : (eos as { content?: string } | undefined)?.content;
    if (text) {
      const enc = this.tokenizer.encode(text, false);
      if (enc.length === 1) ids.add(enc[0]);
    }
    return [...ids];
  }

  /** Logits of the last `rows` positions after running `ids` from position 0 (tests, eval). */
  async logits(ids: number[], rows = 1): Promise<Float32Array[]> {
    this.checkUsable();
    return this.exclusive(async () => {
      this.check();
      const out = await sequenceLogits(this.seq, ids, rows);
      this.check();
      return out;
    });
  }

  /**
   * Perplexity of a token sequence under the model (teacher forcing; src/generate/eval.ts): the
   * mean negative log-likelihood (nats) of ids[1..] given their prefixes, and exp of it.
   */
  async perplexity(ids: number[]): Promise<{ perplexity: number; nll: number; tokens: number }> {
    this.checkUsable();
    return this.exclusive(async () => {
      this.check();
      return sequencePerplexity(this.seq, ids, () => this.check());
    });
  }

  /**
   * Frees every GPU buffer of the engine (model, draft, KV cache, samplers, runtime). A call that
   * is running or queued ends with an `aborted` NibbleError at its next step (the step already on
   * the GPU is waited for, never torn down under it); calls made afterwards fail with
   * `bad-argument`. The returned promise resolves once the memory is freed.
   */
  dispose(): Promise<void> {
    if (!this.disposing) {
      this.disposed = true;
      // the queue never rejects: the buffers go once the running call has stopped at a step boundary
      this.disposing = this.queue.then(() => this.release());
    }
    return this.disposing;
  }

  /** Drops the device's references to this engine (set by load). */
  private detachDevice: () => void = () => {};

  private async release(): Promise<void> {
    this.detachDevice();
    // token readbacks still in flight (a step queued ahead) finish before their buffers go
    await this.seq.settle();
    if (this.speculator) await Promise.all([this.speculator.targetSeq.settle(), this.speculator.draftSeq.settle()]);
    this.seq.destroy();
    this.speculator?.destroy();
    this.sampler?.destroy();
    this.model.destroy();
    this.draft?.model.destroy();
    this.rt.destroy();
  }

  /** Entry points: refuse new work on a disposed or broken engine. */
  private checkUsable(): void {
    if (this.disposed) throw new NibbleError('bad-argument', 'the engine was disposed: load a new one');
    if (this.lostError) throw this.lostError;
  }

  /** Inside a call (after every readback): stop when the engine was disposed meanwhile or broke. */
  private check(): void {
    if (this.disposed) throw new NibbleError('aborted', 'the engine was disposed while this call was running');
    if (this.lostError) throw this.lostError;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }

  /** The target's sampler (rows for speculative verification when a draft is loaded); made on first use. */
  private targetSampler(): GpuSampler {
    this.sampler ??= new GpuSampler(this.rt, this.model.cfg.vocabSize, this.draft ? this.draft.tokens + 1 : 1);
    return this.sampler;
  }
}
