import { NibbleError } from '../errors.ts';

/** What the engine knows about the GPU it runs on. */
export interface GpuContext {
  device: GPUDevice;
  adapterInfo: AdapterInfo;
  /** Features nibble can use, as granted on the device. */
  features: { f16: boolean; subgroups: boolean; timestampQuery: boolean };
  limits: GPUSupportedLimits;
}

export interface AdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Short one-line description, e.g. "google swiftshader (Vulkan)". */
  summary: string;
  /** Smallest subgroup size the adapter may use (when it reports it). */
  subgroupMinSize?: number;
  /** A software adapter running on the CPU (SwiftShader, llvmpipe / lavapipe): kernels pick CPU-friendly variants. */
  cpuBacked: boolean;
}

/** Whether an adapter description names a CPU (software) implementation of WebGPU/Vulkan. */
export function isCpuAdapter(s: string): boolean {
  return /swiftshader|llvmpipe|lavapipe|softpipe|\bcpu\b/i.test(s);
}

export interface GpuOptions {
  /** A GPU object (navigator.gpu or an equivalent from a non-browser runtime); default: globalThis.navigator.gpu. */
  gpu?: GPU;
  /** A device the caller already has; nibble uses it as is. */
  device?: GPUDevice;
  powerPreference?: GPUPowerPreference;
  /** Turn off optional features (for testing the portable f32 path). */
  disableFeatures?: Array<'shader-f16' | 'subgroups' | 'timestamp-query'>;
  /**
   * The device's limits: 'adapter' (default) requests the adapter's maximum buffer / binding /
   * workgroup limits; 'default' requests none, so the device has WebGPU's default limits (a 128 MiB
   * storage binding, 256 MiB buffers), like a page that asks for nothing: a large-vocabulary
   * embedding or LM head is then stored in row parts (src/model/spec.ts).
   */
  limits?: 'adapter' | 'default';
}

const LIMIT_KEYS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
] as const;

function describeAdapter(adapter: GPUAdapter): AdapterInfo {
  const info = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info;
  const vendor = info?.vendor ?? '';
  const architecture = info?.architecture ?? '';
  const device = info?.device ?? '';
  const description = info?.description ?? '';
  const summary = [vendor, architecture, device, description].filter((s) => s).join(' ') || 'unknown adapter';
  const sg = (info as (GPUAdapterInfo & { subgroupMinSize?: number }) | undefined)?.subgroupMinSize;
  const deviceType = (info as { type?: string } | undefined)?.type; // Deno/wgpu: 'cpu' for software adapters
  const cpuBacked = isCpuAdapter(summary) || deviceType === 'cpu';
  return { vendor, architecture, device, description, summary, subgroupMinSize: typeof sg === 'number' ? sg : undefined, cpuBacked };
}

const shared = new Map<GPU, Map<string, Promise<GpuContext>>>();

/**
 * The GPU context for `opts`: one device per GPU object and options, shared by every engine of the
 * page (so compiled pipelines are reused across loads, and a draft model shares its target's
 * device), created on first use and forgotten when the device is lost.
 */
export function createGpuContext(opts: GpuOptions = {}): Promise<GpuContext> {
  if (opts.limits !== undefined && opts.limits !== 'adapter' && opts.limits !== 'default') {
    return Promise.reject(new NibbleError('bad-argument', `limits must be 'adapter' or 'default', got ${JSON.stringify(opts.limits)}`));
  }
  const gpu = opts.gpu ?? (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (opts.device || !gpu) return requestGpuContext(opts);
  const key = JSON.stringify([opts.powerPreference ?? '', [...(opts.disableFeatures ?? [])].sort(), opts.limits ?? 'adapter']);
  let byKey = shared.get(gpu);
  if (!byKey) shared.set(gpu, (byKey = new Map()));
  const hit = byKey.get(key);
  if (hit) return hit;
  const p = requestGpuContext({ ...opts, gpu });
  byKey.set(key, p);
  const forget = () => {
    if (byKey!.get(key) === p) byKey!.delete(key);
  };
  p.then((c) => c.device.lost.then(forget), forget);
  return p;
}

/**
 * Requests an adapter and a device with the adapter's maximum buffer / binding / workgroup limits
 * (WebGPU's defaults with `limits: 'default'`) and the optional features nibble accelerates with. Throws NibbleError('webgpu-unavailable')
 * with the reason when there is no WebGPU.
 */
async function requestGpuContext(opts: GpuOptions): Promise<GpuContext> {
  if (opts.device) {
    const d = opts.device;
    return {
      device: d,
      adapterInfo: { vendor: '', architecture: '', device: '', description: '', summary: 'caller-provided device', cpuBacked: false },
      features: {
        f16: d.features.has('shader-f16'),
        subgroups: d.features.has('subgroups'),
        timestampQuery: d.features.has('timestamp-query'),
      },
      limits: d.limits,
    };
  }
  const gpu = opts.gpu ?? (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) {
    const secure = (globalThis as { isSecureContext?: boolean }).isSecureContext;
    const why =
      secure === false
        ? 'this page is not a secure context (serve it over https or from http://localhost / 127.0.0.1)'
        : 'navigator.gpu is undefined (this browser or runtime has no WebGPU, or it is disabled)';
    throw new NibbleError('webgpu-unavailable', `WebGPU is unavailable: ${why}`);
  }
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference ?? 'high-performance' });
  } catch (e) {
    throw new NibbleError('webgpu-unavailable', `WebGPU is unavailable: requestAdapter failed: ${String(e)}`, { cause: e });
  }
  if (!adapter) {
    throw new NibbleError(
      'webgpu-unavailable',
      'WebGPU is unavailable: no GPU adapter was found (no supported GPU/driver, or WebGPU is blocked for this GPU)',
    );
  }
  const disabled = new Set(opts.disableFeatures ?? []);
  const wanted: GPUFeatureName[] = [];
  for (const f of ['shader-f16', 'subgroups', 'timestamp-query'] as const) {
    if (adapter.features.has(f) && !disabled.has(f)) wanted.push(f as GPUFeatureName);
  }
  const requiredLimits: Record<string, number> = {};
  for (const k of opts.limits === 'default' ? [] : LIMIT_KEYS) {
    const v = (adapter.limits as unknown as Record<string, number>)[k];
    if (typeof v === 'number') requiredLimits[k] = v;
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures: wanted, requiredLimits });
  } catch (e) {
    throw new NibbleError('webgpu-unavailable', `WebGPU is unavailable: requestDevice failed: ${String(e)}`, { cause: e });
  }
  return {
    device,
    adapterInfo: describeAdapter(adapter),
    features: {
      f16: device.features.has('shader-f16'),
      subgroups: device.features.has('subgroups'),
      timestampQuery: device.features.has('timestamp-query'),
    },
    limits: device.limits,
  };
}
