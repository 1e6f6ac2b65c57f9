/**
 * OpfsCache: the weight cache in the browser's Origin Private File System
 * (navigator.storage.getDirectory()). Files are written with createWritable(), which writes to a
 * swap file and swaps it in on close, so an interrupted write leaves no partial file behind.
 * Reads slice the File lazily: only the requested bytes are read.
 */
import type { WeightCache } from './types.ts';

type Dir = FileSystemDirectoryHandle & {
  entries(): AsyncIterableIterator<[string, FileSystemDirectoryHandle | FileSystemFileHandle]>;
};

function split(path: string): string[] {
  return path.split('/').filter((s) => s !== '');
}

function isNotFound(e: unknown): boolean {
  const name = (e as { name?: string })?.name;
  return name === 'NotFoundError' || name === 'TypeMismatchError';
}

export class OpfsCache implements WeightCache {
  readonly description: string;
  private readonly rootName: string;

  constructor(rootName = 'nibble-cache') {
    this.rootName = rootName;
    this.description = `OPFS ${rootName}`;
  }

  /** Whether this browser has OPFS with writable file handles. */
  static available(): boolean {
    const nav = (globalThis as { navigator?: Navigator }).navigator;
    const FH = (globalThis as { FileSystemFileHandle?: { prototype: object } }).FileSystemFileHandle;
    return typeof nav?.storage?.getDirectory === 'function' && !!FH && 'createWritable' in FH.prototype;
  }

  private async dir(parts: string[], create: boolean): Promise<Dir | null> {
    let d = (await (await navigator.storage.getDirectory()).getDirectoryHandle(this.rootName, { create })) as Dir;
    for (const p of parts) {
      try {
        d = (await d.getDirectoryHandle(p, { create })) as Dir;
      } catch (e) {
        if (isNotFound(e)) return null;
        throw e;
      }
    }
    return d;
  }

  private async file(path: string): Promise<File | null> {
    const parts = split(path);
    const name = parts.pop();
    if (!name) return null;
    try {
      const d = await this.dir(parts, false);
      if (!d) return null;
      return await (await d.getFileHandle(name)).getFile();
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  async list(prefix: string): Promise<Array<{ path: string; size: number }>> {
    let d: Dir | null;
    try {
      d = await this.dir(split(prefix), false);
    } catch (e) {
      if (isNotFound(e)) return [];
      throw e;
    }
    if (!d) return [];
    const out: Array<{ path: string; size: number }> = [];
    const base = split(prefix).join('/');
    const walk = async (dir: Dir, rel: string) => {
      for await (const [name, h] of dir.entries()) {
        const p = rel ? `${rel}/${name}` : name;
        if (h.kind === 'directory') await walk(h as Dir, p);
        else out.push({ path: p, size: (await (h as FileSystemFileHandle).getFile()).size });
      }
    };
    await walk(d, base);
    return out;
  }

  async read(path: string, start: number, end: number): Promise<Uint8Array | null> {
    const f = await this.file(path);
    if (!f) return null;
    return new Uint8Array(await f.slice(start, Math.min(end, f.size)).arrayBuffer());
  }

  async write(path: string, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    const parts = split(path);
    const name = parts.pop()!;
    const d = (await this.dir(parts, true))!;
    const fh = await d.getFileHandle(name, { create: true });
    const w = await fh.createWritable();
    try {
      for await (const c of chunks) await w.write(c as Uint8Array<ArrayBuffer>);
      await w.close();
    } catch (e) {
      await w.abort().catch(() => {});
      throw e;
    }
  }

  async delete(p: string): Promise<void> {
    const parts = split(p);
    const name = parts.pop();
    try {
      if (!name) {
        const root = await navigator.storage.getDirectory();
        await root.removeEntry(this.rootName, { recursive: true });
        return;
      }
      const d = await this.dir(parts, false);
      await d?.removeEntry(name, { recursive: true });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }
}
