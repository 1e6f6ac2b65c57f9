/**
 * The storage behind nibble's weight cache: a tiny file store. nibble ships one per platform —
 * OpfsCache (browser, Origin Private File System), CacheApiCache (browser fallback, the Cache API),
 * DirCache (Node, a folder; src/cache/node-dir.ts) and MemoryCache (tests) — and `Engine.load`'s
 * `cache` option takes any object implementing this interface.
 *
 * Paths are relative, '/'-separated, and made of [A-Za-z0-9._@-] segments. A file becomes visible
 * to `read` / `list` once `write` resolves (or may be partial if a crash interrupted it: nibble's
 * entries carry a manifest and a checksum, so a partial or corrupt file is detected and rebuilt).
 */
export interface WeightCache {
  /** Where the cache lives, for messages (e.g. "OPFS nibble-cache", "/home/u/.cache/nibble"). */
  readonly description: string;
  /** Every file under `prefix` (a folder path ending in '/', or '' for everything) with its size. */
  list(prefix: string): Promise<Array<{ path: string; size: number }>>;
  /** Bytes [start, min(end, size)) of a file; null when the file does not exist. */
  read(path: string, start: number, end: number): Promise<Uint8Array | null>;
  /** Creates or replaces a file with the concatenation of `chunks`. */
  write(path: string, chunks: AsyncIterable<Uint8Array>): Promise<void>;
  /** Deletes a file, or every file under a prefix ending in '/'. Missing paths are not an error. */
  delete(pathOrPrefix: string): Promise<void>;
}

/** Reads a whole (small) file as text; null when missing. */
export async function readText(cache: WeightCache, path: string): Promise<string | null> {
  const b = await cache.read(path, 0, Number.MAX_SAFE_INTEGER);
  return b ? new TextDecoder().decode(b) : null;
}

export async function writeText(cache: WeightCache, path: string, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  await cache.write(path, (async function* () {
    yield bytes;
  })());
}
