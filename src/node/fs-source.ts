/**
 * FsSource: a model folder on the local disk (Node only). Ranges are positional reads on an
 * open file handle, so a weight file is never read whole.
 */
import { open, readFile, stat } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { NibbleError, throwIfAborted } from '../errors.ts';
import type { FileMetadata, ModelSource } from '../source/types.ts';

/** Positional reads are issued in chunks this big, checking the abort signal between them. */
const READ_CHUNK = 16 * 1024 * 1024;


function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

export class FsSource implements ModelSource {
  readonly description: string;
  readonly cacheId: string;
  private readonly dir: string;

  constructor(dir: string) {
    this.dir = nodePath.resolve(dir);
    this.description = this.dir;
    this.cacheId = `fs:${this.dir}`;
  }

  /** Absolute path of a file; refuses paths that would leave the model directory. */
  private resolve(path: string): string {
    const full = nodePath.resolve(this.dir, path);
    const rel = nodePath.relative(this.dir, full);
    if (rel === '' || rel === '..' || rel.startsWith('..' + nodePath.sep) || nodePath.isAbsolute(rel)) {
      throw new NibbleError('bad-argument', `path ${JSON.stringify(path)} is outside the model directory ${this.dir}`);
    }
    return full;
  }

  private dirExists(): Promise<boolean> {
    return stat(this.dir).then(
      (s) => s.isDirectory(),
      () => false,
    );
  }

  private noDir(cause: unknown): NibbleError {
    return new NibbleError('not-found', `model directory ${this.dir} does not exist`, { cause });
  }

  /** Turns ENOENT into 'not-found', naming the directory when it is the directory that is missing. */
  private async missing(path: string, e: unknown): Promise<never> {
    const code = errno(e);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') {
      if (!(await this.dirExists())) throw this.noDir(e);
      throw new NibbleError('not-found', `file ${path} not found in ${this.dir}`, { cause: e });
    }
    throw e;
  }

  async text(path: string, signal?: AbortSignal): Promise<string> {
    throwIfAborted(signal, path);
    const full = this.resolve(path);
    try {
      return await readFile(full, { encoding: 'utf8', signal });
    } catch (e) {
      if (signal?.aborted) throw new NibbleError('aborted', `${path}: aborted`, { cause: signal.reason });
      return this.missing(path, e);
    }
  }

  async exists(path: string, signal?: AbortSignal): Promise<boolean> {
    throwIfAborted(signal, path);
    const full = this.resolve(path);
    try {
      return (await stat(full)).isFile();
    } catch (e) {
      const code = errno(e);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
      // A missing model directory is an error worth reporting, not "this file is absent".
      if (!(await this.dirExists())) throw this.noDir(e);
      return false;
    }
  }

  async size(path: string, signal?: AbortSignal): Promise<number> {
    throwIfAborted(signal, path);
    const full = this.resolve(path);
    try {
      const s = await stat(full);
      if (!s.isFile()) return this.missing(path, { code: 'EISDIR' });
      return s.size;
    } catch (e) {
      return this.missing(path, e);
    }
  }

  /** Size and modification time (the weight cache's validator for files on disk). */
  async metadata(path: string, signal?: AbortSignal): Promise<FileMetadata> {
    throwIfAborted(signal, path);
    const full = this.resolve(path);
    try {
      const s = await stat(full);
      if (!s.isFile()) return this.missing(path, { code: 'EISDIR' });
      return { size: s.size, lastModified: Math.floor(s.mtimeMs) };
    } catch (e) {
      return this.missing(path, e);
    }
  }

  async range(path: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    throwIfAborted(signal, path);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new NibbleError('bad-argument', `range(${path}, ${start}, ${end}): need integers 0 <= start <= end`);
    }
    const full = this.resolve(path);
    let fh;
    try {
      fh = await open(full, 'r');
    } catch (e) {
      return this.missing(path, e);
    }
    try {
      const size = (await fh.stat()).size;
      if (end > size) {
        throw new NibbleError('bad-argument', `range [${start}, ${end}) is outside file ${path} (${size} bytes)`);
      }
      const out = new Uint8Array(end - start);
      let done = 0;
      while (done < out.length) {
        throwIfAborted(signal, path);
        const len = Math.min(READ_CHUNK, out.length - done);
        const { bytesRead } = await fh.read(out, done, len, start + done);
        if (bytesRead === 0) {
          // The file shrank under us.
          throw new NibbleError('network', `${path}: read cut short: got ${done} of ${out.length} bytes`);
        }
        done += bytesRead;
      }
      return out;
    } finally {
      await fh.close();
    }
  }
}
