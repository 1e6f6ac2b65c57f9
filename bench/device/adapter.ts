/**
 * Prints the WebGPU adapter this machine gives Deno (wgpu) as one JSON line: what the benchmark
 * will run on. Run by bench/device/run.sh: `deno run --allow-all --no-config adapter.ts`.
 * Exits 1 when there is no adapter.
 */
export {};

const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
const adapter = gpu ? await gpu.requestAdapter({ powerPreference: 'high-performance' }) : null;
if (!adapter) {
  console.log(JSON.stringify({ type: 'adapter', available: false, reason: gpu ? 'requestAdapter returned null' : 'navigator.gpu is undefined' }));
  (globalThis as unknown as { process: { exit(code: number): never } }).process.exit(1);
} else {
  const info = adapter.info;
  const limits: Record<string, number> = {};
  for (const k of ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX'] as const) {
    limits[k] = adapter.limits[k];
  }
  console.log(
    JSON.stringify({
      type: 'adapter',
      available: true,
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      isFallbackAdapter: (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ?? null,
      features: [...adapter.features].sort(),
      limits,
    }),
  );
}
