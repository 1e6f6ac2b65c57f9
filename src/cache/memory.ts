import type { WeightCache } from './types.ts';

/** A WeightCache in memory (tests, or a session-only cache). */
export class MemoryCache implements WeightCache {
  readonly description: string;
  readonly files = new Map<string, Uint8Array>();

  constructor(description = 'memory') {
    this.description = description;
  }

  async list(prefix: string): Promise<Array<{ path: string; size: number }>> {
    return [...this.files].filter(([p]) => p.startsWith(prefix)).map(([path, b]) => ({ path, size: b.length }));
  }

  async read(path: string, start: number, end: number): Promise<Uint8Array | null> {
    const b = this.files.get(path);
    return b ? b.slice(start, Math.min(end, b.length)) : null;
  }

  async write(path: string, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    const parts: Uint8Array[] = [];
    let n = 0;
    for await (const c of chunks) {
      parts.push(c.slice());
      n += c.length;
    }
    const all = new Uint8Array(n);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    this.files.set(path, all);
  }

  async delete(p: string): Promise<void> {
    if (p.endsWith('/') || p === '') {
      for (const k of [...this.files.keys()]) if (k.startsWith(p)) this.files.delete(k);
    } else this.files.delete(p);
  }
}
