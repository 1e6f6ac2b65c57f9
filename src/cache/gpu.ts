/**
 * GPU side of the weight cache: reading a finished weight's buffers back in bounded chunks (to
 * store them) and creating buffers from a cached entry (to skip download and quantization).
 */
import type { Runtime } from '../kernels/runtime.ts';
import type { HostBudget } from '../util/host-budget.ts';
import type { CachedBufferInfo } from './model-cache.ts';

/** Whether these buffers can be read back (COPY_SRC) — weights of formats that omit it are not cached. */
export function readable(buffers: readonly GPUBuffer[]): boolean {
  return buffers.every((b) => (b.usage & GPUBufferUsage.COPY_SRC) !== 0 && b.size % 4 === 0);
}

export function describeBuffers(buffers: readonly GPUBuffer[]): CachedBufferInfo[] {
  return buffers.map((b) => ({ size: b.size, usage: b.usage, label: b.label }));
}

/**
 * Yields the bytes of `buffers`, in order, in chunks of at most `chunkBytes` (a multiple of 4),
 * each counted in `budget` until the consumer asks for the next one.
 */
export async function* readBack(
  rt: Runtime,
  buffers: readonly GPUBuffer[],
  chunkBytes: number,
  budget: HostBudget,
  signal?: AbortSignal,
): AsyncGenerator<Uint8Array> {
  const chunk = Math.max(16, chunkBytes - (chunkBytes % 16));
  const biggest = Math.min(chunk, Math.max(16, ...buffers.map((b) => b.size)));
  const staging = rt.device.createBuffer({ label: 'cache_readback', size: biggest, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  try {
    for (const b of buffers) {
      for (let off = 0; off < b.size; off += chunk) {
        const n = Math.min(chunk, b.size - off);
        await budget.acquire(n, signal);
        let held = true;
        try {
          const enc = rt.device.createCommandEncoder({ label: 'cache_readback' });
          enc.copyBufferToBuffer(b, off, staging, 0, n);
          rt.device.queue.submit([enc.finish()]);
          await staging.mapAsync(GPUMapMode.READ, 0, n);
          const bytes = new Uint8Array(staging.getMappedRange(0, n).slice(0));
          staging.unmap();
          yield bytes;
          budget.release(n);
          held = false;
        } finally {
          if (held) budget.release(n);
        }
      }
    }
  } finally {
    staging.destroy();
  }
}

/**
 * Creates the buffers an entry describes and returns a writer that places the entry's
 * concatenated bytes (given in order, any chunking) into them.
 */
export function createFromEntry(
  rt: Runtime,
  infos: readonly CachedBufferInfo[],
): { buffers: GPUBuffer[]; write: (offset: number, bytes: Uint8Array) => void } {
  const buffers = infos.map((i) => rt.device.createBuffer({ label: i.label, size: i.size, usage: i.usage | GPUBufferUsage.COPY_DST }));
  const starts: number[] = [];
  let acc = 0;
  for (const i of infos) {
    starts.push(acc);
    acc += i.size;
  }
  const write = (offset: number, bytes: Uint8Array) => {
    let pos = 0;
    while (pos < bytes.length) {
      const at = offset + pos;
      let k = starts.length - 1;
      while (k > 0 && starts[k]! > at) k--;
      const within = at - starts[k]!;
      const n = Math.min(bytes.length - pos, infos[k]!.size - within);
      const part = bytes.subarray(pos, pos + n);
      rt.device.queue.writeBuffer(buffers[k]!, within, part.buffer, part.byteOffset, n);
      pos += n;
    }
  };
  return { buffers, write };
}

/**
 * Reads several buffers back with one copy pass and one mapAsync (small weights: one round trip
 * for many entries instead of one each). The caller holds budget for the total.
 */
export async function readBackAll(rt: Runtime, buffers: readonly GPUBuffer[]): Promise<Uint8Array> {
  const total = buffers.reduce((a, b) => a + b.size, 0);
  const staging = rt.device.createBuffer({ label: 'cache_readback', size: Math.max(16, total), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  try {
    const enc = rt.device.createCommandEncoder({ label: 'cache_readback' });
    let off = 0;
    for (const b of buffers) {
      enc.copyBufferToBuffer(b, 0, staging, off, b.size);
      off += b.size;
    }
    rt.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ, 0, Math.max(16, total));
    const out = new Uint8Array(staging.getMappedRange(0, total).slice(0));
    staging.unmap();
    return out;
  } finally {
    staging.destroy();
  }
}
