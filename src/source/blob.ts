/**
 * BlobSource: model files the user picked in the browser (`<input type="file" webkitdirectory>`,
 * drag and drop, or the File System Access API), or any Blobs keyed by path.
 */
import { NibbleError, throwIfAborted } from '../errors.ts';
import { pickedFiles } from '../util/model-input.ts';
import type { FileMetadata, ModelSource } from './types.ts';


export class BlobSource implements ModelSource {
  readonly description: string;
  /** Picked files have no stable identity beyond their name: `blob:<description>` (validated by size + lastModified). */
  readonly cacheId: string;
  private readonly files: Map<string, Blob>;

  /** @param files path → Blob, or picked Files (an array or a FileList) */
  constructor(files: Map<string, Blob> | ArrayLike<File>, description?: string) {
    if (files instanceof Map) {
      this.files = new Map(files);
      this.description = description ?? 'picked files';
    } else {
      const picked = pickedFiles(files);
      this.files = picked.blobs;
      this.description = description ?? picked.description;
    }
    this.cacheId = `blob:${this.description}`;
  }

  /** The paths this source holds. */
  paths(): string[] {
    return [...this.files.keys()];
  }

  private get(path: string): Blob {
    const blob = this.files.get(path.replace(/^\/+/, ''));
    if (!blob) throw new NibbleError('not-found', `file ${path} not found in ${this.description}`);
    return blob;
  }

  async text(path: string, signal?: AbortSignal): Promise<string> {
    throwIfAborted(signal, path);
    const t = await this.get(path).text();
    throwIfAborted(signal, path);
    return t;
  }

  async exists(path: string, signal?: AbortSignal): Promise<boolean> {
    throwIfAborted(signal, path);
    return this.files.has(path.replace(/^\/+/, ''));
  }

  async size(path: string, signal?: AbortSignal): Promise<number> {
    throwIfAborted(signal, path);
    return this.get(path).size;
  }

  /** Size, and lastModified for Files (plain Blobs have none, so they are not cached). */
  async metadata(path: string, signal?: AbortSignal): Promise<FileMetadata> {
    throwIfAborted(signal, path);
    const blob = this.get(path);
    const lm = (blob as { lastModified?: number }).lastModified;
    return { size: blob.size, ...(typeof lm === 'number' ? { lastModified: lm } : {}) };
  }

  async range(path: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    throwIfAborted(signal, path);
    const blob = this.get(path);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > blob.size) {
      throw new NibbleError('bad-argument', `range [${start}, ${end}) is outside file ${path} (${blob.size} bytes)`);
    }
    // Blob.slice is lazy: only the requested bytes are read from disk.
    const bytes = new Uint8Array(await blob.slice(start, end).arrayBuffer());
    throwIfAborted(signal, path);
    if (bytes.length !== end - start) {
      throw new NibbleError('network', `${path}: read cut short: got ${bytes.length} of ${end - start} bytes`);
    }
    return bytes;
  }
}
