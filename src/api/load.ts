/**
 * Engine.load's assembly: the checkpoints' config.json and tensor tables (read once, for the target
 * and a draft alike), every check that needs no GPU (configs, tensors, draft against target), the
 * device, the memory preflight, then the models' weights and pipelines, and what `engine.info`
 * reports. A failed load leaves nothing allocated.
 */
import { createGpuContext, type GpuContext } from '../gpu/context.ts';
import { NibbleError, show } from '../errors.ts';
import { parseJsonText } from '../util/json.ts';
import { Runtime } from '../kernels/runtime.ts';
import { chooseMatmulVariant } from '../kernels/linear.ts';
import { openCheckpoint, type TensorInfo } from '../loader/safetensors.ts';
import { parseConfig, type LlamaConfig } from '../model/config.ts';
import { checkTensors } from '../model/architecture.ts';
import { LlamaModel, modelDims, type LoadProgress } from '../model/llama.ts';
import { normalizePlan, planKey, type QuantPlan } from '../quant/plan.ts';
import '../quant/formats.ts';
import type { SamplingOptions } from '../generate/sampling.ts';
import { checkDraft } from '../generate/speculative.ts';
import { TextTokenizer } from '../tokenizer.ts';
import type { ModelSource } from '../source/types.ts';
import { resolveSource } from './resolve.ts';
import { preflight, type GpuMemoryEstimate, type PreflightModel } from './preflight.ts';
import { LoadProgressTracker } from './progress.ts';
import type { DraftOptions, EngineInfo, LoadOptions } from './types.ts';

/** One checkpoint's configuration and tensor table. */
export interface Checkpoint {
  source: ModelSource;
  /** How info names it: the id / URL it was loaded from ('self' for a draft of the target's own checkpoint). */
  name: string;
  cfg: LlamaConfig;
  /** generation_config.json, when there is one. */
  genCfg: unknown;
  tensors: Map<string, TensorInfo>;
}

/** What Engine's constructor takes from a load. */
export interface LoadedEngine {
  rt: Runtime;
  source: ModelSource;
  model: LlamaModel;
  tokenizer: TextTokenizer;
  info: EngineInfo;
  draft: { model: LlamaModel; tokens: number; adaptive: boolean; pipeline: boolean } | null;
}

async function readJson(source: ModelSource, file: string, whose: string, signal?: AbortSignal): Promise<unknown> {
  return parseJsonText(await source.text(file, signal), `${whose}${file} in ${source.description}`);
}

/** config.json (+ generation_config.json), parsed: every architecture check runs here, before any download. */
async function readConfig(source: ModelSource, whose: string, signal?: AbortSignal): Promise<{ cfg: LlamaConfig; genCfg: unknown }> {
  const json = await readJson(source, 'config.json', whose, signal);
  const genCfg = (await source.exists('generation_config.json', signal)) ? await readJson(source, 'generation_config.json', whose, signal) : undefined;
  return { cfg: parseConfig(json, genCfg), genCfg };
}

/** A checkpoint's config and its safetensors headers, checked against each other (with `also` read beside the headers). */
async function readCheckpoint<T>(source: ModelSource, name: string, whose: string, signal: AbortSignal | undefined, also: () => Promise<T>): Promise<[Checkpoint, T]> {
  const { cfg, genCfg } = await readConfig(source, whose, signal);
  const [table, extra] = await Promise.all([openCheckpoint(source, signal), also()]);
  checkTensors(cfg, table.tensors);
  return [{ source, name, cfg, genCfg, tensors: table.tensors }, extra];
}

/** The draft's checkpoint: the target's own (read once) without `model`, else its own. */
async function readDraft(opts: LoadOptions, d: DraftOptions, target: Checkpoint): Promise<Checkpoint> {
  if (d.model === undefined) return { ...target, name: 'self' };
  const source = typeof d.model === 'string' ? resolveSource(d.model, opts) : d.model;
  const [ck] = await readCheckpoint(source, typeof d.model === 'string' ? d.model : source.description, "the draft's ", opts.signal, async () => null);
  return ck;
}

/** The load options a target and its draft share (batching, streaming, cache, abort, progress). */
function streamingOptions(opts: LoadOptions) {
  return {
    maxBatch: opts.maxBatch,
    matmul: opts.matmul,
    kvCache: opts.kvCache,
    chunkBytes: opts.chunkBytes,
    parallelReads: opts.parallelReads,
    hostMemoryBudget: opts.hostMemoryBudget,
    verify: opts.verify,
    cache: opts.cache,
    signal: opts.signal,
    onProgress: opts.onProgress,
  };
}

/** generation_config.json's sampling settings, when it samples (do_sample true). */
export function generationDefaults(gen: unknown): SamplingOptions {
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

/** The load's options, checked before anything is read. */
function checkOptions(opts: LoadOptions): { plan: QuantPlan; draftPlan: QuantPlan | null; draftTokens: number } {
  const plan = normalizePlan(opts.quant);
  const draftPlan = opts.draft ? normalizePlan(opts.draft.quant ?? 'nf4') : null;
  const draftTokens = opts.draft?.tokens ?? 4;
  if (opts.draft && (!Number.isInteger(draftTokens) || draftTokens < 1 || draftTokens > 32)) {
    throw new NibbleError('bad-argument', `draft tokens must be an integer in 1..32, got ${opts.draft.tokens}`);
  }
  if (opts.draft?.pipeline !== undefined && typeof opts.draft.pipeline !== 'boolean') {
    throw new NibbleError('bad-argument', `draft pipeline must be true or false, got ${show(opts.draft.pipeline)}`);
  }
  if (opts.kvCache !== undefined && opts.kvCache !== 'f32' && opts.kvCache !== 'f16') {
    throw new NibbleError('bad-argument', `kvCache must be 'f32' or 'f16', got ${show(opts.kvCache)}`);
  }
  if (opts.maxGpuBytes !== undefined && (typeof opts.maxGpuBytes !== 'number' || !(opts.maxGpuBytes > 0) || !Number.isFinite(opts.maxGpuBytes))) {
    throw new NibbleError('bad-argument', `maxGpuBytes must be a positive number of bytes, got ${show(opts.maxGpuBytes)}`);
  }
  return { plan, draftPlan, draftTokens };
}

/** The memory preflight of the target and its draft on this device. */
function sizeLoad(opts: LoadOptions, ctx: GpuContext, target: Checkpoint, plan: QuantPlan, draft: { ck: Checkpoint; plan: QuantPlan; tokens: number } | null): GpuMemoryEstimate {
  // as LlamaModel.load chooses it (an unknown forced variant fails there, with its own error)
  let prefillDequant = false;
  try {
    prefillDequant = chooseMatmulVariant(ctx, opts.matmul ?? 'auto').prefillDequant;
  } catch {
    // LlamaModel.load reports it
  }
  const sized: PreflightModel[] = [
    { cfg: target.cfg, tensors: target.tensors, plan, contextLength: opts.contextLength, maxBatch: opts.maxBatch, maxLogitRows: opts.maxLogitRows, samplerRows: draft ? draft.tokens + 1 : 1, draftTokens: draft?.tokens ?? 0, kvCache: opts.kvCache, prefillDequant },
  ];
  if (draft) {
    // the draft's KV cache has the target's context length
    sized.push({ cfg: draft.ck.cfg, tensors: draft.ck.tensors, plan: draft.plan, contextLength: modelDims(target.cfg, opts).ctx, maxBatch: opts.maxBatch, maxLogitRows: 1, samplerRows: 0, kvCache: opts.kvCache, prefillDequant });
  }
  return preflight(sized, opts, {
    maxBufferSize: ctx.limits.maxBufferSize,
    maxStorageBufferBindingSize: ctx.limits.maxStorageBufferBindingSize,
    adapter: ctx.adapterInfo.summary,
    maxGpuBytes: opts.maxGpuBytes,
  });
}

/**
 * Loads the target (and its draft) onto one Runtime inside GPU error scopes; resolves once the
 * pipelines are compiled and the GPU has finished building the weights.
 */
async function loadModels(
  rt: Runtime,
  opts: LoadOptions,
  progress: LoadProgressTracker,
  target: { ck: Checkpoint; plan: QuantPlan },
  draft: { ck: Checkpoint; plan: QuantPlan; tokens: number } | null,
): Promise<{ model: LlamaModel; draft: LlamaModel | null }> {
  const device = rt.device;
  let model: LlamaModel | undefined;
  let draftModel: LlamaModel | null = null;
  const load = (ck: Checkpoint, plan: QuantPlan, o: { contextLength?: number; maxLogitRows?: number; verifyRows: number }, onProgress: (p: LoadProgress) => void) =>
    LlamaModel.load(rt, ck.cfg, ck.source, ck.tensors, plan, { ...streamingOptions(opts), ...o, onProgress, deferCompile: true });
  try {
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    try {
      // the target's pipelines compile while a draft's weights load
      model = await load(target.ck, target.plan, { contextLength: opts.contextLength, maxLogitRows: opts.maxLogitRows, verifyRows: draft ? draft.tokens + 1 : 0 }, progress.loader(0));
      if (draft) draftModel = await load(draft.ck, draft.plan, { contextLength: model.contextLength, maxLogitRows: 1, verifyRows: 2 }, progress.loader(1));
      // every pipeline of the graphs is requested: the compile phase's total is known
      progress.seal();
      await rt.ready();
    } finally {
      const validation = await device.popErrorScope();
      const oom = await device.popErrorScope();
      const err = oom ?? validation;
      if (err) throw new NibbleError('gpu-error', `GPU error while loading the model: ${err.message}`);
    }
    // the GPU quantizers and the pipelines' compilation are queued, not finished, when the
    // loaders return: resolve (and count loadMs) only once the model can generate
    await device.queue.onSubmittedWorkDone();
    return { model, draft: draftModel };
  } catch (e) {
    model?.destroy();
    draftModel?.destroy();
    throw e;
  }
}

function describe(model: LlamaModel) {
  return { weightBytes: model.weightBytes, bitsPerWeight: (model.matrixBytes * 8) / model.weightCount, formats: model.formats };
}

/** Loads everything an Engine holds (see the file's header). */
export async function loadEngine(model: string | ModelSource, opts: LoadOptions): Promise<LoadedEngine> {
  const t0 = performance.now();
  const { plan, draftPlan, draftTokens } = checkOptions(opts);
  const progress = new LoadProgressTracker(opts.onProgress, opts.draft ? 2 : 1);
  const source = typeof model === 'string' ? resolveSource(model, opts) : model;
  const name = typeof model === 'string' ? model : source.description;
  const [target, tokenizer] = await readCheckpoint(source, name, '', opts.signal, () => TextTokenizer.load(source, opts.signal));
  const draft = opts.draft && draftPlan ? { ck: await readDraft(opts, opts.draft, target), plan: draftPlan, tokens: draftTokens } : null;
  if (draft) {
    const dims = modelDims(target.cfg, opts);
    checkDraft({ vocabSize: target.cfg.vocabSize, logitRows: Math.min(dims.maxLogitRows, dims.maxBatch) }, draft.ck.cfg.vocabSize, draftTokens);
  }
  const ctx = await createGpuContext(opts);
  // memory preflight: every buffer of the load sized before a weight byte is requested
  const gpuMemory = sizeLoad(opts, ctx, target, plan, draft);
  const rt = new Runtime(ctx);
  progress.attach(rt);
  let loaded: Awaited<ReturnType<typeof loadModels>>;
  try {
    loaded = await loadModels(rt, opts, progress, { ck: target, plan }, draft);
    progress.done();
  } catch (e) {
    // a failed load leaves nothing allocated: the runtime's own buffers go too
    rt.destroy();
    throw e;
  } finally {
    progress.detach();
  }
  const m = loaded.model;
  // speculative rounds queue the next draft pass ahead of the readback, except on CPU adapters (DraftOptions.pipeline)
  const pipeline = opts.draft?.pipeline ?? !ctx.adapterInfo.cpuBacked;
  const info: EngineInfo = {
    model: target.name,
    adapter: ctx.adapterInfo,
    features: ctx.features,
    config: target.cfg,
    quant: plan,
    quantKey: planKey(plan),
    contextLength: m.contextLength,
    kvCache: opts.kvCache ?? 'f32',
    ...describe(m),
    loaderPeakHostBytes: m.hostMemory.peak,
    gpuMemory,
    load: m.loadStats,
    dispatchesPerToken: m.dispatchesPerToken,
    loadMs: performance.now() - t0,
    generationDefaults: generationDefaults(target.genCfg),
    ...(draft && loaded.draft
      ? { draft: { model: draft.ck.name, quantKey: planKey(draft.plan), ...describe(loaded.draft), tokens: draftTokens, adaptive: !!opts.draft?.adaptive, pipeline } }
      : {}),
  };
  return {
    rt,
    source,
    model: m,
    tokenizer,
    info,
    draft: loaded.draft ? { model: loaded.draft, tokens: draftTokens, adaptive: !!opts.draft?.adaptive, pipeline } : null,
  };
}
