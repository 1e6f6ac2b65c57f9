import { createGpuContext, type AdapterInfo, type GpuOptions } from '../gpu/context.ts';
import { NibbleError, show } from '../errors.ts';
import type { MatmulReduce } from '../kernels/linear.ts';
import { Runtime } from '../kernels/runtime.ts';
import { openCheckpoint } from '../loader/safetensors.ts';
import { checkTensors, parseConfig, type LlamaConfig } from '../model/config.ts';
import { LlamaModel, type LoadProgress, type LoadStats } from '../model/llama.ts';
import type { WeightCache } from '../cache/types.ts';
import { normalizePlan, planKey, type QuantOption, type QuantPlan } from '../quant/plan.ts';
import '../quant/formats.ts';
import { checkTokenIds, Sequence } from '../generate/sequence.ts';
import { plainDecode, type FinishReason, type LoopResult, type TokenSink } from '../generate/decode.ts';
import { GpuSampler } from '../generate/sampler.ts';
import { hasPenalties, isPlainArgmax, resolveSampling, type ResolvedSampling, type SamplingOptions } from '../generate/sampling.ts';
import { Speculator, type SpeculativeStats } from '../generate/speculative.ts';
import { StopStringMatcher } from '../generate/stop.ts';
import { TextTokenizer } from '../tokenizer.ts';
import type { ModelSource } from '../source/types.ts';
import { resolveSource, type SourceOptions } from './resolve.ts';
import { ChatTemplate } from './chat.ts';
import { ChatCompletions, Completions, type CompletionHost } from './openai.ts';
import { modelDims, preflight, type GpuMemoryEstimate, type PreflightModel } from './preflight.ts';
import { LoadProgressTracker } from './progress.ts';

export interface LoadOptions extends GpuOptions, SourceOptions {
  /** Weight format for all 2-D weights, or a plan with per-tensor overrides. Default 'f32'. */
  quant?: QuantOption;
  /** KV cache length in tokens (default min(max_position_embeddings, 4096)). */
  contextLength?: number;
  /** Most prompt tokens per batched pass (default 256). */
  maxBatch?: number;
  /** Bytes of one Range read of the checkpoint (default 16 MiB; always whole rows). */
  chunkBytes?: number;
  /** Range reads in flight at once (default 4). */
  parallelReads?: number;
  /** Most bytes the loader holds in host memory at once, whatever the model size (default 256 MiB). */
  hostMemoryBudget?: number;
  /** Verify the sha256 of weight files the source gives one for (Hub LFS ETags); default true. */
  verify?: boolean;
  /**
   * Cache of quantized weights: a WeightCache (e.g. DirCache in Node), true (the browser's store:
   * OPFS, else the Cache API) or false. Default: the browser's store for Hub ids, else none.
   */
  cache?: WeightCache | boolean;
  /** Rows of logits one pass may return (evaluation); default from a 64 MiB budget. */
  maxLogitRows?: number;
  /**
   * Matmul kernel variant: 'auto' (default: chosen for the adapter), or 'subgroup' / 'workgroup' /
   * 'row' (how a weight row is shared by lanes; every variant computes the same result).
   */
  matmul?: MatmulReduce | 'auto';
  /**
   * Most GPU bytes this load may use (weights, KV cache, activations, load-time staging; draft
   * included). Checked before anything is downloaded, like the adapter's per-buffer limits: a load
   * that needs more is a `gpu-limit` error naming the sizes and a format or context length that fits.
   */
  maxGpuBytes?: number;
  /**
   * Progress of every phase: 'metadata', 'cache', 'weights' (download), 'quantize' (the GPU built
   * the weights), 'compile' (pipelines), then 'done' when the model can generate (Engine.load
   * resolves right after). `fraction` (0..1) covers the whole load and never decreases.
   */
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /**
   * A draft model for speculative decoding, loaded onto the same GPU device. Without `model` the
   * target's own checkpoint is loaded again at `quant` (no second download when it is cached).
   */
  draft?: DraftOptions;
}

export interface DraftOptions {
  /** Another model sharing the tokenizer (a ModelSource, URL or Hub id); default: the target's. */
  model?: string | ModelSource;
  /** The draft's weight format (default 'nf4'). */
  quant?: QuantOption;
  /** Tokens the draft proposes per round, k (default 4); the most per round when adaptive. */
  tokens?: number;
  /**
   * Adapt k per round (default false): one more after a round that accepted everything, else the
   * accepted count + 1, between 1 and `tokens`.
   */
  adaptive?: boolean;
}

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 128; Infinity: until EOS or the end of the context). */
  maxNewTokens?: number;
  /** Prompt is token ids instead of text (no tokenization). */
  promptIds?: number[];
  /** Add the tokenizer's special tokens (BOS) to a text prompt (default true). */
  addSpecialTokens?: boolean;
  /** Keep going past EOS tokens (default false). */
  ignoreEos?: boolean;
  /** Token ids that end generation (default: the model's EOS ids from config + generation_config). */
  eosTokenIds?: number[];
  /**
   * Stop strings: generation ends when the text contains one. Matched across token boundaries;
   * neither the stop string nor anything after it is returned or streamed (text that could be the
   * start of one is held back until it is decided).
   */
  stop?: string | string[];
  /**
   * Use the draft model loaded with LoadOptions.draft (default: true when one is loaded). Requests
   * with penalties decode plainly (their counts would need rolling back with rejected drafts).
   */
  speculative?: boolean;
  signal?: AbortSignal;
}

export interface Timings {
  /** Model load, from Engine.load's call to ready (ms). */
  loadMs: number;
  /** Prompt pass until the first generated token id is on the CPU (ms). */
  prefillMs: number;
  /** The rest of generation (ms). */
  decodeMs: number;
  /** Decoded tokens after the first, per second of decodeMs. */
  decodeTokensPerSecond: number;
  /** Prompt tokens processed per second of prefillMs. */
  prefillTokensPerSecond: number;
}

export interface GenerateResult {
  /** Generated text (a matched stop string and what followed it are cut off). */
  text: string;
  promptTokenIds: number[];
  /** Generated ids (an EOS that stopped generation is not included; a stop string's tokens are). */
  tokenIds: number[];
  /**
   * 'stop': an EOS id or a stop string; 'length': maxNewTokens, or the context is full (prompt +
   * generated tokens never exceed contextLength); 'abort': the signal fired.
   */
  finishReason: FinishReason;
  /** The stop string that ended generation, if one did. */
  stopString?: string;
  /** Prompt tokens whose k/v were already in the cache (a chat's earlier turns): not recomputed. */
  cachedPromptTokens: number;
  /** The sampling seed used (random unless given). */
  seed: number;
  timings: Timings;
  /** With a draft model: acceptance statistics. */
  speculative?: SpeculativeStats;
}

/** A running generation: iterate it for text as it is produced; `result` resolves at the end. */
export interface Generation extends AsyncIterable<string> {
  readonly result: Promise<GenerateResult>;
}

export interface EngineInfo {
  /** The model's name: the id / URL it was loaded from. */
  model: string;
  adapter: AdapterInfo;
  features: { f16: boolean; subgroups: boolean; timestampQuery: boolean };
  config: LlamaConfig;
  quant: QuantPlan;
  quantKey: string;
  contextLength: number;
  /** GPU bytes of all weights: 2-D weights (codes + scales), norms and biases. */
  weightBytes: number;
  /** Bits per 2-D weight parameter on the GPU, scales included (norms and biases excluded). */
  bitsPerWeight: number;
  /** Parameters per weight format, e.g. { nf4: 1.2e9, int8: 2.6e8 }. */
  formats: Record<string, number>;
  /** Most checkpoint bytes the loader held in host memory at once. */
  loaderPeakHostBytes: number;
  /** The memory preflight's estimate of this load's GPU bytes (made before anything was downloaded). */
  gpuMemory: GpuMemoryEstimate;
  /** How the weights were loaded: cache hit/miss, bytes downloaded, requests, verified files, timings. */
  load: LoadStats | null;
  dispatchesPerToken: number;
  loadMs: number;
  /** Sampling settings from generation_config.json (when it asks for sampling; empty otherwise). */
  generationDefaults: SamplingOptions;
  /** The draft model of speculative decoding, when one was loaded. */
  draft?: { model: string; quantKey: string; weightBytes: number; bitsPerWeight: number; formats: Record<string, number>; tokens: number; adaptive: boolean };
}

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
  private readonly seq: Sequence;
  private readonly rt: Runtime;
  private readonly source: ModelSource;
  private readonly draftModel: LlamaModel | null;
  private readonly draftTokens: number;
  private readonly draftAdaptive: boolean;
  private sampler: GpuSampler | null = null;
  private speculator: Speculator | null = null;
  private template: Promise<ChatTemplate | null> | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private lostError: NibbleError | null = null;
  private disposed = false;
  private disposing: Promise<void> | null = null;

  private constructor(
    rt: Runtime,
    model: LlamaModel,
    tokenizer: TextTokenizer,
    info: EngineInfo,
    source: ModelSource,
    draft: { model: LlamaModel; tokens: number; adaptive: boolean } | null,
  ) {
    this.rt = rt;
    this.model = model;
    this.tokenizer = tokenizer;
    this.info = info;
    this.source = source;
    this.seq = new Sequence(model);
    this.draftModel = draft?.model ?? null;
    this.draftTokens = draft?.tokens ?? 0;
    this.draftAdaptive = draft?.adaptive ?? false;
    const host: CompletionHost = {
      generate: (p, o) => this.generate(p, o),
      chatTemplate: () => this.chatTemplate(),
      encode: (t, special) => this.tokenizer.encode(t, special),
      chatStopIds: () => this.chatStopIds(),
      modelName: info.model,
      fingerprint: `nibble-${info.quantKey}`,
    };
    this.chat = { completions: new ChatCompletions(host) };
    this.completions = new Completions(host);
  }

  /** Loads a model: a ModelSource, a base URL of a folder in HF layout, or a Hub id ("org/name"). */
  static async load(model: string | ModelSource, opts: LoadOptions = {}): Promise<Engine> {
    const t0 = performance.now();
    const plan = normalizePlan(opts.quant);
    const draftPlan = opts.draft ? normalizePlan(opts.draft.quant ?? 'nf4') : null;
    const draftTokens = opts.draft?.tokens ?? 4;
    if (opts.draft && (!Number.isInteger(draftTokens) || draftTokens < 1 || draftTokens > 32)) {
      throw new NibbleError('bad-argument', `draft tokens must be an integer in 1..32, got ${opts.draft.tokens}`);
    }
    if (opts.maxGpuBytes !== undefined && (typeof opts.maxGpuBytes !== 'number' || !(opts.maxGpuBytes > 0) || !Number.isFinite(opts.maxGpuBytes))) {
      throw new NibbleError('bad-argument', `maxGpuBytes must be a positive number of bytes, got ${show(opts.maxGpuBytes)}`);
    }
    const progress = new LoadProgressTracker(opts.onProgress, opts.draft ? 2 : 1);
    const source = typeof model === 'string' ? resolveSource(model, opts) : model;
    const configText = await source.text('config.json', opts.signal);
    let genCfg: unknown = undefined;
    if (await source.exists('generation_config.json', opts.signal)) {
      try {
        genCfg = JSON.parse(await source.text('generation_config.json', opts.signal));
      } catch (e) {
        throw new NibbleError('bad-config', `generation_config.json in ${source.description} is not valid JSON`, { cause: e });
      }
    }
    let cfgJson: unknown;
    try {
      cfgJson = JSON.parse(configText);
    } catch (e) {
      throw new NibbleError('bad-config', `config.json in ${source.description} is not valid JSON: ${(e as Error).message}`, { cause: e });
    }
    const cfg = parseConfig(cfgJson, genCfg);
    const [tokenizer, table] = await Promise.all([TextTokenizer.load(source, opts.signal), openCheckpoint(source, opts.signal)]);
    checkTensors(cfg, table.tensors);

    const ctx = await createGpuContext(opts);
    // memory preflight: every buffer of the load sized before a weight byte is requested
    const draftCheckpoint = opts.draft && draftPlan ? await openDraft(opts, opts.draft, source, cfg, table.tensors) : null;
    const sized: PreflightModel[] = [
      { cfg, tensors: table.tensors, plan, contextLength: opts.contextLength, maxBatch: opts.maxBatch, maxLogitRows: opts.maxLogitRows, samplerRows: opts.draft ? draftTokens + 1 : 1, draftTokens: opts.draft ? draftTokens : 0 },
    ];
    if (draftCheckpoint && draftPlan) {
      // the draft's KV cache has the target's context length
      sized.push({ cfg: draftCheckpoint.cfg, tensors: draftCheckpoint.tensors, plan: draftPlan, contextLength: modelDims(cfg, opts).ctx, maxBatch: opts.maxBatch, maxLogitRows: 1, samplerRows: 0 });
    }
    const gpuMemory = preflight(sized, opts, {
      maxBufferSize: ctx.limits.maxBufferSize,
      maxStorageBufferBindingSize: ctx.limits.maxStorageBufferBindingSize,
      adapter: ctx.adapterInfo.summary,
      maxGpuBytes: opts.maxGpuBytes,
    });
    const rt = new Runtime(ctx);
    const device = ctx.device;
    progress.attach(rt);
    let m: LlamaModel | undefined;
    let draft: { model: LlamaModel; name: string } | null = null;
    try {
      device.pushErrorScope('out-of-memory');
      device.pushErrorScope('validation');
      try {
        m = await LlamaModel.load(rt, cfg, source, table.tensors, plan, {
          ...streamingOptions(opts),
          onProgress: progress.loader(0),
          contextLength: opts.contextLength,
          maxLogitRows: opts.maxLogitRows,
          verifyRows: opts.draft ? draftTokens + 1 : 0,
          deferCompile: true, // its pipelines compile while a draft's weights load
        });
        if (draftCheckpoint && draftPlan) draft = await loadDraft(rt, opts, draftPlan, draftCheckpoint, m.ctx, progress.loader(1));
        // every pipeline of the graphs is requested: the compile phase's total is known
        progress.seal();
        await rt.ready();
      } finally {
        const validation = await device.popErrorScope();
        const oom = await device.popErrorScope();
        const err = oom ?? validation;
        if (err) throw new NibbleError('gpu-error', `GPU error while loading the model: ${err.message}`);
      }
      if (draft) {
        const rows = Math.min(m.maxLogitRows, m.maxBatch);
        if (draftTokens + 1 > rows) {
          throw new NibbleError('bad-argument', `draft tokens ${draftTokens} needs ${draftTokens + 1} logit rows per pass; this load allows ${rows} (maxLogitRows / maxBatch)`);
        }
        if (draft.model.cfg.vocabSize !== cfg.vocabSize) {
          throw new NibbleError('bad-argument', `the draft's vocabulary (${draft.model.cfg.vocabSize}) differs from the target's (${cfg.vocabSize})`);
        }
      }
      // the GPU quantizers and the pipelines' compilation are queued, not finished, when the
      // loaders return: resolve (and count loadMs) only once the model can generate
      await device.queue.onSubmittedWorkDone();
      progress.done();
    } catch (e) {
      // a failed load leaves nothing allocated: the models made so far and the runtime's buffers
      m?.destroy();
      draft?.model.destroy();
      rt.step.destroy();
      rt.dummyBuffer.destroy();
      throw e;
    } finally {
      progress.detach();
    }
    const loadMs = performance.now() - t0;
    const info: EngineInfo = {
      model: typeof model === 'string' ? model : source.description,
      adapter: ctx.adapterInfo,
      features: ctx.features,
      config: cfg,
      quant: plan,
      quantKey: planKey(plan),
      contextLength: m.ctx,
      weightBytes: m.weightBytes,
      bitsPerWeight: (m.matrixBytes * 8) / m.weightCount,
      formats: m.formats,
      loaderPeakHostBytes: m.hostMemory.peak,
      gpuMemory,
      load: m.loadStats,
      dispatchesPerToken: m.dispatchesPerToken,
      loadMs,
      generationDefaults: generationDefaults(genCfg),
      ...(draft
        ? {
            draft: {
              model: draft.name,
              quantKey: planKey(draftPlan!),
              weightBytes: draft.model.weightBytes,
              bitsPerWeight: (draft.model.matrixBytes * 8) / draft.model.weightCount,
              formats: draft.model.formats,
              tokens: draftTokens,
              adaptive: !!opts.draft?.adaptive,
            },
          }
        : {}),
    };
    const engine = new Engine(rt, m, tokenizer, info, source, draft ? { model: draft.model, tokens: draftTokens, adaptive: !!opts.draft?.adaptive } : null);
    // the device is shared by every engine of the page and outlives them: what it keeps (the lost
    // promise's reaction, the error listener) must not keep a disposed engine (its model, buffers,
    // bind groups) alive, so it holds the engine through a box that dispose() empties
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
    const chunks: string[] = [];
    let wake: (() => void) | null = null;
    let done = false;
    let failure: unknown = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    const started: Promise<GenerateResult> = request
      ? this.exclusive(() =>
          this.run(request, (t) => {
            chunks.push(t);
            notify();
          }),
        )
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
    checkTokenIds(ids, 'ids', this.model.cfg.vocabSize);
    if (!Number.isInteger(rows) || rows < 1) throw new NibbleError('bad-argument', `rows must be a positive integer, got ${show(rows)}`);
    return this.exclusive(async () => {
      this.check();
      const m = this.model;
      if (rows > m.maxLogitRows) throw new NibbleError('bad-argument', `at most ${m.maxLogitRows} logit rows per pass`);
      this.seq.reset();
      // all but the last chunk without the head, then the last chunk with `rows` logit rows
      const V = m.cfg.vocabSize;
      const splitAt = Math.max(0, ids.length - Math.min(ids.length, m.maxBatch));
      if (splitAt > 0) this.seq.prefill(ids.slice(0, splitAt), null);
      const tail = ids.slice(splitAt);
      if (rows > tail.length) throw new NibbleError('bad-argument', `asked for ${rows} logit rows of ${tail.length} tokens`);
      m.rt.device.queue.writeBuffer(m.tokens, 0, new Uint32Array(tail));
      m.rt.run(m.ops({ T: tail.length, pos0: splitAt, headRows: rows }, { head: true, argmax: false }), {
        T: tail.length,
        pos0: splitAt,
        headRows: rows,
      });
      this.seq.cached = ids.slice();
      const buf = new Float32Array(await m.rt.read(m.logits, 0, rows * V * 4));
      const out: Float32Array[] = [];
      for (let r = 0; r < rows; r++) out.push(buf.slice(r * V, (r + 1) * V));
      return out;
    });
  }

  /**
   * Perplexity of a token sequence under the model (teacher forcing): batched passes of up to
   * maxLogitRows tokens over a continuing KV cache, each producing logits for all its rows;
   * log-softmax on the CPU in float64. Returns the mean negative log-likelihood (nats) of
   * ids[1..] given their prefixes, and exp of it.
   */
  async perplexity(ids: number[]): Promise<{ perplexity: number; nll: number; tokens: number }> {
    this.checkUsable();
    checkTokenIds(ids, 'ids', this.model.cfg.vocabSize);
    return this.exclusive(async () => {
      this.check();
      const m = this.model;
      if (ids.length < 2) throw new NibbleError('bad-argument', 'perplexity needs at least 2 tokens');
      if (ids.length > m.ctx) {
        throw new NibbleError('context-overflow', `the text has ${ids.length} tokens but the context holds ${m.ctx}; use a longer contextLength`);
      }
      const V = m.cfg.vocabSize;
      const step = Math.min(m.maxLogitRows, m.maxBatch);
      this.seq.reset();
      let nll = 0;
      let count = 0;
      for (let p = 0; p < ids.length - 1; p += step) {
        const chunk = ids.slice(p, Math.min(ids.length - 1, p + step));
        const T = chunk.length;
        m.rt.device.queue.writeBuffer(m.tokens, 0, new Uint32Array(chunk));
        const s = { T, pos0: p, headRows: T };
        m.rt.run(m.ops(s, { head: true, argmax: false }), s);
        const logits = new Float32Array(await m.rt.read(m.logits, 0, T * V * 4));
        for (let t = 0; t < T; t++) {
          const row = logits.subarray(t * V, (t + 1) * V);
          let mx = -Infinity;
          for (let v = 0; v < V; v++) if (row[v] > mx) mx = row[v];
          let sum = 0;
          for (let v = 0; v < V; v++) sum += Math.exp(row[v] - mx);
          const target = ids[p + t + 1];
          nll += Math.log(sum) + mx - row[target];
          count++;
        }
      }
      this.seq.cached = ids.slice(0, -1);
      if (this.lostError) throw this.lostError;
      const mean = nll / count;
      return { perplexity: Math.exp(mean), nll: mean, tokens: count };
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
    this.draftModel?.destroy();
    // the runtime's own buffers: the step uniform and the placeholder of optional bindings
    this.rt.step.destroy();
    this.rt.dummyBuffer.destroy();
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
    this.sampler ??= new GpuSampler(this.rt, this.model.cfg.vocabSize, this.draftModel ? this.draftTokens + 1 : 1);
    return this.sampler;
  }

  private async run(req: Request, emit: (text: string) => void): Promise<GenerateResult> {
    this.check();
    const m = this.model;
    const { opts, maxNew, stops } = req;
    const ids = req.promptIds ?? this.tokenizer.encode(req.prompt, opts.addSpecialTokens ?? true);
    if (ids.length === 0) {
      throw new NibbleError('bad-argument', 'the prompt has no tokens (an empty text without special tokens): give some text or promptIds');
    }
    if (ids.length > m.ctx) {
      throw new NibbleError('context-overflow', `the prompt has ${ids.length} tokens but the context holds ${m.ctx}; use a longer contextLength`);
    }
    const sampling = req.sampling;
    const eos = new Set(opts.ignoreEos ? [] : (opts.eosTokenIds ?? m.cfg.eosTokenIds));
    const decoder = this.tokenizer.streamDecoder(ids);
    const matcher = new StopStringMatcher(stops);
    const out: number[] = [];
    const sink: TokenSink = (id) => {
      if (eos.has(id)) return 'stop';
      out.push(id);
      const text = matcher.push(decoder.push(id));
      if (text) emit(text);
      if (matcher.matched !== null) return 'stop';
      return out.length >= maxNew ? 'length' : null;
    };
    const control = { maxNewTokens: maxNew, signal: opts.signal, check: () => this.check() };
    const speculative = this.draftModel !== null && (opts.speculative ?? true) && !hasPenalties(sampling);
    let finishReason: FinishReason = 'length';
    let stats: SpeculativeStats | undefined;
    const t0 = performance.now();
    let tFirst = t0;
    let cached = 0;
    // prompt + generated tokens never exceed the context: a prompt that fills it leaves no room
    if (ids.length >= m.ctx) finishReason = 'length';
    else if (maxNew > 0) {
      let r: LoopResult;
      const plainPick = isPlainArgmax(sampling);
      if (!plainPick || speculative) this.targetSampler().configure(sampling, ids);
      if (speculative) {
        this.speculator ??= new Speculator(m, this.draftModel!, this.seq, this.targetSampler(), this.draftTokens, this.draftAdaptive);
        const sr = await this.speculator.run(ids, sampling, sink, control);
        r = sr;
        stats = sr.stats;
      } else {
        const pick = plainPick ? undefined : this.targetSampler().op('decode', m.logits, m.tokens);
        r = await plainDecode(this.seq, ids, pick, sink, control);
      }
      cached = this.seq.reused;
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
      seed: sampling.seed,
      timings: {
        loadMs: this.info.loadMs,
        prefillMs,
        decodeMs,
        decodeTokensPerSecond: n > 1 && decodeMs > 0 ? ((n - 1) * 1000) / decodeMs : 0,
        prefillTokensPerSecond: prefillMs > 0 ? ((ids.length - cached) * 1000) / prefillMs : 0,
      },
      ...(stats ? { speculative: stats } : {}),
    };
  }
}

/** The load options a target and its draft share (batching, streaming, cache, abort, progress). */
function streamingOptions(opts: LoadOptions) {
  return {
    maxBatch: opts.maxBatch,
    matmul: opts.matmul,
    chunkBytes: opts.chunkBytes,
    parallelReads: opts.parallelReads,
    hostMemoryBudget: opts.hostMemoryBudget,
    verify: opts.verify,
    cache: opts.cache,
    signal: opts.signal,
    onProgress: opts.onProgress,
  };
}

interface DraftCheckpoint {
  source: ModelSource;
  cfg: LlamaConfig;
  tensors: Awaited<ReturnType<typeof openCheckpoint>>['tensors'];
  name: string;
}

/** The draft's config and tensor table (the target's own for a self-draft): read before the preflight. */
async function openDraft(
  opts: LoadOptions,
  d: DraftOptions,
  targetSource: ModelSource,
  targetCfg: LlamaConfig,
  targetTensors: DraftCheckpoint['tensors'],
): Promise<DraftCheckpoint> {
  if (d.model === undefined) return { source: targetSource, cfg: targetCfg, tensors: targetTensors, name: 'self' };
  const source = typeof d.model === 'string' ? resolveSource(d.model, opts) : d.model;
  const name = typeof d.model === 'string' ? d.model : source.description;
  let json: unknown;
  try {
    json = JSON.parse(await source.text('config.json', opts.signal));
  } catch (e) {
    if (e instanceof NibbleError) throw e;
    throw new NibbleError('bad-config', `the draft's config.json in ${source.description} is not valid JSON`, { cause: e });
  }
  const cfg = parseConfig(json);
  const tensors = (await openCheckpoint(source, opts.signal)).tensors;
  checkTensors(cfg, tensors);
  return { source, cfg, tensors, name };
}

/** Loads the draft model onto the target's Runtime (same GPUDevice). */
async function loadDraft(
  rt: Runtime,
  opts: LoadOptions,
  plan: QuantPlan,
  d: DraftCheckpoint,
  ctx: number,
  onProgress: (p: LoadProgress) => void,
): Promise<{ model: LlamaModel; name: string }> {
  const model = await LlamaModel.load(rt, d.cfg, d.source, d.tensors, plan, {
    ...streamingOptions(opts),
    onProgress,
    contextLength: ctx,
    maxLogitRows: 1,
    verifyRows: 2,
    deferCompile: true,
  });
  return { model, name: d.name };
}

/** generation_config.json's sampling settings, when it samples (do_sample true). */
function generationDefaults(gen: unknown): SamplingOptions {
  if (!gen || typeof gen !== 'object') return {};
  const g = gen as Record<string, unknown>;
  if (g.do_sample !== true) return {};
  const num = (k: string) => (typeof g[k] === 'number' && Number.isFinite(g[k]) ? (g[k] as number) : undefined);
  const o: SamplingOptions = { temperature: num('temperature') ?? 1 };
  if (num('top_k') !== undefined) o.topK = num('top_k');
  if (num('top_p') !== undefined) o.topP = num('top_p');
  if (num('min_p') !== undefined) o.minP = num('min_p');
  if (num('repetition_penalty') !== undefined) o.repetitionPenalty = num('repetition_penalty');
  return o;
}

/** A generate() call whose arguments were checked. */
interface Request {
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
function validateGenerate(prompt: unknown, opts: unknown, vocabSize: number): Request {
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
