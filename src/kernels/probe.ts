import probeSrc from '../../shaders/probe.wgsl?raw';
import type { Op, PassProfiler, StepShape } from './runtime.ts';
import { NibbleError } from '../errors.ts';

/**
 * The roofline probe: the streaming-read bandwidth this device reaches on a large f32 buffer, the
 * ceiling a memory-bound decode step (every weight read once per token) is compared with. Runs
 * in the same page on the same device as the engine. Several variants (workgroup size, which
 * elements an invocation reads: see shaders/probe.wgsl) each get a warm-up, then `reps` timed
 * reps; a variant's figure is the median of its reps and the probe's the best variant's.
 *
 * Time comes from timestamp-query (GPU time of one compute pass) when the device has it, else
 * from the wall clock around submit → queue.onSubmittedWorkDone. A rep dispatches the variant
 * `inner` times in one pass, with `inner` chosen after the warm-up so that a rep lasts about
 * `targetMs` (fast GPUs stream 256 MiB in well under a millisecond).
 */
export interface RooflineVariant {
  /** Workgroup size (invocations). */
  workgroup: number;
  /** Workgroups dispatched. */
  workgroups: number;
  /** 'stride': grid-strided loop; 'slab': a contiguous slab per invocation; 'block': a contiguous block per workgroup. */
  mode: 'stride' | 'slab' | 'block';
  /** Dispatches per timed rep. */
  inner: number;
  /** Median GB/s (1e9 bytes/s) over the timed reps. */
  gbps: number;
  /** GB/s of each rep. */
  reps: number[];
}

export interface RooflineResult {
  /** The best variant's median streaming-read GB/s. */
  gbps: number;
  /** Bytes one dispatch reads. */
  bytes: number;
  /** 'timestamp-query' or 'queue' (wall clock to onSubmittedWorkDone). */
  timer: 'timestamp-query' | 'queue';
  variants: RooflineVariant[];
}

export interface RooflineOptions {
  /** Bytes of the streamed buffer (default 256 MiB, capped by the device's buffer and binding limits). */
  bytes?: number;
  /** Timed reps per variant (default 5). */
  reps?: number;
  /** Aim for timed reps of about this long (default 20 ms). */
  targetMs?: number;
}

const MODES = { stride: 0, slab: 1, block: 2 } as const;
const MAX_WG_PER_DIM = 65535;

const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function grid(n: number): [number, number] {
  return n <= MAX_WG_PER_DIM ? [n, 1] : [MAX_WG_PER_DIM, Math.ceil(n / MAX_WG_PER_DIM)];
}

/** The probe's variants: (workgroup, mode, workgroups); slab / block sizes follow from the workgroup count. */
function probePlan(n: number): Array<{ workgroup: number; mode: RooflineVariant['mode']; workgroups: number }> {
  const clampGroups = (g: number, wg: number) => Math.max(1, Math.min(g, Math.ceil(n / wg)));
  return [
    { workgroup: 256, mode: 'stride', workgroups: clampGroups(2048, 256) },
    { workgroup: 256, mode: 'stride', workgroups: clampGroups(16384, 256) },
    { workgroup: 64, mode: 'stride', workgroups: clampGroups(8192, 64) },
    { workgroup: 256, mode: 'block', workgroups: clampGroups(4096, 256) },
    { workgroup: 64, mode: 'slab', workgroups: clampGroups(Math.ceil(n / 64 / 64), 64) }, // 64 vec4 (1 KiB) per invocation
    { workgroup: 256, mode: 'slab', workgroups: clampGroups(Math.ceil(n / 64 / 256), 256) },
  ];
}

interface PassTimer {
  querySet: GPUQuerySet;
  resolve: GPUBuffer;
  readback: GPUBuffer;
}

/** One pass of `inner` dispatches of a probe variant; its time in ms (timestamp queries, else the wall clock). */
async function timePass(
  device: GPUDevice,
  pipeline: GPUComputePipeline,
  bg: GPUBindGroup,
  [gx, gy]: [number, number],
  inner: number,
  timer: PassTimer | null,
): Promise<number> {
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass(
    timer ? { timestampWrites: { querySet: timer.querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : undefined,
  );
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bg);
  for (let i = 0; i < inner; i++) pass.dispatchWorkgroups(gx, gy, 1);
  pass.end();
  if (timer) {
    enc.resolveQuerySet(timer.querySet, 0, 2, timer.resolve, 0);
    enc.copyBufferToBuffer(timer.resolve, 0, timer.readback, 0, 16);
  }
  await device.queue.onSubmittedWorkDone(); // start from an idle queue
  const t0 = performance.now();
  device.queue.submit([enc.finish()]);
  await device.queue.onSubmittedWorkDone();
  const wall = performance.now() - t0;
  if (!timer) return wall;
  await timer.readback.mapAsync(GPUMapMode.READ);
  const t = new BigUint64Array(timer.readback.getMappedRange(0, 16).slice(0));
  timer.readback.unmap();
  const gpu = Number(t[1] - t[0]) / 1e6;
  // a device may report 0 (or nonsense) for passes it could not time: fall back to the wall clock
  return gpu > 0 && gpu <= wall * 1.5 + 1 ? gpu : wall;
}

export async function measureRoofline(device: GPUDevice, opts: RooflineOptions = {}): Promise<RooflineResult> {
  const limit = Math.min(device.limits.maxBufferSize, device.limits.maxStorageBufferBindingSize);
  // a multiple of 64 KiB (whole vec4s, whole slabs), at least 1 MiB
  const bytes = Math.max(1 << 20, Math.floor(Math.min(opts.bytes ?? 256 * 2 ** 20, limit) / 65536) * 65536);
  const n = bytes / 16;
  const repsWanted = Math.max(1, opts.reps ?? 5);
  const targetMs = opts.targetMs ?? 20;
  const timestamps = device.features.has('timestamp-query');

  const plan = probePlan(n);
  const maxInvocations = Math.max(...plan.map((v) => v.workgroup * v.workgroups));

  const module = device.createShaderModule({ label: 'probe', code: probeSrc });
  const src = device.createBuffer({ label: 'probe_src', size: bytes, usage: GPUBufferUsage.STORAGE });
  const out = device.createBuffer({ label: 'probe_out', size: maxInvocations * 4, usage: GPUBufferUsage.STORAGE });
  const params: GPUBuffer[] = [];
  const timer: PassTimer | null = timestamps
    ? {
        querySet: device.createQuerySet({ type: 'timestamp', count: 2 }),
        resolve: device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }),
        readback: device.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ }),
      }
    : null;
  const uniform = (per: number) => {
    const b = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(b, 0, new Uint32Array([n, per, 0, 0]));
    params.push(b);
    return b;
  };
  device.pushErrorScope('validation');
  let popped = false;
  try {
    // fill src with non-zero values on the GPU
    const fill = device.createComputePipeline({ label: 'probe:fill', layout: 'auto', compute: { module, entryPoint: 'fill' } });
    const fillBg = device.createBindGroup({
      layout: fill.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: uniform(0) } },
        { binding: 1, resource: { buffer: src } },
      ],
    });
    {
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(fill);
      pass.setBindGroup(0, fillBg);
      const [gx, gy] = grid(Math.ceil(n / 256));
      pass.dispatchWorkgroups(gx, gy, 1);
      pass.end();
      device.queue.submit([enc.finish()]);
    }

    const variants: RooflineVariant[] = [];
    for (const v of plan) {
      const invocations = v.workgroup * v.workgroups;
      const per = v.mode === 'slab' ? Math.ceil(n / invocations) : v.mode === 'block' ? Math.ceil(n / v.workgroups) : 0;
      const pipeline = device.createComputePipeline({
        label: `probe:${v.mode}:${v.workgroup}`,
        layout: 'auto',
        compute: { module, entryPoint: 'main', constants: { WG: v.workgroup, MODE: MODES[v.mode] } },
      });
      const bg = device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: uniform(per) } },
          { binding: 1, resource: { buffer: src } },
          { binding: 2, resource: { buffer: out, size: invocations * 4 } },
        ],
      });
      const rep = (inner: number) => timePass(device, pipeline, bg, grid(v.workgroups), inner, timer);
      const warm = await rep(1); // pipeline compile, caches
      const inner = Math.max(1, Math.min(64, Math.ceil(targetMs / Math.max(warm, 1e-3))));
      const reps: number[] = [];
      for (let i = 0; i < repsWanted; i++) {
        const ms = await rep(inner);
        reps.push((bytes * inner) / (ms * 1e6));
      }
      variants.push({ workgroup: v.workgroup, workgroups: v.workgroups, mode: v.mode, inner, gbps: median(reps), reps });
    }
    popped = true;
    const err = await device.popErrorScope();
    if (err) throw new NibbleError('gpu-error', `roofline probe: ${err.message}`);
    return { gbps: Math.max(...variants.map((v) => v.gbps)), bytes, timer: timer ? 'timestamp-query' : 'queue', variants };
  } finally {
    if (!popped) await device.popErrorScope().catch(() => null);
    src.destroy();
    out.destroy();
    for (const b of params) b.destroy();
    timer?.querySet.destroy();
    timer?.resolve.destroy();
    timer?.readback.destroy();
  }
}

/** One kernel's share of a profiled decode step (ops grouped by label, layer index stripped). */
export interface KernelProfile {
  /** The op label without its layer prefix, e.g. `qkv` for `layer3.qkv`. */
  kernel: string;
  /** The pipelines' labels (shader:entry point) behind it. */
  shader: string;
  /** Dispatches per step. */
  callsPerStep: number;
  /** GPU ms per step, summed over its calls. */
  msPerStep: number;
  /** Share of the step's summed kernel time (%). */
  percent: number;
}

export interface ProfileResult {
  /** Steps timed (every op of the step got a query pair). */
  steps: number;
  /** Steps that matched but ran out of query slots (not counted). */
  droppedSteps: number;
  /** Σ kernel GPU time per step (ms). */
  gpuMsPerStep: number;
  /** First pass's start to the last pass's end per step (ms): kernel time plus the gaps between passes. */
  spanMsPerStep: number;
  kernels: KernelProfile[];
}

const QUERIES_PER_SET = 4096; // the most a GPUQuerySet may hold

/**
 * A PassProfiler (see Runtime.profiler) that times the ops of the steps `filter` accepts (default:
 * decode steps, T = 1) with timestamp-query, one query pair per op, in up to `maxQueries` queries;
 * `collect()` resolves and reads them back once the work is done and aggregates per kernel.
 */
export class OpProfiler implements PassProfiler {
  private readonly device: GPUDevice;
  private readonly filter: (s: StepShape) => boolean;
  private readonly maxQueries: number;
  private sets: GPUQuerySet[] = [];
  private used = 0;
  private steps: Array<{ ops: Array<{ label: string; shader: string; q: number }>; complete: boolean }> = [];
  private current: { ops: Array<{ label: string; shader: string; q: number }>; complete: boolean } | null = null;

  constructor(device: GPUDevice, opts: { filter?: (s: StepShape) => boolean; maxQueries?: number } = {}) {
    if (!device.features.has('timestamp-query')) throw new NibbleError('bad-argument', 'the device has no timestamp-query feature');
    this.device = device;
    this.filter = opts.filter ?? ((s) => s.T === 1);
    this.maxQueries = Math.max(2, Math.floor((opts.maxQueries ?? 8 * QUERIES_PER_SET) / 2) * 2);
  }

  begin(s: StepShape): void {
    this.current = this.filter(s) ? { ops: [], complete: true } : null;
    if (this.current) this.steps.push(this.current);
  }

  slot(op: Op, _s: StepShape): GPUComputePassTimestampWrites | undefined {
    const step = this.current;
    if (!step || !step.complete) return undefined;
    if (this.used + 2 > this.maxQueries) {
      step.complete = false;
      return undefined;
    }
    const q = this.used;
    this.used += 2;
    const set = Math.floor(q / QUERIES_PER_SET);
    while (this.sets.length <= set) this.sets.push(this.device.createQuerySet({ label: `profile${this.sets.length}`, type: 'timestamp', count: QUERIES_PER_SET }));
    step.ops.push({ label: op.label, shader: op.pipeline.label, q });
    const i = q % QUERIES_PER_SET;
    return { querySet: this.sets[set], beginningOfPassWriteIndex: i, endOfPassWriteIndex: i + 1 };
  }

  /** Waits for the queue, reads every timestamp back and aggregates the complete steps. */
  async collect(): Promise<ProfileResult> {
    const steps = this.steps.filter((s) => s.complete && s.ops.length > 0);
    const dropped = this.steps.length - steps.length;
    if (this.used === 0) return { steps: 0, droppedSteps: dropped, gpuMsPerStep: 0, spanMsPerStep: 0, kernels: [] };
    const bytes = this.sets.length * QUERIES_PER_SET * 8;
    const resolve = this.device.createBuffer({ label: 'profile_resolve', size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.device.createBuffer({ label: 'profile_read', size: bytes, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
    let t: BigUint64Array;
    try {
      const enc = this.device.createCommandEncoder();
      this.sets.forEach((set, i) => {
        const count = Math.min(QUERIES_PER_SET, this.used - i * QUERIES_PER_SET);
        if (count > 0) enc.resolveQuerySet(set, 0, count, resolve, i * QUERIES_PER_SET * 8);
      });
      enc.copyBufferToBuffer(resolve, 0, read, 0, bytes);
      this.device.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      t = new BigUint64Array(read.getMappedRange().slice(0));
      read.unmap();
    } finally {
      resolve.destroy();
      read.destroy();
    }
    const ns = (a: number, b: number) => Math.max(0, Number(t[b] - t[a]));
    const groups = new Map<string, { shaders: Set<string>; calls: number; ns: number }>();
    let total = 0;
    let span = 0;
    for (const step of steps) {
      for (const o of step.ops) {
        const key = kernelName(o.label);
        let g = groups.get(key);
        if (!g) groups.set(key, (g = { shaders: new Set(), calls: 0, ns: 0 }));
        g.shaders.add(o.shader);
        g.calls++;
        const d = ns(o.q, o.q + 1);
        g.ns += d;
        total += d;
      }
      span += ns(step.ops[0].q, step.ops[step.ops.length - 1].q + 1);
    }
    const n = steps.length;
    const kernels: KernelProfile[] = [...groups.entries()]
      .map(([kernel, g]) => ({
        kernel,
        shader: [...g.shaders].join(', '),
        callsPerStep: g.calls / n,
        msPerStep: g.ns / n / 1e6,
        percent: total > 0 ? (100 * g.ns) / total : 0,
      }))
      .sort((a, b) => b.msPerStep - a.msPerStep);
    return { steps: n, droppedSteps: dropped, gpuMsPerStep: total / n / 1e6, spanMsPerStep: span / n / 1e6, kernels };
  }

  destroy(): void {
    for (const s of this.sets) s.destroy();
    this.sets = [];
  }
}

/** An op label with its layer index stripped: `layer3.qkv:nf4:gemv` → `qkv:nf4:gemv`. */
export function kernelName(label: string): string {
  return label.replace(/(^|[.:_/])layers?[._]?\d+[.:_/]?/g, '$1').replace(/^[.:_/]+/, '') || label;
}
