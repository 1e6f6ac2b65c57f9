/**
 * Harness functions of the load tests (test/browser/load-progress.test.ts, preflight.test.ts),
 * spread into the harness page's API by harness.ts: every onProgress event of a load timed
 * against the moment each compute pipeline is compiled, and the memory preflight with the
 * checkpoint's Range requests counted (a refused load must not ask for a weight byte).
 * Plain JSON in, plain JSON out.
 */
import { liveBuffers, startCounting, stopCounting } from './gpu-buffers.ts';
import { Engine, type LoadOptions } from '../../src/api/engine.ts';
import { resolveSource } from '../../src/api/resolve.ts';
import { createGpuContext } from '../../src/gpu/context.ts';
import { Runtime } from '../../src/kernels/runtime.ts';
import { getFormat } from '../../src/quant/format.ts';
import '../../src/quant/formats.ts';
import type { LoadProgress } from '../../src/loader/weights.ts';
import type { ModelSource } from '../../src/source/types.ts';

type ErrorData = { code: string | null; message: string };
const errorData = (e: unknown): ErrorData => ({ code: (e as { code?: string }).code ?? null, message: String((e as Error)?.message ?? e) });

const liveBytes = () => liveBuffers().bytes;

/** Wraps a source: every range() is recorded; the first bytes of weight data of each file are known. */
function countingSource(inner: ModelSource) {
  const ranges: Array<{ path: string; start: number; end: number }> = [];
  const source: ModelSource = {
    description: inner.description,
    cacheId: inner.cacheId,
    text: (p, s) => inner.text(p, s),
    exists: (p, s) => inner.exists(p, s),
    size: (p, s) => inner.size(p, s),
    range: (path, start, end, s) => {
      ranges.push({ path, start, end });
      return inner.range(path, start, end, s);
    },
    ...(inner.metadata ? { metadata: (p: string, s?: AbortSignal) => inner.metadata!(p, s) } : {}),
  };
  /** Requests that reach past a file's header into its tensor data. */
  const weightRequests = async () => {
    const dataStart = new Map<string, number>();
    for (const r of ranges) {
      if (!dataStart.has(r.path)) {
        const head = new DataView((await inner.range(r.path, 0, 8)).buffer);
        dataStart.set(r.path, 8 + Number(head.getBigUint64(0, true)));
      }
    }
    return ranges.filter((r) => r.end > dataStart.get(r.path)!);
  };
  return { source, ranges, weightRequests };
}

/** A Llama-3.2-1B-shaped checkpoint (bf16, tied embeddings) whose header is all there is: no weight byte exists. */
function hugeSource(tokenizerFrom: ModelSource) {
  const cfg = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 16,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    head_dim: 64,
    vocab_size: 128256,
    max_position_embeddings: 131072,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    tie_word_embeddings: true,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'bfloat16',
  };
  const header: Record<string, unknown> = {};
  let off = 0;
  const t = (name: string, shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1) * 2;
    header[name] = { dtype: 'BF16', shape, data_offsets: [off, off + n] };
    off += n;
  };
  t('model.embed_tokens.weight', [cfg.vocab_size, cfg.hidden_size]);
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    t(`${p}.input_layernorm.weight`, [2048]);
    t(`${p}.self_attn.q_proj.weight`, [2048, 2048]);
    t(`${p}.self_attn.k_proj.weight`, [512, 2048]);
    t(`${p}.self_attn.v_proj.weight`, [512, 2048]);
    t(`${p}.self_attn.o_proj.weight`, [2048, 2048]);
    t(`${p}.post_attention_layernorm.weight`, [2048]);
    t(`${p}.mlp.gate_proj.weight`, [8192, 2048]);
    t(`${p}.mlp.up_proj.weight`, [8192, 2048]);
    t(`${p}.mlp.down_proj.weight`, [2048, 8192]);
  }
  t('model.norm.weight', [2048]);
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const head = new Uint8Array(8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  head.set(new TextEncoder().encode(json), 8);
  const fileSize = head.length + off;
  const own = new Set(['config.json', 'model.safetensors', 'model.safetensors.index.json', 'generation_config.json']);
  const src: ModelSource = {
    description: 'huge-model (a header only)',
    text: async (p, s) => (p === 'config.json' ? JSON.stringify(cfg) : tokenizerFrom.text(p, s)),
    exists: async (p, s) => (p === 'config.json' || p === 'model.safetensors' ? true : own.has(p) ? false : tokenizerFrom.exists(p, s)),
    size: async (p, s) => (p === 'model.safetensors' ? fileSize : tokenizerFrom.size(p, s)),
    range: async (p, start, end) => {
      if (p !== 'model.safetensors' || end > head.length) throw new Error(`huge-model: no bytes at ${p} [${start}, ${end})`);
      return head.slice(start, end);
    },
  };
  return { source: src, paramsGiB: off / 2 / 2 ** 30 };
}

export const loadApi = {
  /**
   * For each format and shape: the buffers its builder allocates (finished with no rows written)
   * against its `layout()` (what the memory preflight counts), both rounded as Runtime.buffer does.
   */
  async layoutCheck(a: { formats: string[]; shapes: Array<[number, number]> }) {
    const rt = new Runtime(await createGpuContext());
    const out: Array<{ format: string; rows: number; cols: number; built: number[]; layout: number[]; bytes: number; layoutBytes: number }> = [];
    const alloc = (n: number) => Math.max(16, Math.ceil(n / 16) * 16);
    for (const format of a.formats) {
      const f = getFormat(format)!;
      for (const [rows, cols] of a.shapes) {
        const w = f.create(rt, rows, cols, 'layout_check').finish();
        const l = f.layout!(rows, cols);
        out.push({ format, rows, cols, built: w.buffers.map((b) => b.size), layout: l.buffers.map(alloc), bytes: w.bytes, layoutBytes: l.bytes });
        for (const b of w.buffers) b.destroy();
      }
    }
    rt.step.destroy();
    return out;
  },

  /**
   * One load with every onProgress event timed (performance.now()), and the time each compute
   * pipeline made during the load was compiled (a queue marker after its creation: the GPU process
   * compiles pipelines in queue order). With `freshDevice`, the load runs on a device of its own,
   * so no pipeline is cached from earlier loads.
   */
  async progressLoad(a: { model: string; load?: LoadOptions; freshDevice?: boolean; generate?: boolean }) {
    const events: Array<LoadProgress & { t: number }> = [];
    const pipelinesReady: number[] = [];
    const made = new WeakSet<GPUComputePipeline>();
    const base = Runtime.prototype.pipeline;
    Runtime.prototype.pipeline = function (this: Runtime, ...args: Parameters<Runtime['pipeline']>) {
      const p = base.apply(this, args);
      if (!made.has(p)) {
        made.add(p);
        this.device.queue.onSubmittedWorkDone().then(() => pipelinesReady.push(performance.now()));
      }
      return p;
    };
    let device: GPUDevice | undefined;
    try {
      if (a.freshDevice) {
        const adapter = (await navigator.gpu.requestAdapter())!;
        const requiredFeatures = (['shader-f16', 'subgroups'] as const).filter((f) => adapter.features.has(f)) as GPUFeatureName[];
        device = await adapter.requestDevice({ requiredFeatures });
      }
      const t0 = performance.now();
      const engine = await Engine.load(a.model, { ...a.load, ...(device ? { device } : {}), onProgress: (p) => events.push({ ...p, t: performance.now() - t0 }) });
      const resolvedAt = performance.now() - t0;
      let firstGenerateMs: number | null = null;
      if (a.generate) {
        const g0 = performance.now();
        await engine.generate('Once', { maxNewTokens: 1 }).result;
        firstGenerateMs = performance.now() - g0;
      }
      await engine.dispose();
      return { events, pipelinesReady: pipelinesReady.map((t) => t - t0), resolvedAt, firstGenerateMs, loadMs: engine.info.loadMs };
    } finally {
      Runtime.prototype.pipeline = base;
      device?.destroy();
    }
  },

  /**
   * Engine.load through a source that records its Range requests: the error (or the engine's
   * memory estimate and weight bytes), and the requests that reached tensor data.
   */
  async countedLoad(a: { model: string; load?: LoadOptions }) {
    const c = countingSource(resolveSource(a.model));
    startCounting();
    let engine: Engine | null = null;
    try {
      engine = await Engine.load(c.source, a.load);
      const live = liveBytes();
      return {
        error: null,
        gpuMemory: engine.info.gpuMemory,
        weightBytes: engine.info.weightBytes,
        contextLength: engine.info.contextLength,
        liveBytes: live,
        weightRequests: (await c.weightRequests()).length,
        requests: c.ranges.length,
      };
    } catch (e) {
      return { error: errorData(e), weightRequests: (await c.weightRequests()).length, requests: c.ranges.length };
    } finally {
      stopCounting();
      await engine?.dispose();
    }
  },

  /**
   * A Llama-3.2-1B-shaped model (1.2 B parameters: a 1 GiB f32 embedding) that exists only as a
   * header, loaded on a device requested with the default limits (128 MiB per binding) unless
   * `adapterLimits`. Any request for a weight byte fails the load with a plain Error.
   */
  async hugeLoad(a: { load?: LoadOptions; tokenizerFrom: string; adapterLimits?: boolean }) {
    const { source, paramsGiB } = hugeSource(resolveSource(a.tokenizerFrom));
    const c = countingSource(source);
    const adapter = (await navigator.gpu.requestAdapter())!;
    const device = await adapter.requestDevice(
      a.adapterLimits ? { requiredLimits: { maxBufferSize: adapter.limits.maxBufferSize, maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize } } : {},
    );
    const limits = { maxBufferSize: device.limits.maxBufferSize, maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize };
    try {
      const engine = await Engine.load(c.source, { ...a.load, device });
      await engine.dispose();
      return { error: null, limits, paramsGiB, weightRequests: (await c.weightRequests()).length };
    } catch (e) {
      return { error: errorData(e), limits, paramsGiB, weightRequests: (await c.weightRequests()).length };
    } finally {
      device.destroy();
    }
  },
};
