/** HTTP helpers shared by the URL and Hub sources. */

/** Parses `bytes a-b/total` (or `bytes *` + `/total`) → {start, end (inclusive), total}; fields NaN when absent. */
export function parseContentRange(v: string | null): { start: number; end: number; total: number } | null {
  if (!v) return null;
  const m = /^\s*bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)\s*$/i.exec(v);
  if (!m) return null;
  return {
    start: m[1] !== undefined ? Number(m[1]) : NaN,
    end: m[2] !== undefined ? Number(m[2]) : NaN,
    total: m[3] !== '*' ? Number(m[3]) : NaN,
  };
}

export function parseLength(v: string | null): number | null {
  if (v === null || !/^\s*\d+\s*$/.test(v)) return null;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : null;
}

/** Drops a response body we will not read, so the connection is released. */
export function discard(res: Response): void {
  res.body?.cancel().catch(() => {});
}
