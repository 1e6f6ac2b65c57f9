/**
 * The Llama graph's GPU weights, declared for the generic loader (src/loader/weights.ts): which
 * checkpoint tensors (or row ranges of one) fill each weight, matrix or f32 vector, and its format
 * from the quantization plan. q/k/v are fused into one [q|k|v] weight and gate/up into [gate|up];
 * a tied LM head is the embedding itself. The embedding and the LM head are split into row parts
 * when one weight would exceed the device's binding limit (a large vocabulary on an adapter with
 * the default 128 MiB binding). LlamaModel.load loads these; the memory preflight
 * (src/api/preflight.ts) sizes them before anything is downloaded.
 */
import { NibbleError } from '../errors.ts';
import type { TensorInfo } from '../loader/safetensors.ts';
import { VECTOR_FORMAT, type LoadedWeights, type WeightSpec } from '../loader/weights.ts';
import { getFormat, type GpuWeight, type SplitWeight } from '../quant/format.ts';
import { bufferSize } from '../kernels/runtime.ts';
import { formatFor, formatForFused, type QuantPlan } from '../quant/plan.ts';
import { tensorNames } from './checkpoint.ts';
import type { LlamaConfig } from './config.ts';

/** The device limits one weight buffer must fit (GPUSupportedLimits has both). */
export interface BindingLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
}

/** A matrix stored whole (one part) or in row parts, each a weight of its own. */
export interface SplitSpec {
  label: string;
  format: string;
  rows: number;
  cols: number;
  parts: WeightSpec[];
  /** First row of each part (rowStarts[0] = 0). */
  rowStarts: number[];
}

export interface LayerSpecs<W, V> {
  inputNorm: V;
  qkv: W;
  qkvBias: V | null;
  o: W;
  oBias: V | null;
  postNorm: V;
  gateUp: W;
  down: W;
}

export interface LlamaWeightSpecs {
  embed: SplitSpec;
  /** The embedding itself when the model ties them. */
  head: SplitSpec;
  finalNorm: WeightSpec;
  layers: Array<LayerSpecs<WeightSpec, WeightSpec>>;
  /** Every distinct GPU weight (split parts one by one), in load order. */
  all: WeightSpec[];
}

/** The loaded weights the graph reads. */
export interface LlamaWeights {
  embed: SplitWeight;
  head: SplitWeight;
  finalNorm: GPUBuffer;
  layers: Array<LayerSpecs<GpuWeight, GPUBuffer>>;
}

/** Rows of one part are a multiple of this. */
const PART_ROW_MULTIPLE = 64;

/** The size Runtime.buffer allocates for `n` bytes. */

/**
 * Rows per part of a rows × cols weight in `format`: all of them when every buffer of the weight
 * fits `limit`, else the largest multiple of 64 rows that fits (all rows when not even 64 fit, or
 * the format gives no layout: Runtime.buffer then reports the limit).
 */
export function partRows(format: string, rows: number, cols: number, limit: number): number {
  const layout = getFormat(format)?.layout;
  if (!layout) return rows;
  const fits = (r: number) => layout(r, cols).buffers.every((b) => bufferSize(b) <= limit);
  if (fits(rows)) return rows;
  let lo = 0; // multiples of 64 rows known to fit
  let hi = Math.ceil(rows / PART_ROW_MULTIPLE); // known not to fit
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (fits(mid * PART_ROW_MULTIPLE)) lo = mid;
    else hi = mid;
  }
  return lo === 0 ? rows : lo * PART_ROW_MULTIPLE;
}

/**
 * Declares the weights of one model, in load order: matrices (several tensors fused by rows),
 * vectors, and matrices split into row parts where the device's binding limit asks for it. An
 * architecture's describeWeights is written with it.
 */
export class SpecBuilder {
  /** Every weight declared, in order. */
  readonly all: WeightSpec[] = [];
  private readonly tensors: ReadonlyMap<string, TensorInfo>;
  private readonly limit: number;

  /** `limits`: the device's (no weight buffer may exceed its binding); without them nothing is split. */
  constructor(tensors: ReadonlyMap<string, TensorInfo>, limits?: BindingLimits) {
    this.tensors = tensors;
    this.limit = limits ? Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize) : Infinity;
  }

  tensor(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new NibbleError('missing-tensor', `tensor "${name}" is missing from the checkpoint`);
    return t;
  }

  /** A matrix of the named 2-D tensors' rows, one after another (q, k, v → [q|k|v]). */
  matrix(members: string[], format: string, label: string): WeightSpec {
    checkFormat(format);
    const ts = members.map((n) => this.tensor(n));
    const w: WeightSpec = {
      label,
      kind: 'matrix',
      members: ts.map((tensor) => ({ tensor, rowStart: 0, rowCount: tensor.shape[0]! })),
      format,
      rows: ts.reduce((a, t) => a + t.shape[0]!, 0),
      cols: ts[0]!.shape[1]!,
    };
    this.all.push(w);
    return w;
  }

  /** An f32 vector of the named tensors' elements, one after another. */
  vector(members: string[], label: string): WeightSpec {
    const ts = members.map((n) => this.tensor(n));
    const n = ts.reduce((a, t) => a + t.shape.reduce((x, d) => x * d, 1), 0);
    const w: WeightSpec = { label, kind: 'vector', members: ts.map((tensor) => ({ tensor, rowStart: 0, rowCount: tensor.shape[0] ?? 1 })), format: VECTOR_FORMAT, rows: 1, cols: n };
    this.all.push(w);
    return w;
  }

  /** One 2-D tensor, whole or (over the binding limit) in row parts of partRows rows, labelled `name#i`. */
  split(name: string, format: string): SplitSpec {
    checkFormat(format);
    const tensor = this.tensor(name);
    const [rows, cols] = [tensor.shape[0]!, tensor.shape[1]!];
    const per = partRows(format, rows, cols, this.limit);
    if (per >= rows) return { label: name, format, rows, cols, parts: [this.matrix([name], format, name)], rowStarts: [0] };
    const parts: WeightSpec[] = [];
    const rowStarts: number[] = [];
    for (let r = 0; r < rows; r += per) {
      const n = Math.min(per, rows - r);
      const part: WeightSpec = { label: `${name}#${parts.length}`, kind: 'matrix', members: [{ tensor, rowStart: r, rowCount: n }], format, rows: n, cols };
      this.all.push(part);
      parts.push(part);
      rowStarts.push(r);
    }
    return { label: name, format, rows, cols, parts, rowStarts };
  }
}

function checkFormat(format: string): void {
  if (!getFormat(format)) throw new NibbleError('bad-argument', `unknown weight format "${format}"`);
}

/**
 * The GPU weights of a Llama-family checkpoint under a plan (see the file's header). `limits`:
 * the device's, so that no weight buffer exceeds its binding; without them nothing is split.
 */
export function describeWeights(cfg: LlamaConfig, tensors: ReadonlyMap<string, TensorInfo>, plan: QuantPlan, limits?: BindingLimits): LlamaWeightSpecs {
  const names = tensorNames(cfg);
  const b = new SpecBuilder(tensors, limits);
  const embed = b.split(names.embed, formatFor(plan, names.embed));
  const layers = names.layers.map((L, i) => {
    const qkvNames = [L.q, L.k, L.v];
    const guNames = [L.gate, L.up];
    return {
      inputNorm: b.vector([L.inputNorm], L.inputNorm),
      qkv: b.matrix(qkvNames, formatForFused(plan, qkvNames), `layer${i}.qkv`),
      qkvBias: L.qBias && L.kBias && L.vBias ? b.vector([L.qBias, L.kBias, L.vBias], `layer${i}.qkv_bias`) : null,
      o: b.matrix([L.o], formatFor(plan, L.o), `layer${i}.o`),
      oBias: L.oBias ? b.vector([L.oBias], L.oBias) : null,
      postNorm: b.vector([L.postNorm], L.postNorm),
      gateUp: b.matrix(guNames, formatForFused(plan, guNames), `layer${i}.gate_up`),
      down: b.matrix([L.down], formatFor(plan, L.down), `layer${i}.down`),
    };
  });
  const finalNorm = b.vector([names.finalNorm], names.finalNorm);
  const head = names.lmHead ? b.split(names.lmHead, formatFor(plan, names.lmHead)) : embed;
  return { embed, head, finalNorm, layers, all: b.all };
}

/** The graph's weights from what the loader built (by label). */
export function assembleWeights(spec: LlamaWeightSpecs, w: LoadedWeights): LlamaWeights {
  const splitWeight = (s: SplitSpec): SplitWeight => ({
    format: s.format,
    rows: s.rows,
    cols: s.cols,
    parts: s.parts.map((p) => w.matrix(p.label)),
    rowStarts: s.rowStarts,
  });
  const embed = splitWeight(spec.embed);
  return {
    embed,
    head: spec.head === spec.embed ? embed : splitWeight(spec.head),
    finalNorm: w.vector(spec.finalNorm.label),
    layers: spec.layers.map((L) => ({
      inputNorm: w.vector(L.inputNorm.label),
      qkv: w.matrix(L.qkv.label),
      qkvBias: L.qkvBias ? w.vector(L.qkvBias.label) : null,
      o: w.matrix(L.o.label),
      oBias: L.oBias ? w.vector(L.oBias.label) : null,
      postNorm: w.vector(L.postNorm.label),
      gateUp: w.matrix(L.gateUp.label),
      down: w.matrix(L.down.label),
    })),
  };
}
