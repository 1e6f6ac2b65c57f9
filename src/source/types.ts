/**
 * A ModelSource is where a model's files come from: a local directory (Node), a base URL, the
 * Hugging Face Hub (URL layout `{endpoint}/{repo}/resolve/{revision}/{path}`), or files a user
 * picked in the browser. Everything above source/ reads files only through this interface, so
 * every loader path works the same on every source.
 */
export interface ModelSource {
  /** Human-readable description used in error messages, e.g. `/models/x` or `https://host/m`. */
  readonly description: string;
  /** Whole small file as text (config.json, tokenizer.json). Missing file → NibbleError 'not-found' naming it. */
  text(path: string, signal?: AbortSignal): Promise<string>;
  /** Whether the file exists. */
  exists(path: string, signal?: AbortSignal): Promise<boolean>;
  /** The file's size in bytes. Missing file → NibbleError 'not-found'. */
  size(path: string, signal?: AbortSignal): Promise<number>;
  /** Bytes [start, end) of a file; the result has exactly end - start bytes or it throws. */
  range(path: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array>;
}
