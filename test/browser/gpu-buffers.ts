/**
 * The harness page's count of live GPU buffers: one wrapper of GPUDevice.createBuffer and
 * GPUBuffer.destroy for every harness module (they share one page). Buffers created between
 * startCounting() and stopCounting() are tracked until they are destroyed.
 */
const alive = new Map<GPUBuffer, { label: string; size: number }>();
let counting = false;
let created = 0;
{
  const dev = (globalThis as { GPUDevice?: { prototype: GPUDevice } }).GPUDevice?.prototype;
  const buf = (globalThis as { GPUBuffer?: { prototype: GPUBuffer } }).GPUBuffer?.prototype;
  if (dev && buf) {
    const create = dev.createBuffer;
    dev.createBuffer = function (this: GPUDevice, d: GPUBufferDescriptor) {
      const b = create.call(this, d);
      if (counting) {
        alive.set(b, { label: d.label ?? '', size: d.size });
        created++;
      }
      return b;
    };
    const destroy = buf.destroy;
    buf.destroy = function (this: GPUBuffer) {
      alive.delete(this);
      return destroy.call(this);
    };
  }
}

/** Forgets what was tracked and tracks the buffers created from now on. */
export function startCounting(): void {
  alive.clear();
  created = 0;
  counting = true;
}

export function stopCounting(): void {
  counting = false;
}

/** The tracked buffers still alive, and how many were created since startCounting(). */
export function liveBuffers(): { buffers: number; bytes: number; labels: string[]; created: number } {
  let bytes = 0;
  for (const v of alive.values()) bytes += v.size;
  return { buffers: alive.size, bytes, labels: [...alive.values()].map((v) => v.label), created };
}
