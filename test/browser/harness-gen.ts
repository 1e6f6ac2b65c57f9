/**
 * Harness functions of the generation tests (sampling kernels, speculative decoding, chat), spread
 * into the harness page's API by harness.ts. Plain JSON in, plain JSON out.
 */
import { createGpuContext, type GpuContext } from '../../src/gpu/context.ts';
import { Runtime, type Op, type StepShape } from '../../src/kernels/runtime.ts';
import { sampleOp, specAcceptOp } from '../../src/kernels/sample.ts';
import { GpuSampler } from '../../src/generate/sampler.ts';
import { resolveSampling, type SamplingOptions } from '../../src/generate/sampling.ts';
import { formatNames } from '../../src/quant/format.ts';
import '../../src/quant/formats.ts';
import { Engine, type GenerateOptions, type GenerateResult, type LoadOptions } from '../../src/api/engine.ts';
import type { SpeculativeStats } from '../../src/generate/speculative.ts';
import type { ChatCompletionRequest, CompletionRequest } from '../../src/api/openai.ts';

let ctxPromise: Promise<GpuContext> | null = null;
let runtime: Runtime | null = null;
/** The page's shared Runtime (one device) for harness functions that build ops themselves. */
export async function rt(): Promise<Runtime> {
  ctxPromise ??= createGpuContext();
  runtime ??= new Runtime(await ctxPromise);
  return runtime;
}

/** Runs f inside a validation error scope: a GPU validation error becomes an exception. */
export async function scoped<T>(r: Runtime, f: () => Promise<T>): Promise<T> {
  r.device.pushErrorScope('validation');
  const out = await f();
  const err = await r.device.popErrorScope();
  if (err) throw new Error(`GPU validation error: ${err.message}`);
  return out;
}

/**
 * Kernel timing: runs `warm` once (compiles, first touch), then `timed` (one submission) `rounds`
 * times; the best round's ms per rep.
 */
export async function bestMsPerRep(r: Runtime, warm: readonly Op[], timed: readonly Op[], shape: StepShape, reps: number, rounds = 2): Promise<number> {
  await r.ready();
  r.run(warm, shape);
  await r.device.queue.onSubmittedWorkDone();
  let best = Infinity;
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    r.run(timed, shape);
    await r.device.queue.onSubmittedWorkDone();
    best = Math.min(best, (performance.now() - t0) / reps);
  }
  return best;
}

const engines = new Map<string, Engine>();

type ErrorData = { code: string | null; message: string };
/** One generation (fields other than pieces / error are absent when error is set). */
export type RunOut = Omit<GenerateResult, 'speculative'> & { speculative: SpeculativeStats; pieces: string[]; wallMs: number; error: ErrorData | null };

export const genApi = {
  /** Weight formats registered in the page. */
  async formats() {
    return formatNames();
  },

  /**
   * Draws `rows × reps` tokens with sample.wgsl from one logits row repeated `rows` times (row r of
   * repetition i is drawn at position pos0 + i·rows + r + 1), with `settings`. `counts` seeds the
   * penalty counts. Also returns the kept distribution of the row (PROBS) and the argmax.
   */
  async sampleDraws(a: { logits: number[]; rows: number; reps: number; settings: SamplingOptions; pos0?: number; counts?: number[] }) {
    const r = await rt();
    const V = a.logits.length;
    const s = resolveSampling(a.settings, V);
    const sampler = new GpuSampler(r, V, a.rows);
    const logits = r.buffer(a.rows * V * 4, 'test_logits');
    const all = new Float32Array(a.rows * V);
    for (let i = 0; i < a.rows; i++) all.set(a.logits, i * V);
    r.device.queue.writeBuffer(logits, 0, all);
    const out = r.buffer(a.rows * 4, 'test_out');
    // counts[v] occurrences of v → a context with those tokens
    const context: number[] = [];
    (a.counts ?? []).forEach((c, v) => {
      for (let i = 0; i < c; i++) context.push(v);
    });
    sampler.configure(s, context);
    const base = { params: sampler.params, logits, out, scratch: sampler.scratch, counts: sampler.counts, bias: sampler.bias, V, updateCounts: false };
    const draw = sampleOp(r, { ...base, probs: false, sample: true, rows: (st) => st.headRows });
    const probs = sampleOp(r, { ...base, probs: true, sample: false, rows: () => 1 });
    try {
      return await scoped(r, async () => {
        const tokens: number[] = [];
        const pos0 = a.pos0 ?? 0;
        for (let i = 0; i < a.reps; i++) {
          r.run([draw], { T: a.rows, pos0: pos0 + i * a.rows, headRows: a.rows });
          tokens.push(...new Uint32Array(await r.read(out, 0, a.rows * 4)));
        }
        r.run([probs], { T: 1, pos0: 0, headRows: 1 });
        const kept = Array.from(new Float32Array(await r.read(sampler.scratch, 0, V * 4)));
        const argmax = new Uint32Array(await r.read(out, 0, 4))[0];
        return { tokens, kept, argmax, seed: s.seed };
      });
    } finally {
      sampler.destroy();
      logits.destroy();
      out.destroy();
    }
  },

  /**
   * `trials` independent rounds of speculative sampling with k = 1 on fixed logits: the draft
   * draws d from q (sample.wgsl, multi-row), then spec_accept.wgsl accepts it or draws from the
   * residual, each trial with its own seed (params bound at a per-trial offset). Returns the
   * drafted ids, the accepted counts and the next tokens, and p, q as the kernels computed them.
   */
  async specTrials(a: { target: number[]; draft: number[]; trials: number; settings: SamplingOptions }) {
    const r = await rt();
    const V = a.target.length;
    const s = resolveSampling(a.settings, V);
    const n = a.trials;
    const dev = r.device;
    // p and q (kept distributions) and the drafted tokens
    const tS = new GpuSampler(r, V, 1);
    const dS = new GpuSampler(r, V, n);
    tS.configure(s, []);
    dS.configure(s, []);
    const tl = r.upload(new Float32Array(a.target), 'spec_target_logits');
    const dl = r.buffer(n * V * 4, 'spec_draft_logits');
    const rep = new Float32Array(n * V);
    for (let i = 0; i < n; i++) rep.set(a.draft, i * V);
    dev.queue.writeBuffer(dl, 0, rep);
    const picks = r.buffer(n * 4, 'spec_picks');
    const common = { counts: tS.counts, bias: tS.bias, V, updateCounts: false };
    const pOp = sampleOp(r, { ...common, params: tS.params, logits: tl, out: picks, scratch: tS.scratch, probs: true, sample: false, rows: () => 1 });
    const dOp = sampleOp(r, { ...common, params: dS.params, counts: dS.counts, bias: dS.bias, logits: dl, out: picks, scratch: dS.scratch, probs: true, sample: true, rows: (st) => st.headRows });
    const stride = 256; // storage / uniform offset alignment
    const tokens = r.buffer(n * stride, 'spec_tokens');
    const outs = r.buffer(n * stride, 'spec_outs');
    const params = dev.createBuffer({ size: n * stride, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    const pRows = r.buffer(2 * V * 4, 'spec_p'); // row 0: p at the drafted position, row 1: p after it
    const qRow = r.buffer(V * 4, 'spec_q');
    try {
      return await scoped(r, async () => {
        r.run([pOp], { T: 1, pos0: 0, headRows: 1 });
        const enc0 = dev.createCommandEncoder();
        enc0.copyBufferToBuffer(tS.scratch, 0, pRows, 0, V * 4);
        enc0.copyBufferToBuffer(tS.scratch, 0, pRows, V * 4, V * 4);
        dev.queue.submit([enc0.finish()]);
        r.run([dOp], { T: n, pos0: 1_000_000, headRows: n });
        const drafts = Array.from(new Uint32Array(await r.read(picks, 0, n * 4)));
        const enc1 = dev.createCommandEncoder();
        enc1.copyBufferToBuffer(dS.scratch, 0, qRow, 0, V * 4);
        dev.queue.submit([enc1.finish()]);
        // per-trial token pairs [x, d] and params (seed = settings.seed + 1 + i)
        const tk = new Uint32Array((n * stride) / 4);
        const pb = new ArrayBuffer(n * stride);
        const base = new Uint8Array(await r.read(tS.params, 0, 48));
        for (let i = 0; i < n; i++) {
          tk[(i * stride) / 4 + 1] = drafts[i];
          new Uint8Array(pb, i * stride, 48).set(base);
          new Uint32Array(pb, i * stride + 28, 1)[0] = (s.seed + 1 + i) >>> 0;
        }
        dev.queue.writeBuffer(tokens, 0, tk);
        dev.queue.writeBuffer(params, 0, pb);
        const acc = specAcceptOp(r, { params: tS.params, p: pRows, q: qRow, tokens, out: outs, V });
        const layout = acc.pipeline.getBindGroupLayout(0);
        r.setStep({ T: 2, pos0: 7, headRows: 2 });
        const enc = dev.createCommandEncoder();
        const pass = enc.beginComputePass();
        pass.setPipeline(acc.pipeline);
        for (let i = 0; i < n; i++) {
          const bg = dev.createBindGroup({
            layout,
            entries: [
              { binding: 0, resource: { buffer: r.step } },
              { binding: 1, resource: { buffer: params, offset: i * stride, size: 48 } },
              { binding: 2, resource: { buffer: pRows } },
              { binding: 3, resource: { buffer: qRow } },
              { binding: 4, resource: { buffer: tokens, offset: i * stride, size: 16 } },
              { binding: 5, resource: { buffer: outs, offset: i * stride, size: 16 } },
            ],
          });
          pass.setBindGroup(0, bg);
          pass.dispatchWorkgroups(1);
        }
        pass.end();
        dev.queue.submit([enc.finish()]);
        const o = new Uint32Array(await r.read(outs));
        const accepted: number[] = [];
        const next: number[] = [];
        for (let i = 0; i < n; i++) {
          accepted.push(o[(i * stride) / 4]);
          next.push(o[(i * stride) / 4 + 1]);
        }
        const p = Array.from(new Float32Array(await r.read(pRows, 0, V * 4)));
        const q = Array.from(new Float32Array(await r.read(qRow, 0, V * 4)));
        return { drafts, accepted, next, p, q };
      });
    } finally {
      for (const b of [tl, dl, picks, tokens, outs, params, pRows, qRow]) b.destroy();
      tS.destroy();
      dS.destroy();
    }
  },

  /** Loads (or reuses, by `key`) an engine. */
  async loadEngine(a: { key: string; model: string; load?: LoadOptions }) {
    engines.get(a.key)?.dispose();
    engines.delete(a.key);
    const e = await Engine.load(a.model, a.load);
    engines.set(a.key, e);
    return e.info;
  },

  async disposeEngine(a: { key: string }) {
    engines.get(a.key)?.dispose();
    engines.delete(a.key);
    return true;
  },

  /** Runs generations on a loaded engine: results plus the streamed pieces. Errors come back as data. */
  async generateRuns(a: { key: string; runs: Array<{ prompt?: string; opts?: GenerateOptions; abortAfter?: number }> }) {
    const e = engines.get(a.key);
    if (!e) throw new Error(`no engine "${a.key}"`);
    const out: RunOut[] = [];
    for (const run of a.runs) {
      const ctl = new AbortController();
      const pieces: string[] = [];
      try {
        const t0 = performance.now();
        const gen = e.generate(run.prompt ?? '', { ...run.opts, signal: ctl.signal });
        for await (const t of gen) {
          pieces.push(t);
          if (run.abortAfter !== undefined && pieces.length >= run.abortAfter) ctl.abort();
        }
        const res = await gen.result;
        out.push({ ...res, pieces, wallMs: performance.now() - t0, error: null } as RunOut);
      } catch (err) {
        out.push({ error: { code: (err as { code?: string }).code ?? null, message: String((err as Error).message ?? err) }, pieces } as RunOut);
      }
    }
    return out;
  },

  /** Runs OpenAI-style requests (chat or completions); streams are collected into chunk arrays. */
  async openaiRuns(a: { key: string; requests: Array<{ kind: 'chat'; req: ChatCompletionRequest } | { kind: 'completion'; req: CompletionRequest }> }) {
    const e = engines.get(a.key);
    if (!e) throw new Error(`no engine "${a.key}"`);
    const out = [];
    for (const r of a.requests) {
      try {
        const res = r.kind === 'chat' ? await e.chat.completions.create(r.req) : await e.completions.create(r.req);
        if (r.req.stream) {
          const chunks = [];
          for await (const c of res as AsyncIterable<unknown>) chunks.push(c);
          out.push({ chunks, error: null });
        } else out.push({ response: res, error: null });
      } catch (err) {
        out.push({ error: { code: (err as { code?: string }).code ?? null, message: String((err as Error).message ?? err) } });
      }
    }
    return out;
  },

  /** The chat template rendering of a loaded engine (or its error). */
  async renderChat(a: { key: string; messages: ChatCompletionRequest['messages'] }) {
    const e = engines.get(a.key);
    if (!e) throw new Error(`no engine "${a.key}"`);
    try {
      return { text: (await e.chatTemplate()).render(a.messages), error: null };
    } catch (err) {
      return { text: null, error: { code: (err as { code?: string }).code ?? null, message: String((err as Error).message ?? err) } };
    }
  },
};
