import { createGpuContext, type AdapterInfo, type GpuOptions } from '../gpu/context.ts';
import { NibbleError } from '../errors.ts';
import { Runtime } from '../kernels/runtime.ts';
import { openCheckpoint } from '../loader/safetensors.ts';
import { checkTensors, parseConfig, type LlamaConfig } from '../model/config.ts';
import { LlamaModel, type LoadProgress } from '../model/llama.ts';
import { normalizePlan, planKey, type QuantOption, type QuantPlan } from '../quant/plan.ts';
import '../quant/formats.ts';
import { Sequence } from '../generate/sequence.ts';
import { TextTokenizer } from '../tokenizer.ts';
import type { ModelSource } from '../source/types.ts';
import { resolveSource, type SourceOptions } from './resolve.ts';

export interface LoadOptions extends GpuOptions, SourceOptions {
  /** Weight format for all 2-D weights, or a plan with per-tensor overrides. Default 'f32'. */
  quant?: QuantOption;
  /** KV cache length in tokens (default min(max_position_embeddings, 4096)). */
  contextLength?: number;
  /** Most prompt tokens per batched pass (default 256). */
  maxBatch?: number;
  /** Bytes of one streamed checkpoint read (default 8 MiB): the loader's host-memory bound. */
  chunkBytes?: number;
  /** Rows of logits one pass may return (evaluation); default from a 64 MiB budget. */
  maxLogitRows?: number;
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
}

export interface GenerateOptions {
  /** Most tokens to generate (default 128). */
  maxNewTokens?: number;
  /** Prompt is token ids instead of text (no tokenization). */
  promptIds?: number[];
  /** Add the tokenizer's special tokens (BOS) to a text prompt (default true). */
  addSpecialTokens?: boolean;
  /** Keep going past EOS tokens (default false). */
  ignoreEos?: boolean;
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
  text: string;
  promptTokenIds: number[];
  /** Generated ids (an EOS that stopped generation is not included). */
  tokenIds: number[];
  finishReason: 'stop' | 'length' | 'abort';
  timings: Timings;
}

/** A running generation: iterate it for text as it is produced; `result` resolves at the end. */
export interface Generation extends AsyncIterable<string> {
  readonly result: Promise<GenerateResult>;
}

export interface EngineInfo {
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
  dispatchesPerToken: number;
  loadMs: number;
}

/**
 * The nibble engine: one model on one GPU.
 *
 *   const engine = await Engine.load('https://host/models/stories260K');
 *   for await (const text of engine.generate('Once upon a time', { maxNewTokens: 64 })) show(text);
 */
export class Engine {
  readonly tokenizer: TextTokenizer;
  readonly model: LlamaModel;
  readonly info: EngineInfo;
  private readonly seq: Sequence;
  private readonly rt: Runtime;
  private queue: Promise<unknown> = Promise.resolve();
  private lostError: NibbleError | null = null;
  private disposed = false;

  private constructor(rt: Runtime, model: LlamaModel, tokenizer: TextTokenizer, info: EngineInfo) {
    this.rt = rt;
    this.model = model;
    this.tokenizer = tokenizer;
    this.info = info;
    this.seq = new Sequence(model);
  }

  /** Loads a model: a ModelSource, a base URL of a folder in HF layout, or a Hub id ("org/name"). */
  static async load(model: string | ModelSource, opts: LoadOptions = {}): Promise<Engine> {
    const t0 = performance.now();
    const plan = normalizePlan(opts.quant);
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
    const rt = new Runtime(ctx);
    const device = ctx.device;
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let m: LlamaModel;
    try {
      m = await LlamaModel.load(rt, cfg, source, table.tensors, plan, {
        contextLength: opts.contextLength,
        maxBatch: opts.maxBatch,
        maxLogitRows: opts.maxLogitRows,
        chunkBytes: opts.chunkBytes,
        signal: opts.signal,
        onProgress: opts.onProgress,
      });
    } finally {
      const validation = await device.popErrorScope();
      const oom = await device.popErrorScope();
      const err = oom ?? validation;
      if (err) throw new NibbleError('gpu-error', `GPU error while loading the model: ${err.message}`);
    }
    const loadMs = performance.now() - t0;
    const info: EngineInfo = {
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
      dispatchesPerToken: m.dispatchesPerToken,
      loadMs,
    };
    const engine = new Engine(rt, m, tokenizer, info);
    device.lost.then((l) => {
      if (!engine.disposed) engine.lostError = new NibbleError('device-lost', `the GPU device was lost: ${l.reason} ${l.message}`);
    });
    device.addEventListener?.('uncapturederror', (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      if (!engine.lostError) engine.lostError = new NibbleError('gpu-error', `GPU error: ${e.message}`);
    });
    return engine;
  }

  /** Set when the device was lost or reported an error; every later call rethrows it. */
  get error(): NibbleError | null {
    return this.lostError;
  }

  /** Generates greedily from a text prompt (or `promptIds`), streaming text as it is produced. */
  generate(prompt: string, opts: GenerateOptions = {}): Generation {
    const chunks: string[] = [];
    let wake: (() => void) | null = null;
    let done = false;
    let failure: unknown = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    const result = this.exclusive(() =>
      this.runGreedy(prompt, opts, (t) => {
        chunks.push(t);
        notify();
      }),
    ).then(
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

  /** Logits of the last `rows` positions after running `ids` from position 0 (tests, eval). */
  async logits(ids: number[], rows = 1): Promise<Float32Array[]> {
    return this.exclusive(async () => {
      this.check();
      const m = this.model;
      if (rows > m.maxLogitRows) throw new NibbleError('bad-argument', `at most ${m.maxLogitRows} logit rows per pass`);
      this.seq.reset();
      // all but the last chunk without the head, then the last chunk with `rows` logit rows
      const V = m.cfg.vocabSize;
      const splitAt = Math.max(0, ids.length - Math.min(ids.length, m.maxBatch));
      if (splitAt > 0) this.seq.prefill(ids.slice(0, splitAt), { argmax: false });
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

  /** Frees the GPU memory of the model. */
  dispose(): void {
    this.disposed = true;
    this.seq.destroy();
    this.model.destroy();
  }

  private check(): void {
    if (this.disposed) throw new NibbleError('bad-argument', 'the engine was disposed');
    if (this.lostError) throw this.lostError;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }

  private async runGreedy(prompt: string, opts: GenerateOptions, emit: (text: string) => void): Promise<GenerateResult> {
    this.check();
    const m = this.model;
    const ids = opts.promptIds ?? this.tokenizer.encode(prompt, opts.addSpecialTokens ?? true);
    const maxNew = opts.maxNewTokens ?? 128;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new NibbleError('bad-argument', `maxNewTokens must be a non-negative integer, got ${maxNew}`);
    const eos = new Set(opts.ignoreEos ? [] : m.cfg.eosTokenIds);
    const decoder = this.tokenizer.streamDecoder(ids);
    const out: number[] = [];
    let finishReason: GenerateResult['finishReason'] = 'length';
    const t0 = performance.now();
    let tFirst = t0;
    if (maxNew > 0) {
      let pending: Promise<number> | null = this.seq.prefill(ids);
      while (pending) {
        // queue the next step before reading this one's id (the GPU reads it from tokens[0])
        const room = this.seq.cached.length + 1 < m.ctx;
        const wantMore = out.length + 1 < maxNew && room;
        const following: Promise<number> | null = wantMore ? this.seq.decodeStep() : null;
        const id = await pending;
        if (out.length === 0) tFirst = performance.now();
        if (this.lostError) throw this.lostError;
        if (opts.signal?.aborted) {
          finishReason = 'abort';
          following?.catch(() => {});
          await this.seq.dropPending();
          break;
        }
        if (eos.has(id)) {
          finishReason = 'stop';
          following?.catch(() => {});
          await this.seq.dropPending();
          break;
        }
        out.push(id);
        this.seq.accept(id);
        const text = decoder.push(id);
        if (text) emit(text);
        if (!following) {
          finishReason = 'length';
          break;
        }
        pending = following;
      }
      const rest = decoder.flush();
      if (rest) emit(rest);
    }
    const t1 = performance.now();
    const prefillMs = tFirst - t0;
    const decodeMs = t1 - tFirst;
    return {
      text: decoder.text,
      promptTokenIds: ids,
      tokenIds: out,
      finishReason,
      timings: {
        loadMs: this.info.loadMs,
        prefillMs,
        decodeMs,
        decodeTokensPerSecond: out.length > 1 && decodeMs > 0 ? ((out.length - 1) * 1000) / decodeMs : 0,
        prefillTokensPerSecond: prefillMs > 0 ? (ids.length * 1000) / prefillMs : 0,
      },
    };
  }
}
