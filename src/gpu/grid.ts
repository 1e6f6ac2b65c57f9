/** WebGPU's guaranteed workgroups per dispatch dimension (maxComputeWorkgroupsPerDimension's default). */
export const MAX_WORKGROUPS_PER_DIM = 65535;

/** Splits a 1-D count of workgroups over x and y when it exceeds the per-dimension limit. */
export function split2d(n: number): [number, number] {
  if (n <= MAX_WORKGROUPS_PER_DIM) return [n, 1];
  return [MAX_WORKGROUPS_PER_DIM, Math.ceil(n / MAX_WORKGROUPS_PER_DIM)];
}
