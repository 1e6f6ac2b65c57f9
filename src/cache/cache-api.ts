/**
 * CacheApiCache: the weight cache in the Cache API (`caches.open(name)`), for browsers without
 * writable OPFS handles. Each file is one cached Response keyed by a synthetic URL; bodies are
 * streamed in, and reads slice the response's Blob (disk-backed in Chromium).
 */
import type { WeightCache } from './types.ts';

const BASE = 'https://nibble-cache.invalid/';

export class CacheApiCache implements WeightCache {
  readonly description: string;
  private readonly name: string;

  constructor(name = 'nibble-cache') {
    this.name = name;
    this.description = `Cache API ${name}`;
  }

  static available(): boolean {
    return typeof (globalThis as { caches?: CacheStorage }).caches?.open === 'function';
  }

  private open(): Promise<Cache> {
    return caches.open(this.name);
  }

  async list(prefix: string): Promise<Array<{ path: string; size: number }>> {
    const c = await this.open();
    const out: Array<{ path: string; size: number }> = [];
    for (const req of await c.keys()) {
      if (!req.url.startsWith(BASE)) continue;
      const path = decodeURIComponent(req.url.slice(BASE.length));
      if (!path.startsWith(prefix)) continue;
      const res = await c.match(req);
      if (!res) continue;
      const declared = Number(res.headers.get('x-nibble-size'));
      out.push({ path, size: Number.isFinite(declared) && res.headers.has('x-nibble-size') ? declared : (await res.blob()).size });
    }
    return out;
  }

  async read(path: string, start: number, end: number): Promise<Uint8Array | null> {
    const res = await (await this.open()).match(BASE + encodeURIComponent(path));
    if (!res) return null;
    const blob = await res.blob();
    return new Uint8Array(await blob.slice(start, Math.min(end, blob.size)).arrayBuffer());
  }

  async write(path: string, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    // Collect into a Blob: Chromium pages large blobs to disk, and the Blob gives us the size up
    // front (a streamed body would leave the listing without sizes).
    const parts: BlobPart[] = [];
    for await (const c of chunks) parts.push(new Blob([c as Uint8Array<ArrayBuffer>]));
    const blob = new Blob(parts);
    const res = new Response(blob, { headers: { 'Content-Type': 'application/octet-stream', 'x-nibble-size': String(blob.size) } });
    await (await this.open()).put(BASE + encodeURIComponent(path), res);
  }

  async delete(p: string): Promise<void> {
    const c = await this.open();
    if (p === '' || p.endsWith('/')) {
      for (const req of await c.keys()) {
        if (req.url.startsWith(BASE) && decodeURIComponent(req.url.slice(BASE.length)).startsWith(p)) await c.delete(req);
      }
    } else await c.delete(BASE + encodeURIComponent(p));
  }
}
