import type { GpuContext } from '../gpu/context.ts';
import { NibbleError } from '../errors.ts';
import { COMMON_WGSL, STEP_BYTES, encodeStep } from './uniforms.ts';

/** The bytes Runtime.buffer allocates for `size`: whole 16-byte units, at least 16 (storage bindings must not be empty). */
export function bufferSize(size: number): number {
  return Math.max(16, Math.ceil(size / 16) * 16);
}

const DIRECTIVE = /^\s*(enable|requires|diagnostic)\b[^;]*;\s*$/;

/**
 * A shader's code after the prelude (shaders/common.wgsl: Step, SampleParams, argmaxBetter) that
 * every shader is compiled with; its directives (`enable`, `requires`, `diagnostic`) go first, as
 * WGSL requires.
 */
export function withPrelude(code: string): string {
  const lines = code.split('\n');
  const directives = lines.filter((l) => DIRECTIVE.test(l));
  const rest = lines.filter((l) => !DIRECTIVE.test(l));
  return [...directives, COMMON_WGSL, ...rest].join('\n');
}

/**
 * The dynamic shape of one forward pass, written to the `step` uniform buffer before each
 * submit (16 bytes): `struct Step { T, pos0, headRows, pad }` of shaders/common.wgsl, the prelude
 * prepended to every shader (encoded by kernels/uniforms.ts).
 */
export interface StepShape {
  /** Tokens in this pass (1 when decoding). */
  T: number;
  /** Position of the first token in the sequence (= tokens already in the KV cache). */
  pos0: number;
  /** Rows of logits to compute (the last `headRows` tokens of the pass). */
  headRows: number;
}

/** One recorded dispatch: pipeline and bind group are made at load (or swapped once by Runtime.upgrade); the grid varies per pass. */
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

interface PipelineCaches {
  pipelines: Map<string, GPUComputePipeline>;
  /** Pipelines being compiled by createComputePipelineAsync (moved to `pipelines` when done). */
  compiling: Map<string, Promise<GPUComputePipeline>>;
  modules: Map<string, GPUShaderModule>;
}
const PIPELINE_CACHES = new WeakMap<GPUDevice, PipelineCaches>();

/** Splits a 1-D count of workgroups over x and y (src/gpu/grid.ts: the weight formats' quantizers use it too). */
export { split2d } from '../gpu/grid.ts';

/**
 * Thin layer over a GPUDevice: pipeline cache (keyed by shader, entry point and override
 * constants), buffer helpers, and op recording. Kernel wrappers in kernels/ build Ops with it.
 */
export class Runtime {
  readonly device: GPUDevice;
  readonly ctx: GpuContext;
  /** The shared 16-byte Step uniform every op binds at binding 0. */
  readonly step: GPUBuffer;
  private caches: PipelineCaches;
  /** Ops waiting for their pipeline (see pipelineAsync / ready). */
  private pending: Promise<void>[] = [];
  /** Better pipelines for built ops, compiled only when upgrade() is called (see deferUpgrade). */
  private upgrades: Array<() => Promise<void>> = [];
  private destroyed = false;
  private dummy: GPUBuffer | null = null;
  private stepData = new ArrayBuffer(STEP_BYTES);
  /** Set to time each op (one pass per op, see PassProfiler); null (default): one pass, no queries. */
  profiler: PassProfiler | null = null;
  /**
   * Told of every pipeline this Runtime compiles anew (not of cache hits): `compiled` settles when
   * the compilation is done (load progress).
   */
  onCompile: ((compiled: Promise<unknown>) => void) | null = null;

  constructor(ctx: GpuContext) {
    this.ctx = ctx;
    this.device = ctx.device;
    // pipelines are per device, not per Runtime: a second model on the same device (a draft, a
    // reload) reuses the compiled pipelines
    let caches = PIPELINE_CACHES.get(this.device);
    if (!caches) {
      caches = { pipelines: new Map(), compiling: new Map(), modules: new Map() };
      PIPELINE_CACHES.set(this.device, caches);
    }
    this.caches = caches;
    this.step = this.device.createBuffer({
      label: 'step',
      size: STEP_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
  }

  /** A compute pipeline, compiled now (blocking the queue's compiler) or taken from the cache. */
  pipeline(name: string, code: string, entryPoint: string, constants: Record<string, number | boolean>): GPUComputePipeline {
    const d = this.describe(name, code, entryPoint, constants);
    let p = this.caches.pipelines.get(d.key);
    if (p) return p;
    p = this.device.createComputePipeline(d.desc);
    this.caches.pipelines.set(d.key, p);
    // the GPU process compiles in queue order: a marker queued now resolves once this one is built
    this.onCompile?.(this.device.queue.onSubmittedWorkDone());
    return p;
  }

  /**
   * The same pipeline through createComputePipelineAsync: the model's pipelines (dozens) are all
   * requested first and compile concurrently (the browser compiles them on worker threads); an op
   * built on one gets its pipeline and bind group when it is ready (`await ready()` before use).
   */
  pipelineAsync(name: string, code: string, entryPoint: string, constants: Record<string, number | boolean>): GPUComputePipeline | Promise<GPUComputePipeline> {
    const d = this.describe(name, code, entryPoint, constants);
    const done = this.caches.pipelines.get(d.key);
    if (done) return done;
    let p = this.caches.compiling.get(d.key);
    if (!p) {
      p = this.device.createComputePipelineAsync(d.desc).then(
        (pipe) => {
          this.caches.pipelines.set(d.key, pipe);
          this.caches.compiling.delete(d.key);
          return pipe;
        },
        (e: unknown) => {
          this.caches.compiling.delete(d.key);
          throw new NibbleError('gpu-error', `compiling ${d.desc.label}: ${(e as Error)?.message ?? String(e)}`);
        },
      );
      p.catch(() => {}); // observed through the ops' ready()
      this.caches.compiling.set(d.key, p);
      this.onCompile?.(p);
    }
    return p;
  }

  /** Resolves when every op built so far has its pipeline (and rejects with the first compile error). */
  async ready(): Promise<void> {
    while (this.pending.length) {
      const batch = this.pending.splice(0);
      await Promise.all(batch);
    }
  }

  private describe(name: string, code: string, entryPoint: string, constants: Record<string, number | boolean>): { key: string; desc: GPUComputePipelineDescriptor } {
    // keyed by the code itself: two shaders may share a name (format variants) but not code
    const key = `${code}\u0000${entryPoint}\u0000${JSON.stringify(constants)}`;
    let module = this.caches.modules.get(code);
    if (!module) {
      module = this.device.createShaderModule({ label: name, code: withPrelude(code) });
      this.caches.modules.set(code, module);
    }
    const c: Record<string, number> = {};
    for (const [k, v] of Object.entries(constants)) c[k] = typeof v === 'boolean' ? (v ? 1 : 0) : v;
    return { key, desc: { label: `${name}:${entryPoint}`, layout: 'auto', compute: { module, entryPoint, constants: c } } };
  }

  /**
   * Registers a better pipeline for `op` (CPU adapters: a larger prefill tile, slow to compile),
   * compiled only when upgrade() runs: `make` requests it and gives the grid that goes with it. Once
   * it is ready, the op's pipeline, bind group (same buffers) and grid are swapped together, between
   * two record() calls (JavaScript runs one at a time), so a pass never mixes the two.
   */
  deferUpgrade(op: Op, buffers: GPUBuffer[], make: () => { pipeline: GPUComputePipeline | Promise<GPUComputePipeline>; grid: Op['grid'] }): void {
    this.upgrades.push(async () => {
      const m = make();
      const pipeline = await m.pipeline;
      if (this.destroyed) return;
      op.pipeline = pipeline;
      op.bindGroup = this.bindGroup(pipeline, [this.step, ...buffers], op.label);
      op.grid = m.grid;
    });
  }

  /** Upgrades registered and not yet started (deferUpgrade). */
  get upgradesPending(): number {
    return this.upgrades.length;
  }

  /**
   * Compiles every deferred pipeline registered so far (concurrently) and swaps each into its op
   * when ready; resolves when all are in use, rejects with the first compile error (the ops that
   * failed keep their pipelines). Call it after ready(): the engine does once its load is done.
   */
  async upgrade(): Promise<void> {
    const batch = this.upgrades.splice(0);
    await Promise.all(batch.map((u) => u()));
  }

  /** Frees the runtime's own buffers (the step uniform, the placeholder of optional bindings). */
  destroy(): void {
    this.destroyed = true;
    this.step.destroy();
    this.dummy?.destroy();
    this.dummy = null;
  }

  buffer(size: number, label: string, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC): GPUBuffer {
    // WebGPU wants sizes that are multiples of 4; storage bindings must not be empty.
    const s = bufferSize(size);
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

  /**
   * Builds an op whose binding 0 is the step uniform and bindings 1.. are `buffers`. With a pipeline
   * still compiling (pipelineAsync), its pipeline and bind group are set once it is ready: call
   * `ready()` before recording it.
   */
  op(label: string, pipeline: GPUComputePipeline | Promise<GPUComputePipeline>, buffers: GPUBuffer[], grid: Op['grid']): Op {
    const all = [this.step, ...buffers];
    if (!(pipeline instanceof Promise)) return { label, pipeline, bindGroup: this.bindGroup(pipeline, all, label), grid };
    const op: Op = { label, pipeline: null as unknown as GPUComputePipeline, bindGroup: null as unknown as GPUBindGroup, grid };
    const set = pipeline.then((p) => {
      op.pipeline = p;
      op.bindGroup = this.bindGroup(p, all, label);
    });
    set.catch(() => {}); // observed by ready(); never an unhandled rejection when a load fails first
    this.pending.push(set);
    return op;
  }

  /** Writes the step uniform (queued before the next submit). */
  setStep(s: StepShape): void {
    this.device.queue.writeBuffer(this.step, 0, encodeStep(s, this.stepData));
  }

  /** Records ops into one compute pass (WebGPU orders storage writes between dispatches). */
  record(encoder: GPUCommandEncoder, ops: readonly Op[], s: StepShape): void {
    if (this.profiler) return this.recordProfiled(encoder, ops, s, this.profiler);
    for (const op of ops) {
      if (!op.pipeline) throw new NibbleError('gpu-error', `op ${op.label} recorded before its pipeline was ready (await Runtime.ready())`);
    }
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
      if (!op.pipeline) throw new NibbleError('gpu-error', `op ${op.label} recorded before its pipeline was ready (await Runtime.ready())`);
    }
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
