import { NibbleError } from '../errors.ts';
import { split2d } from '../gpu/grid.ts';
import { DTYPE_BYTES, type DType } from '../util/dtype.ts';
import type { QuantRuntime as Runtime, ShaderSource } from './format.ts';
import quantCommon from '../../shaders/quant_common.wgsl?raw';

/** Checkpoint dtypes the quantizers read (quant_common.wgsl's override constant DTYPE). */
const DTYPE_CODE: Partial<Record<DType, number>> = { F32: 0, F16: 1, BF16: 2 };

/** A load-time quantizer kernel: a quant_*.wgsl file, compiled after quant_common.wgsl. */
export function quantKernel(name: string, code: string): ShaderSource {
  return { name, code: quantCommon + '\n' + code };
}

/** A bind group with explicit binding numbers (quantizer entry points use different subsets). */
export function bindAt(rt: Runtime, pipeline: GPUComputePipeline, entries: Array<[number, GPUBuffer]>, label: string): GPUBindGroup {
  return rt.device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: entries.map(([binding, buffer]) => ({ binding, resource: { buffer } })),
  });
}

/** Records dispatches into one compute pass and submits it (storage writes are ordered between them). */
export function submitDispatches(
  rt: Runtime,
  label: string,
  steps: Array<{ pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; grid: readonly [number, number] }>,
): void {
  const enc = rt.device.createCommandEncoder({ label });
  const pass = enc.beginComputePass();
  for (const s of steps) {
    pass.setPipeline(s.pipeline);
    pass.setBindGroup(0, s.bindGroup);
    pass.dispatchWorkgroups(s.grid[0], s.grid[1], 1);
  }
  pass.end();
  rt.device.queue.submit([enc.finish()]);
}

/** Weight geometry the quantizers read from the Chunk uniform. */
export interface ChunkGeometry {
  /** Group / block size along K (0 where unused). */
  group: number;
  /** u32 code words per weight row, padded to a multiple of 4 (rows start on 16-byte boundaries: layout.ts). */
  rowWords: number;
  /** Groups / blocks per row. */
  groups: number;
  /** Threads per row: the quantizer's unit (group, block or word) count. */
  units: number;
}

const CHUNK_BYTES = 32; // struct Chunk: 8 × u32

/**
 * The GPU half of every quantizing WeightBuilder. write() uploads a chunk of checkpoint rows,
 * raw (F32 / F16 / BF16 bytes, zero-padded to whole u32 words), into a staging buffer that is
 * reused across writes (grown when a chunk is larger), writes the Chunk uniform and dispatches
 * the quantizer, which writes codes and scales straight into the weight's buffers at row0. The
 * quantizer is compiled once per checkpoint dtype met (its DTYPE constant; most weights meet one,
 * a fused weight may meet two), each with its bind group over the current staging buffer.
 * Queue order (writeBuffer, then submit, per chunk) keeps chunks apart. The host never holds more
 * than the caller's chunk, and never converts it: decoding the dtype is the kernel's job.
 */
export class ChunkQuantizer {
  readonly uniform: GPUBuffer;
  /**
   * [non-finite inputs seen, first weight row holding one] (binding 6 of quant_common.wgsl): handed
   * to the weight's caller through WeightBuilder.nonFinite, who reads and frees it.
   */
  readonly nonFinite: GPUBuffer;
  private staging: GPUBuffer | null = null;
  /** Per dtype code: the quantizer compiled for it and its bind group over `staging` (null after a regrowth). */
  private readonly byDtype = new Map<number, { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup | null }>();
  private readonly kernel: ShaderSource;
  private readonly data = new Uint32Array(CHUNK_BYTES / 4);
  private readonly tail = new Uint8Array(4);
  private readonly rt: Runtime;
  private readonly label: string;
  private readonly rows: number;
  private readonly cols: number;
  private readonly outputs: GPUBuffer[];
  private readonly geo: ChunkGeometry;

  constructor(rt: Runtime, label: string, rows: number, cols: number, kernel: ShaderSource, outputs: GPUBuffer[], geo: ChunkGeometry) {
    this.rt = rt;
    this.label = label;
    this.rows = rows;
    this.cols = cols;
    this.outputs = outputs;
    this.geo = geo;
    this.kernel = kernel;
    this.uniform = rt.buffer(CHUNK_BYTES, `${label}.chunk`, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    this.nonFinite = rt.buffer(16, `${label}.nonfinite`);
    rt.device.queue.writeBuffer(this.nonFinite, 0, new Uint32Array([0, NO_ROW, 0, 0]));
  }

  /** Fills the Chunk uniform (queued before the next submit); `units` overrides the geometry's. */
  setChunk(c: { row0: number; rows: number; units?: number }): void {
    const g = this.geo;
    this.data.set([c.row0, c.rows, this.cols, g.group, g.rowWords, g.groups, c.units ?? g.units, 0]);
    this.rt.device.queue.writeBuffer(this.uniform, 0, this.data);
  }

  write(row0: number, dtype: DType, bytes: Uint8Array): void {
    const code = DTYPE_CODE[dtype];
    if (code === undefined) {
      throw new NibbleError('bad-tensor', `${this.label}: cannot quantize dtype ${dtype} (F32, F16 and BF16 are supported)`);
    }
    const rowBytes = this.cols * DTYPE_BYTES[dtype];
    const n = bytes.length / rowBytes;
    if (!Number.isInteger(n) || n < 1 || !Number.isInteger(row0) || row0 < 0 || row0 + n > this.rows) {
      throw new NibbleError(
        'bad-tensor',
        `${this.label}: a write of ${bytes.length} bytes at row ${row0} is not whole rows of ${this.cols} ${dtype} inside ${this.rows} rows`,
      );
    }
    const q = this.rt.device.queue;
    const whole = bytes.length & ~3;
    const padded = (bytes.length + 3) & ~3;
    if (!this.staging || this.staging.size < padded) {
      this.staging?.destroy(); // destruction waits for submitted work that reads it
      this.staging = this.rt.buffer(Math.max(padded, 2 * (this.staging?.size ?? 0)), `${this.label}.staging`);
      for (const k of this.byDtype.values()) k.bindGroup = null;
    }
    let k = this.byDtype.get(code);
    if (!k) {
      k = { pipeline: this.rt.pipeline(this.kernel.name, this.kernel.code, 'main', { DTYPE: code }), bindGroup: null };
      this.byDtype.set(code, k);
    }
    k.bindGroup ??= bindAt(
      this.rt,
      k.pipeline,
      [[0, this.uniform], [1, this.staging], ...this.outputs.map((b, i): [number, GPUBuffer] => [2 + i, b]), [6, this.nonFinite]],
      `${this.label}.quantize`,
    );
    if (whole > 0) q.writeBuffer(this.staging, 0, bytes as Uint8Array<ArrayBuffer>, 0, whole);
    if (padded > whole) {
      this.tail.fill(0);
      this.tail.set(bytes.subarray(whole));
      q.writeBuffer(this.staging, whole, this.tail);
    }
    this.setChunk({ row0, rows: n });
    const grid = split2d(Math.ceil((n * this.geo.units) / 64));
    submitDispatches(this.rt, `${this.label}.quantize`, [{ pipeline: k.pipeline, bindGroup: k.bindGroup, grid }]);
  }

  /** Releases the staging and uniform buffers (after any work already submitted). */
  finish(): void {
    this.staging?.destroy();
    this.staging = null;
    this.byDtype.clear();
    this.uniform.destroy();
  }
}

const NO_ROW = 0xffffffff;

/** A weight whose checkpoint rows held NaN or ±Inf, as the quantizers counted them. */
export interface NonFiniteReport {
  /** The builder's label (the loader's weight label). */
  label: string;
  /** Non-finite input values seen over the whole weight. */
  count: number;
  /** The first weight row holding one. */
  firstRow: number;
}

/**
 * The non-finite input counters (NaN, ±Inf) of a load's GPU-built weights: the loader adds each
 * builder's `nonFinite` counter (each quantizer thread that meets one adds to it, an atomic in
 * quant_common.wgsl touched only when there is something to count), then reads them all back with
 * one mapAsync once the weights are built (`results`), before anything is cached, and fails with
 * `bad-tensor` naming the tensor.
 */
export class NonFiniteCheck {
  private readonly rt: Runtime;
  private entries: Array<{ label: string; buffer: GPUBuffer }> = [];

  constructor(rt: Runtime) {
    this.rt = rt;
  }

  add(label: string, buffer: GPUBuffer): void {
    this.entries.push({ label, buffer });
  }

  /** Reads every counter back (after the quantizers queued so far) and frees them; weights with non-finite inputs. */
  async results(): Promise<NonFiniteReport[]> {
    const list = this.entries;
    this.entries = [];
    if (list.length === 0) return [];
    const device = this.rt.device;
    const staging = device.createBuffer({ label: 'nonfinite_readback', size: list.length * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    try {
      const enc = device.createCommandEncoder({ label: 'nonfinite_readback' });
      list.forEach((e, i) => enc.copyBufferToBuffer(e.buffer, 0, staging, i * 8, 8));
      device.queue.submit([enc.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const v = new Uint32Array(staging.getMappedRange().slice(0));
      staging.unmap();
      const out: NonFiniteReport[] = [];
      list.forEach((e, i) => {
        if (v[2 * i] > 0) out.push({ label: e.label, count: v[2 * i], firstRow: v[2 * i + 1] });
      });
      return out;
    } finally {
      staging.destroy();
      for (const e of list) e.buffer.destroy();
    }
  }

  /** Frees the counters not read yet. */
  end(): void {
    for (const e of this.entries) e.buffer.destroy();
    this.entries = [];
  }
}
