import { describe, expect, it } from 'vitest';
import { createGpuContext } from '../../src/gpu/context.ts';
import { NibbleError } from '../../src/errors.ts';

/** The "no WebGPU" paths, with fake GPU objects (no real adapter needed). */
describe('createGpuContext without WebGPU', () => {
  it('no navigator.gpu → webgpu-unavailable saying why', async () => {
    const e = await createGpuContext({}).catch((x) => x);
    expect(e).toBeInstanceOf(NibbleError);
    expect(e.code).toBe('webgpu-unavailable');
    expect(e.message).toMatch(/WebGPU is unavailable/);
  });

  it('no adapter → webgpu-unavailable naming the missing adapter', async () => {
    const gpu = { requestAdapter: async () => null } as unknown as GPU;
    const e = await createGpuContext({ gpu }).catch((x) => x);
    expect(e.code).toBe('webgpu-unavailable');
    expect(e.message).toMatch(/no GPU adapter/);
  });

  it('requestDevice failing → webgpu-unavailable with the cause', async () => {
    const adapter = {
      features: new Set<string>(),
      limits: { maxBufferSize: 1 << 20 },
      info: { vendor: 'x', architecture: '', device: '', description: '' },
      requestDevice: async () => {
        throw new Error('out of devices');
      },
    };
    const gpu = { requestAdapter: async () => adapter } as unknown as GPU;
    const e = await createGpuContext({ gpu }).catch((x) => x);
    expect(e.code).toBe('webgpu-unavailable');
    expect(e.message).toMatch(/out of devices/);
  });

  it('asks for the adapter maximum limits and the useful features', async () => {
    let asked: GPUDeviceDescriptor | undefined;
    const adapter = {
      features: new Set(['shader-f16', 'timestamp-query', 'texture-compression-bc']),
      limits: { maxBufferSize: 4 << 30, maxStorageBufferBindingSize: 2 << 30, maxComputeWorkgroupStorageSize: 32768 },
      info: { vendor: 'acme', architecture: 'rdna', device: 'x1', description: '' },
      requestDevice: async (d: GPUDeviceDescriptor) => {
        asked = d;
        return { features: new Set(d.requiredFeatures), limits: d.requiredLimits, lost: new Promise(() => {}) };
      },
    };
    const ctx = await createGpuContext({ gpu: { requestAdapter: async () => adapter } as unknown as GPU });
    expect(asked?.requiredFeatures).toEqual(['shader-f16', 'timestamp-query']);
    expect(asked?.requiredLimits?.maxBufferSize).toBe(4 << 30);
    expect(asked?.requiredLimits?.maxStorageBufferBindingSize).toBe(2 << 30);
    expect(ctx.features).toEqual({ f16: true, subgroups: false, timestampQuery: true });
    expect(ctx.adapterInfo.summary).toBe('acme rdna x1');
  });

  it("limits: 'default' asks for no limits (WebGPU's defaults), on a device of its own", async () => {
    const asked: GPUDeviceDescriptor[] = [];
    const adapter = {
      features: new Set(['shader-f16']),
      limits: { maxBufferSize: 4 << 30, maxStorageBufferBindingSize: 2 << 30 },
      info: { vendor: 'acme', architecture: '', device: '', description: '' },
      requestDevice: async (d: GPUDeviceDescriptor) => {
        asked.push(d);
        return { features: new Set(d.requiredFeatures), limits: { maxBufferSize: 256 << 20, maxStorageBufferBindingSize: 128 << 20, ...d.requiredLimits }, lost: new Promise(() => {}) };
      },
    };
    const gpu = { requestAdapter: async () => adapter } as unknown as GPU;
    const def = await createGpuContext({ gpu, limits: 'default' });
    expect(asked[0]!.requiredLimits).toEqual({});
    expect(asked[0]!.requiredFeatures).toEqual(['shader-f16']);
    expect(def.limits.maxStorageBufferBindingSize).toBe(128 << 20);
    const max = await createGpuContext({ gpu });
    expect(max).not.toBe(def); // the shared device is per limits choice
    expect(asked[1]!.requiredLimits?.maxStorageBufferBindingSize).toBe(2 << 30);
    expect(await createGpuContext({ gpu, limits: 'default' })).toBe(def);
    const e = await createGpuContext({ gpu, limits: 'max' as never }).catch((x) => x);
    expect(e).toBeInstanceOf(NibbleError);
    expect(e.message).toMatch(/limits must be 'adapter' or 'default'/);
  });
});
