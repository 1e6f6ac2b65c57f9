/**
 * DirCache: the weight cache in a folder on disk (Node). Files are written to a temporary name and
 * renamed into place, so readers never see a partial file. Node-only: import it from
 * 'nibble/src/cache/node-dir.ts' (it is not part of the browser bundle).
 */
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { NibbleError } from '../errors.ts';
import type { WeightCache } from './types.ts';

export class DirCache implements WeightCache {
  readonly description: string;
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
    this.description = this.dir;
  }

  private abs(path: string): string {
    const full = resolve(this.dir, ...path.split('/').filter(Boolean));
    if (full !== this.dir && !full.startsWith(this.dir + sep)) throw new NibbleError('bad-argument', `cache path ${path} leaves ${this.dir}`);
    return full;
  }

  async list(prefix: string): Promise<Array<{ path: string; size: number }>> {
    const out: Array<{ path: string; size: number }> = [];
    const walk = async (d: string) => {
      let entries;
      try {
        entries = await readdir(d, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const p = join(d, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile() && !e.name.includes('.tmp-')) {
          out.push({ path: relative(this.dir, p).split(sep).join('/'), size: (await stat(p)).size });
        }
      }
    };
    await walk(this.abs(prefix));
    return out;
  }

  async read(path: string, start: number, end: number): Promise<Uint8Array | null> {
    let fh;
    try {
      fh = await open(this.abs(path), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    try {
      const size = (await fh.stat()).size;
      const e = Math.min(end, size);
      const out = new Uint8Array(Math.max(0, e - start));
      let done = 0;
      while (done < out.length) {
        const { bytesRead } = await fh.read(out, done, out.length - done, start + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done === out.length ? out : out.subarray(0, done);
    } finally {
      await fh.close();
    }
  }

  async write(path: string, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    const full = this.abs(path);
    await mkdir(dirname(full), { recursive: true });
    const tmp = `${full}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const fh = await open(tmp, 'w');
    try {
      for await (const c of chunks) {
        let o = 0;
        while (o < c.length) o += (await fh.write(c, o, c.length - o)).bytesWritten;
      }
      await fh.close();
      await rename(tmp, full);
    } catch (e) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw e;
    }
  }

  async delete(p: string): Promise<void> {
    await rm(this.abs(p), { recursive: true, force: true });
  }
}
