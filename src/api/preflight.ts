/**
 * Memory preflight: before a weight byte is downloaded, Engine.load sizes every GPU buffer the
 * load will make — the weights in the plan's formats (the formats' own `layout`, the geometry
 * their builders allocate), the KV cache at the context length, activations, logits, the RoPE
 * table, the sampler, and the quantizers' load-time staging — and refuses with a `gpu-limit`
 * NibbleError when one buffer exceeds the adapter's binding limit (min(maxBufferSize,
 * maxStorageBufferBindingSize)) or the total exceeds `maxGpuBytes`. The error names the numbers and
 * what would fit: a smaller weight format or a shorter context. WebGPU does not tell how much
 * memory a GPU has, so without `maxGpuBytes` only the per-buffer limits are checked.
 */
import { NibbleError } from '../errors.ts';
import { SAMPLE_PARAMS_BYTES } from '../kernels/uniforms.ts';
import { MAX_LOGIT_BIAS } from '../generate/sampling.ts';
import type { TensorInfo } from '../loader/safetensors.ts';
import { DEFAULT_CHUNK_BYTES, DEFAULT_PARALLEL_READS } from '../loader/stream.ts';
import { memberTensor } from '../loader/jobs.ts';
import { DEFAULT_HOST_MEMORY_BUDGET } from '../loader/weights.ts';
import { ropeInvFreq, type LlamaConfig } from '../model/config.ts';
import { dequantScratchBytes, modelDims } from '../model/llama.ts';
import { kvCacheBytes } from '../kernels/ops.ts';
import { bufferSize } from '../kernels/runtime.ts';
import { architectureOf } from '../model/architecture.ts';
import type { BindingLimits } from '../model/spec.ts';
import { getFormat } from '../quant/format.ts';
import { planKey, type FormatName, type QuantPlan } from '../quant/plan.ts';

/** One model of a load (the target, or a draft on the same device). */
export interface PreflightModel {
  cfg: LlamaConfig;
  tensors: Map<string, TensorInfo>;
  plan: QuantPlan;
  /** As in LoadOptions (resolved like LlamaModel.load does). */
  contextLength?: number;
  maxBatch?: number;
  maxLogitRows?: number;
  /** Rows of the sampler (draft tokens + 1 with speculative decoding, else 1); 0: no sampler. */
  samplerRows: number;
  /** Draft tokens k when this model is the target of speculative decoding (the speculator's buffers). */
  draftTokens?: number;
  /** KV cache storage (LoadOptions.kvCache; default f32). */
  kvCache?: 'f32' | 'f16';
  /** The load's matmul variant decodes nf4 weights to an f32 copy for prefill (MatmulVariant.prefillDequant: CPU adapters). */
  prefillDequant?: boolean;
}

export interface PreflightLoad {
  chunkBytes?: number;
  parallelReads?: number;
  hostMemoryBudget?: number;
}

/** What a load will hold on the GPU, in bytes (as allocated: Runtime rounds buffers to 16 bytes). */
export interface GpuMemoryEstimate {
  /** Every weight: 2-D weights (codes + scales) and f32 vectors (what `info.weightBytes` reports, draft included). */
  weights: number;
  /** The KV caches at the context length. */
  kvCache: number;
  /** Activations, logits, the RoPE table, the sampler and the runtime's own buffers. */
  scratch: number;
  /** Held only while the weights load: the quantizers' staging, counters and nf4-dq temporaries. */
  loadScratch: number;
  /** weights + kvCache + scratch + loadScratch. */
  total: number;
  /** The largest single buffer. */
  largest: { label: string; bytes: number };
  /** The target's context length. */
  contextLength: number;
}

interface Sized {
  label: string;
  bytes: number;
  kind: 'weights' | 'kvCache' | 'scratch' | 'loadScratch';
}

/** The size Runtime.buffer allocates for `n` bytes. */

export { modelDims };

/** Every buffer one model's load makes, with its size. */
function modelBuffers(m: PreflightModel, load: PreflightLoad, prefix: string, limits?: BindingLimits): { buffers: Sized[]; weightBytes: number } {
  const { cfg } = m;
  const { ctx, maxBatch: B, maxLogitRows } = modelDims(cfg, m);
  const out: Sized[] = [];
  const add = (label: string, bytes: number, kind: Sized['kind']) => out.push({ label: prefix + label, bytes: bufferSize(bytes), kind });
  let weightBytes = 0;
  const chunkBytes = Math.min(load.hostMemoryBudget ?? DEFAULT_HOST_MEMORY_BUDGET, Math.max(1 << 16, load.chunkBytes ?? DEFAULT_CHUNK_BYTES));
  const staging: number[] = [];
  // the weights exactly as LlamaModel.load builds them (split into row parts to fit `limits`)
  const spec = architectureOf(cfg).describeWeights(cfg, m.tensors, m.plan, limits);
  for (const w of spec.all) {
    if (w.kind === 'vector') {
      add(w.label, w.cols * 4, 'weights');
      weightBytes += bufferSize(w.cols * 4);
      continue;
    }
    const f = getFormat(w.format)!;
    const layout = f.layout?.(w.rows, w.cols) ?? { buffers: [w.rows * w.cols * 4], bytes: w.rows * w.cols * 4, temporary: [] };
    layout.buffers.forEach((b, i) => add(layout.buffers.length > 1 ? `${w.label}[${i}]` : w.label, b, 'weights'));
    weightBytes += layout.bytes;
    layout.temporary.forEach((b, i) => add(`${w.label}.temporary${i}`, b, 'loadScratch'));
    if (w.format !== 'f32') {
      // the quantizer's chunk uniform and non-finite counter (kept until the load's check), and a
      // staging buffer of one read (whole rows, at most chunkBytes)
      add(`${w.label}.chunk`, 32, 'loadScratch');
      add(`${w.label}.nonfinite`, 16, 'loadScratch');
      const read = w.members.map(memberTensor);
      const tensorBytes = Math.max(...read.map((t) => t.end - t.start));
      const rowBytes = Math.max(1, tensorBytes / Math.max(1, read[0]!.shape[0] ?? 1));
      staging.push(Math.max(rowBytes, Math.min(tensorBytes, Math.floor(chunkBytes / rowBytes) * rowBytes)));
    }
  }
  // at most `parallelReads` weights are being built at once, each holding one staging buffer
  staging.sort((a, b) => b - a);
  staging.slice(0, load.parallelReads ?? DEFAULT_PARALLEL_READS).forEach((b, i) => add(`quantizer staging ${i}`, b, 'loadScratch'));

  const { hiddenSize: H, numHeads: nH, numKvHeads: nKV, headDim: D, intermediateSize: I, vocabSize: V } = cfg;
  const kvBytes = kvCacheBytes({ nHeads: nH, nKvHeads: nKV, headDim: D, ctx, kv16: m.kvCache === 'f16' });
  for (let i = 0; i < cfg.numLayers; i++) {
    add(`layer${i}.k_cache`, kvBytes, 'kvCache');
    add(`layer${i}.v_cache`, kvBytes, 'kvCache');
  }
  add('tokens', Math.max(B, 4) * 4, 'scratch');
  add('hidden', B * H * 4, 'scratch');
  add('qkv', B * (nH + 2 * nKV) * D * 4, 'scratch');
  add('q', B * nH * D * 4, 'scratch');
  add('attn', B * nH * D * 4, 'scratch');
  add('gate_up', B * 2 * I * 4, 'scratch');
  add('act', B * I * 4, 'scratch');
  add('logits', maxLogitRows * V * 4, 'scratch');
  add('rope_cos_sin', ctx * ropeInvFreq(cfg).length * 2 * 4, 'scratch');
  const dequant = dequantScratchBytes(!!m.prefillDequant, spec, limits);
  if (dequant > 0) add('prefill_dequant', dequant, 'scratch');
  for (let i = 0; i < 4; i++) add(`token_readback${i}`, 16, 'scratch');
  // a GpuSampler (generate/sampler.ts) of `rows` logit rows
  const sampler = (prefix: string, rows: number) => {
    add(`${prefix}sample_params`, SAMPLE_PARAMS_BYTES, 'scratch');
    add(`${prefix}sample_counts`, V * 4, 'scratch');
    add(`${prefix}sample_scratch`, rows * V * 4, 'scratch');
    add(`${prefix}sample_bias`, MAX_LOGIT_BIAS * 8, 'scratch');
  };
  if (m.samplerRows > 0) sampler('', m.samplerRows);
  if (m.draftTokens) {
    // the Speculator (generate/speculative.ts): the draft's sampler, q rows, picks, result, readback
    sampler('spec_draft_', 1);
    add('spec_q', m.draftTokens * V * 4, 'scratch');
    add('spec_picks', (m.draftTokens + 1) * 4, 'scratch');
    add('spec_result', 16, 'scratch');
    add('spec_readback', (2 * m.draftTokens + 2) * 4, 'scratch');
  }
  return { buffers: out, weightBytes };
}

/** The GPU memory of a load: the target and, when given, its draft model. */
export function estimateGpuMemory(models: PreflightModel[], load: PreflightLoad = {}, limits?: BindingLimits): GpuMemoryEstimate & { buffers: Sized[] } {
  const buffers: Sized[] = [
    { label: 'step', bytes: 16, kind: 'scratch' },
    { label: 'dummy', bytes: 16, kind: 'scratch' },
  ];
  let weights = 0;
  models.forEach((m, i) => {
    const r = modelBuffers(m, load, i === 0 ? '' : 'draft ', limits);
    buffers.push(...r.buffers);
    weights += r.weightBytes;
  });
  const sum = (k: Sized['kind']) => buffers.reduce((a, b) => a + (b.kind === k ? b.bytes : 0), 0);
  const largest = buffers.reduce((a, b) => (b.bytes > a.bytes ? b : a));
  const kvCache = sum('kvCache');
  const scratch = sum('scratch');
  const loadScratch = sum('loadScratch');
  // `weights` counts like info.weightBytes (codes + scales unrounded); the total counts allocations
  const total = sum('weights') + kvCache + scratch + loadScratch;
  return { weights, kvCache, scratch, loadScratch, total, largest: { label: largest.label, bytes: largest.bytes }, contextLength: modelDims(models[0]!.cfg, models[0]!).ctx, buffers };
}

export interface PreflightLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  /** The adapter, for messages. */
  adapter: string;
  /** The caller's budget of GPU bytes for the whole load (LoadOptions.maxGpuBytes). */
  maxGpuBytes?: number;
}

export function mib(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n < 2 ** 20) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${(n / 2 ** 20).toFixed(1)} MiB`;
}

/** Formats tried as a smaller alternative, largest (most accurate) first. */
const SMALLER: readonly FormatName[] = ['f16', 'int8', 'nf4', 'nf4-dq'];

/** Why this load does not fit, or null. */
function misfit(models: PreflightModel[], load: PreflightLoad, limits: PreflightLimits): { kind: 'buffer' | 'total'; est: ReturnType<typeof estimateGpuMemory> } | null {
  const est = estimateGpuMemory(models, load, limits);
  const bind = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
  if (est.largest.bytes > bind) return { kind: 'buffer', est };
  if (limits.maxGpuBytes !== undefined && est.total > limits.maxGpuBytes) return { kind: 'total', est };
  return null;
}

/**
 * Throws NibbleError('gpu-limit') when the load does not fit the adapter's per-buffer limit or
 * `maxGpuBytes`, naming the numbers and what would fit; else returns the estimate.
 */
export function preflight(models: PreflightModel[], load: PreflightLoad, limits: PreflightLimits): GpuMemoryEstimate {
  const bad = misfit(models, load, limits);
  if (!bad) {
    const { buffers: _, ...est } = estimateGpuMemory(models, load, limits);
    return est;
  }
  const { est } = bad;
  const target = models[0]!;
  const ctx = est.contextLength;
  // a smaller default format for the target (overrides dropped: they may be what does not fit)
  const current = target.plan.default;
  const currentSize = formatBits(current);
  const formats = SMALLER.filter((f) => getFormat(f) && formatBits(f) < currentSize)
    .map((f) => {
      const alt = [{ ...target, plan: { default: f } }, ...models.slice(1)];
      return { f, fits: !misfit(alt, load, limits), total: estimateGpuMemory(alt, load, limits).total };
    })
    .filter((x) => x.fits);
  // the longest context that fits with the current plan (sizes grow with the context)
  const withCtx = (c: number) => models.map((m) => ({ ...m, contextLength: c }));
  let lo = 0;
  let hi = ctx - 1;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (misfit(withCtx(mid), load, limits)) hi = mid - 1;
    else lo = mid;
  }
  const ctxFits = lo >= 1 && !misfit(withCtx(lo), load, limits) ? lo : 0;
  const options: string[] = [];
  if (formats.length) options.push(`quant ${formats.map((x) => `'${x.f}' (${mib(x.total)})`).join(', ')}`);
  if (ctxFits > 0) options.push(`contextLength ≤ ${ctxFits} (${mib(estimateGpuMemory(withCtx(ctxFits), load, limits).total)} with quant '${planKey(target.plan)}')`);
  const fit = options.length
    ? `What would fit: ${options.join('; or ')}.`
    : `Neither a smaller weight format nor a shorter context makes it fit on its own${bad.kind === 'buffer' ? '' : '; raise maxGpuBytes'}.`;
  const parts =
    `weights ${mib(est.weights)} as '${planKey(target.plan)}'${models.length > 1 ? ' (draft included)' : ''}, KV cache ${mib(est.kvCache)} at contextLength ${ctx}, ` +
    `activations and logits ${mib(est.scratch)}, load-time staging ${mib(est.loadScratch)}`;
  if (bad.kind === 'buffer') {
    const bind = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
    const which = limits.maxStorageBufferBindingSize <= limits.maxBufferSize ? 'maxStorageBufferBindingSize' : 'maxBufferSize';
    throw new NibbleError(
      'gpu-limit',
      `"${est.largest.label}" needs a ${mib(est.largest.bytes)} buffer but this GPU (${limits.adapter}) binds at most ${mib(bind)} (${which} = ${bind}); ` +
        `the whole load needs about ${mib(est.total)}: ${parts}. Nothing was downloaded. ${fit}`,
    );
  }
  throw new NibbleError(
    'gpu-limit',
    `the model needs about ${mib(est.total)} (${est.total} bytes) of GPU memory but maxGpuBytes is ${mib(limits.maxGpuBytes!)} (${limits.maxGpuBytes} bytes): ${parts}. Nothing was downloaded. ${fit}`,
  );
}

/** Bits per weight of a format (its layout of a 64 × 4096 weight), to order the alternatives. */
function formatBits(f: string): number {
  const l = getFormat(f)?.layout?.(64, 4096);
  return l ? (l.bytes * 8) / (64 * 4096) : 32;
}
