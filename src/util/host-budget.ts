/**
 * Host-memory accounting for the loader. Everything the loader holds on the CPU side — downloaded
 * chunks waiting to be handed to the GPU or hashed, chunks read back from the GPU for the cache,
 * chunks read from the cache — is taken from one HostBudget before it is allocated and given back
 * when it is dropped, so the peak (`meter.peak`, reported as `info.loaderPeakHostBytes`) stays under
 * the budget whatever the model size. Not counted: transient copies a weight format makes inside
 * `WeightBuilder.write` (e.g. bf16 → f32 widening of one chunk), and small norm vectors.
 */
import { NibbleError } from '../errors.ts';

/** Counts the bytes the loader holds on the host at once (for the bounded-memory guarantee). */
export class HostMemoryMeter {
  current = 0;
  peak = 0;
  hold(n: number): void {
    this.current += n;
    if (this.current > this.peak) this.peak = this.current;
  }
  release(n: number): void {
    this.current -= n;
  }
}

interface Waiter {
  n: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** A byte budget: `acquire(n)` waits (first come, first served) until n more bytes fit. */
export class HostBudget {
  readonly meter: HostMemoryMeter;
  readonly limit: number;
  private readonly waiters: Waiter[] = [];

  constructor(limit: number, meter = new HostMemoryMeter()) {
    if (!(limit > 0)) throw new NibbleError('bad-argument', `hostMemoryBudget must be a positive number of bytes, got ${limit}`);
    this.limit = limit;
    this.meter = meter;
  }

  /** Whether n bytes fit now; a request bigger than the whole budget fits only when nothing is held. */
  private fits(n: number): boolean {
    return this.meter.current + n <= this.limit || this.meter.current === 0;
  }

  async acquire(n: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw new NibbleError('aborted', 'model load aborted', { cause: signal.reason });
    if (this.waiters.length === 0 && this.fits(n)) {
      this.meter.hold(n);
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const w: Waiter = { n, resolve, reject };
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new NibbleError('aborted', 'model load aborted', { cause: signal?.reason }));
        this.wake();
      };
      w.resolve = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  release(n: number): void {
    this.meter.release(n);
    this.wake();
  }

  private wake(): void {
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.n)) {
      const w = this.waiters.shift()!;
      this.meter.hold(w.n);
      w.resolve();
    }
  }
}
