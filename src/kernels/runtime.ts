import type { GpuContext } from '../gpu/context.ts';
import { NibbleError } from '../errors.ts';

/**
 * The dynamic shape of one forward pass, written to the `step` uniform buffer before each
 * submit (16 bytes). Every shader declares the same `struct Step { T, pos0, headRows, pad }`.
 */
export interface StepShape {
  /** Tokens in this pass (1 when decoding). */
  T: number;
  /** Position of the first token in the sequence (= tokens already in the KV cache). */
  pos0: number;
  /** Rows of logits to compute (the last `headRows` tokens of the pass). */
  headRows: number;
}

/** One recorded dispatch: pipeline and bind group are made once at load; only the grid varies. */
export interface Op {
  label: string;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  grid: (s: StepShape) => readonly [number, number, number];
}

/**
 * Per-op GPU timing (timestamp-query), e.g. the bench's `--profile`. While `Runtime.profiler` is
 * set, record() gives every op its own compute pass and asks `slot` for that pass's
 * timestampWrites (undefined: leave it untimed); reading the queries back is the profiler's job.
 */
export interface PassProfiler {
  /** Called once per record() (one step or prompt chunk), before its ops. */
  begin(s: StepShape): void;
  slot(op: Op, s: StepShape): GPUComputePassTimestampWrites | undefined;
}

const MAX_WG = 65535;

const PIPELINE_CACHES = new WeakMap<GPUDevice, { pipelines: Map<string, GPUComputePipeline>; modules: Map<string, GPUShaderModule> }>();

/** Splits a 1-D count of workgroups over x and y when it exceeds the per-dimension limit. */
export function split2d(n: number): [number, number] {
  if (n <= MAX_WG) return [n, 1];
  return [MAX_WG, Math.ceil(n / MAX_WG)];
}

/**
 * Thin layer over a GPUDevice: pipeline cache (keyed by shader, entry point and override
 * constants), buffer helpers, and op recording. Kernel wrappers in kernels/ build Ops with it.
 */
export class Runtime {
  readonly device: GPUDevice;
  readonly ctx: GpuContext;
  /** The shared 16-byte Step uniform every op binds at binding 0. */
  readonly step: GPUBuffer;
  private pipelines: Map<string, GPUComputePipeline>;
  private modules: Map<string, GPUShaderModule>;
  private dummy: GPUBuffer | null = null;
  private stepData = new Uint32Array(4);
  /** Set to time each op (one pass per op, see PassProfiler); null (default): one pass, no queries. */
  profiler: PassProfiler | null = null;

  constructor(ctx: GpuContext) {
    this.ctx = ctx;
    this.device = ctx.device;
    // pipelines are per device, not per Runtime: a second model on the same device (a draft, a
    // reload) reuses the compiled pipelines
    let caches = PIPELINE_CACHES.get(this.device);
    if (!caches) {
      caches = { pipelines: new Map(), modules: new Map() };
      PIPELINE_CACHES.set(this.device, caches);
    }
    this.pipelines = caches.pipelines;
    this.modules = caches.modules;
    this.step = this.device.createBuffer({
      label: 'step',
      size: 16,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
  }

  pipeline(name: string, code: string, entryPoint: string, constants: Record<string, number | boolean>): GPUComputePipeline {
    // keyed by the code itself: two shaders may share a name (format variants) but not code
    const key = `${code}\u0000${entryPoint}\u0000${JSON.stringify(constants)}`;
    let p = this.pipelines.get(key);
    if (p) return p;
    let module = this.modules.get(code);
    if (!module) {
      module = this.device.createShaderModule({ label: name, code });
      this.modules.set(code, module);
    }
    const c: Record<string, number> = {};
    for (const [k, v] of Object.entries(constants)) c[k] = typeof v === 'boolean' ? (v ? 1 : 0) : v;
    p = this.device.createComputePipeline({
      label: `${name}:${entryPoint}`,
      layout: 'auto',
      compute: { module, entryPoint, constants: c },
    });
    this.pipelines.set(key, p);
    return p;
  }

  buffer(size: number, label: string, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC): GPUBuffer {
    // WebGPU wants sizes that are multiples of 4; storage bindings must not be empty.
    const s = Math.max(16, Math.ceil(size / 16) * 16);
    const limit = Math.min(this.ctx.limits.maxBufferSize, this.ctx.limits.maxStorageBufferBindingSize);
    if (s > limit) {
      throw new NibbleError(
        'gpu-limit',
        `"${label}" needs a ${(s / 2 ** 20).toFixed(1)} MiB buffer but this GPU (${this.ctx.adapterInfo.summary}) binds at most ` +
          `${(limit / 2 ** 20).toFixed(1)} MiB: use a smaller weight format (quant: 'int8' or 'nf4') or a shorter contextLength`,
      );
    }
    return this.device.createBuffer({ label, size: s, usage });
  }

  /** A buffer initialised with `data`. */
  upload(data: ArrayBufferView, label: string): GPUBuffer {
    const b = this.buffer(data.byteLength, label);
    this.device.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength);
    return b;
  }

  /** A 16-byte placeholder for optional bindings a variant does not read. */
  get dummyBuffer(): GPUBuffer {
    if (!this.dummy) this.dummy = this.buffer(16, 'dummy');
    return this.dummy;
  }

  bindGroup(pipeline: GPUComputePipeline, buffers: GPUBuffer[], label: string): GPUBindGroup {
    return this.device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
  }

  /** Builds an op whose binding 0 is the step uniform and bindings 1.. are `buffers`. */
  op(label: string, pipeline: GPUComputePipeline, buffers: GPUBuffer[], grid: Op['grid']): Op {
    return { label, pipeline, bindGroup: this.bindGroup(pipeline, [this.step, ...buffers], label), grid };
  }

  /** Writes the step uniform (queued before the next submit). */
  setStep(s: StepShape): void {
    this.stepData[0] = s.T;
    this.stepData[1] = s.pos0;
    this.stepData[2] = s.headRows;
    this.stepData[3] = 0;
    this.device.queue.writeBuffer(this.step, 0, this.stepData);
  }

  /** Records ops into one compute pass (WebGPU orders storage writes between dispatches). */
  record(encoder: GPUCommandEncoder, ops: readonly Op[], s: StepShape): void {
    if (this.profiler) return this.recordProfiled(encoder, ops, s, this.profiler);
    const pass = encoder.beginComputePass();
    for (const op of ops) {
      const [x, y, z] = op.grid(s);
      if (x === 0 || y === 0 || z === 0) continue;
      pass.setPipeline(op.pipeline);
      pass.setBindGroup(0, op.bindGroup);
      pass.dispatchWorkgroups(x, y, z);
    }
    pass.end();
  }

  /** record() while profiling: one compute pass per op, timed where the profiler gives it query slots. */
  private recordProfiled(encoder: GPUCommandEncoder, ops: readonly Op[], s: StepShape, profiler: PassProfiler): void {
    profiler.begin(s);
    for (const op of ops) {
      const [x, y, z] = op.grid(s);
      if (x === 0 || y === 0 || z === 0) continue;
      const timestampWrites = profiler.slot(op, s);
      const pass = encoder.beginComputePass(timestampWrites ? { label: op.label, timestampWrites } : { label: op.label });
      pass.setPipeline(op.pipeline);
      pass.setBindGroup(0, op.bindGroup);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
    }
  }

  /** Sets the step, records, submits. */
  run(ops: readonly Op[], s: StepShape): void {
    this.setStep(s);
    const enc = this.device.createCommandEncoder();
    this.record(enc, ops, s);
    this.device.queue.submit([enc.finish()]);
  }

  /** Reads a buffer back (tests, logits for eval; never inside the decode loop). */
  async read(buffer: GPUBuffer, byteOffset = 0, byteLength = buffer.size - byteOffset): Promise<ArrayBuffer> {
    const staging = this.device.createBuffer({ size: byteLength, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(buffer, byteOffset, staging, 0, byteLength);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    return out;
  }
}
