import { NibbleError } from '../errors.ts';
import { split2d, type Runtime } from '../kernels/runtime.ts';
import { DTYPE_BYTES, type DType } from '../loader/safetensors.ts';
import type { ShaderSource } from './format.ts';
import quantCommon from '../../shaders/quant_common.wgsl?raw';

/** Checkpoint dtypes the quantizers read (the `dtype` field of quant_common.wgsl's Chunk). */
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
 * the quantizer, which writes codes and scales straight into the weight's buffers at row0.
 * Queue order (writeBuffer, then submit, per chunk) keeps chunks apart. The host never holds more
 * than the caller's chunk, and never converts it: decoding the dtype is the kernel's job.
 */
export class ChunkQuantizer {
  readonly uniform: GPUBuffer;
  private staging: GPUBuffer | null = null;
  private bindGroup: GPUBindGroup | null = null;
  private readonly pipeline: GPUComputePipeline;
  private readonly data = new Uint32Array(CHUNK_BYTES / 4);
  private readonly tail = new Uint8Array(4);

  constructor(
    private readonly rt: Runtime,
    private readonly label: string,
    private readonly rows: number,
    private readonly cols: number,
    kernel: ShaderSource,
    private readonly outputs: GPUBuffer[],
    private readonly geo: ChunkGeometry,
  ) {
    this.pipeline = rt.pipeline(kernel.name, kernel.code, 'main', {});
    this.uniform = rt.buffer(CHUNK_BYTES, `${label}.chunk`, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
  }

  /** Fills the Chunk uniform (queued before the next submit); `units` overrides the geometry's. */
  setChunk(c: { row0: number; rows: number; dtype: number; units?: number }): void {
    const g = this.geo;
    this.data.set([c.row0, c.rows, c.dtype, this.cols, g.group, g.rowWords, g.groups, c.units ?? g.units]);
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
      this.bindGroup = bindAt(
        this.rt,
        this.pipeline,
        [[0, this.uniform], [1, this.staging], ...this.outputs.map((b, i): [number, GPUBuffer] => [2 + i, b])],
        `${this.label}.quantize`,
      );
    }
    if (whole > 0) q.writeBuffer(this.staging, 0, bytes as Uint8Array<ArrayBuffer>, 0, whole);
    if (padded > whole) {
      this.tail.fill(0);
      this.tail.set(bytes.subarray(whole));
      q.writeBuffer(this.staging, whole, this.tail);
    }
    this.setChunk({ row0, rows: n, dtype: code });
    const grid = split2d(Math.ceil((n * this.geo.units) / 64));
    submitDispatches(this.rt, `${this.label}.quantize`, [{ pipeline: this.pipeline, bindGroup: this.bindGroup!, grid }]);
  }

  /** Releases the staging and uniform buffers (after any work already submitted). */
  finish(): void {
    this.staging?.destroy();
    this.staging = null;
    this.bindGroup = null;
    this.uniform.destroy();
  }
}
