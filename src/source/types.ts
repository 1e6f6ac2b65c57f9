/**
 * A ModelSource is where a model's files come from: a local directory (Node), a base URL, the
 * Hugging Face Hub (URL layout `{endpoint}/{repo}/resolve/{revision}/{path}`), or files a user
 * picked in the browser. Everything above source/ reads files only through this interface, so
 * every loader path works the same on every source.
 */
export interface ModelSource {
  /** Human-readable description used in error messages, e.g. `/models/x` or `https://host/m`. */
  readonly description: string;
  /**
   * A stable identity of the model for the weight cache (e.g. `hub:https://huggingface.co/org/name@main`,
   * `url:https://host/m`, `fs:/models/x`). Sources without one are not cached unless the caller says so.
   */
  readonly cacheId?: string;
  /** Whole small file as text (config.json, tokenizer.json). Missing file → NibbleError 'not-found' naming it. */
  text(path: string, signal?: AbortSignal): Promise<string>;
  /** Whether the file exists. */
  exists(path: string, signal?: AbortSignal): Promise<boolean>;
  /** The file's size in bytes. Missing file → NibbleError 'not-found'. */
  size(path: string, signal?: AbortSignal): Promise<number>;
  /** Bytes [start, end) of a file; the result has exactly end - start bytes or it throws. */
  range(path: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array>;
  /**
   * Optional: what the source knows about a file without reading it (one HEAD over HTTP, a stat on
   * disk). The loader uses `sha256` to verify LFS files and `etag` / `lastModified` as cache validators.
   */
  metadata?(path: string, signal?: AbortSignal): Promise<FileMetadata>;
}

export interface FileMetadata {
  size: number;
  /** The validator the server gave (quotes and W/ removed), if any. */
  etag?: string;
  /** The file's sha256 (lowercase hex) when the source knows it: the Hub's ETag of an LFS file. */
  sha256?: string;
  /** Modification time (ms since the epoch) when known (files on disk, Last-Modified, File.lastModified). */
  lastModified?: number;
  /** The commit the Hub resolved the revision to (X-Repo-Commit), when known. */
  commit?: string;
}

/** `"abc"` / `W/"abc"` → `abc`; a 64-hex value is taken as the file's sha256 (the Hub's LFS ETag). */
export function parseEtag(v: string | null | undefined): { etag?: string; sha256?: string } {
  if (!v) return {};
  const etag = v.trim().replace(/^W\//i, '').replace(/^"(.*)"$/, '$1');
  if (!etag) return {};
  return /^[0-9a-f]{64}$/i.test(etag) ? { etag, sha256: etag.toLowerCase() } : { etag };
}
