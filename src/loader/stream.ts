/**
 * The streaming scheduler: moves checkpoint bytes from a ModelSource into tensor sinks (the GPU
 * weight builders) with large parallel Range reads, bounded host memory, and sha256 verification.
 *
 * Plan. Per file, the tensors to load are sorted by offset and cut into read requests of about
 * `chunkBytes` (default 16 MiB) that always hold whole rows, so every piece handed to a sink is
 * rows [row0, row0 + n) of one tensor. A file whose sha256 is known is read whole, header and gaps
 * included, because the hash covers every byte; other files are read only where tensors are
 * (neighbours less than 256 KiB apart share a request).
 *
 * Run. Requests are issued in plan order, at most `parallel` (default 4) in flight, each only once
 * its bytes fit in the host budget (HostBudget: bytes stay counted until delivered). They complete
 * in any order but are delivered in plan order: each delivered request updates its file's sha256
 * (so the hash is computed in file order without a second pass) and writes its pieces to the sinks,
 * then its bytes are released. Rows of one tensor therefore reach its sink in row order. After a
 * verified file's last request its digest is compared with the expected one: a mismatch is a
 * NibbleError 'integrity' naming the file. Any failure aborts the requests still in flight.
 *
 * Peak host memory ≤ the budget (a single request larger than the budget — one enormous row — is
 * admitted only when nothing else is held).
 */
import { NibbleError } from '../errors.ts';
import type { ModelSource } from '../source/types.ts';
import type { HostBudget } from '../util/host-budget.ts';
import type { TensorInfo } from './safetensors.ts';
import { Sha256 } from '../util/sha256.ts';

export const DEFAULT_CHUNK_BYTES = 16 << 20;
export const DEFAULT_PARALLEL_READS = 4;
/** Tensors closer than this share one request when a file is not read whole. */
const MERGE_GAP = 256 << 10;

export interface StreamTarget {
  tensor: TensorInfo;
  /** Receives whole rows [row0, row0 + rows) of the tensor (its checkpoint dtype), in row order. */
  write(row0: number, bytes: Uint8Array): void | Promise<void>;
}

export interface ReadPiece {
  target: StreamTarget;
  row0: number;
  rows: number;
  /** Byte offset of the piece inside the request. */
  offset: number;
  bytes: number;
}

export interface ReadRequest {
  file: string;
  start: number;
  end: number;
  pieces: ReadPiece[];
}

export interface StreamOptions {
  budget: HostBudget;
  /** Target bytes per request (default 16 MiB; a request always holds whole rows). */
  chunkBytes?: number;
  /** Requests in flight at once (default 4). */
  parallel?: number;
  signal?: AbortSignal;
  /** Expected sha256 (hex) per file: such files are read whole, in order, and verified. */
  sha256?: ReadonlyMap<string, string>;
  /** Sizes of the files in `sha256` (required for them). */
  sizes?: ReadonlyMap<string, number>;
  /** After each delivered request: payload bytes delivered so far, of the total planned. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

export interface StreamResult {
  requests: number;
  /** Bytes requested from the source. */
  bytesRead: number;
  /** Files whose sha256 was checked. */
  verified: string[];
  /** Most requests in flight at once. */
  maxInFlight: number;
}

function rowBytesOf(t: TensorInfo): number {
  const bytes = t.end - t.start;
  const rows = t.shape.length >= 2 ? t.shape[0]! : 1;
  return rows > 0 ? bytes / rows : bytes;
}

/** Cuts the targets' byte ranges into whole-row read requests (exported for tests). */
export function planReads(
  targets: readonly StreamTarget[],
  opts: { chunkBytes?: number; sha256?: ReadonlyMap<string, string>; sizes?: ReadonlyMap<string, number> } = {},
): ReadRequest[] {
  const chunk = Math.max(1, opts.chunkBytes ?? DEFAULT_CHUNK_BYTES);
  const byFile = new Map<string, StreamTarget[]>();
  for (const t of targets) {
    if (t.tensor.end <= t.tensor.start) continue; // empty tensors carry no bytes
    let list = byFile.get(t.tensor.file);
    if (!list) byFile.set(t.tensor.file, (list = []));
    list.push(t);
  }
  const out: ReadRequest[] = [];
  for (const [file, list] of byFile) {
    list.sort((a, b) => a.tensor.start - b.tensor.start);
    const whole = opts.sha256?.has(file) ?? false;
    type Span = { start: number; end: number; target?: StreamTarget; rowBytes: number };
    const spans: Span[] = [];
    let cursor = 0;
    for (const t of list) {
      const { start, end } = t.tensor;
      if (start < cursor) {
        throw new NibbleError('bad-safetensors', `${file}: tensor "${t.tensor.name}" overlaps another tensor being loaded`);
      }
      if (whole && start > cursor) spans.push({ start: cursor, end: start, rowBytes: 1 });
      const rowBytes = rowBytesOf(t.tensor);
      if (!Number.isInteger(rowBytes)) throw new NibbleError('bad-tensor', `${file}: tensor "${t.tensor.name}" is not a whole number of bytes per row`);
      spans.push({ start, end, target: t, rowBytes });
      cursor = end;
    }
    if (whole) {
      const size = opts.sizes?.get(file);
      if (size === undefined) throw new NibbleError('bad-argument', `planReads: the size of ${file} is needed to verify it`);
      if (cursor > size) throw new NibbleError('bad-safetensors', `${file}: tensors run beyond the end of the file (${size} bytes)`);
      if (size > cursor) spans.push({ start: cursor, end: size, rowBytes: 1 });
    }

    let req: ReadRequest | null = null;
    const close = () => {
      if (req && req.end > req.start) out.push(req);
      req = null;
    };
    for (const s of spans) {
      if (req !== null) {
        const r = req as ReadRequest;
        const gap = s.start - r.end;
        if (gap > 0 && (gap > MERGE_GAP || s.start - r.start >= chunk)) close();
        else if (gap > 0) r.end = s.start; // small gap: read through it
      }
      let pos = s.start;
      while (pos < s.end) {
        if (req === null) req = { file, start: pos, end: pos, pieces: [] };
        const r = req as ReadRequest;
        const room = chunk - (r.end - r.start);
        if (s.target) {
          const rowsLeft = (s.end - pos) / s.rowBytes;
          let n = Math.min(rowsLeft, Math.floor(room / s.rowBytes));
          if (n === 0) {
            if (r.end > r.start) {
              close();
              continue;
            }
            n = 1; // one row bigger than a chunk: it gets a request of its own
          }
          const bytes = n * s.rowBytes;
          r.pieces.push({ target: s.target, row0: (pos - s.start) / s.rowBytes, rows: n, offset: pos - r.start, bytes });
          pos += bytes;
        } else {
          const n = Math.min(s.end - pos, room);
          if (n <= 0) {
            close();
            continue;
          }
          pos += n;
        }
        r.end = pos;
        if (r.end - r.start >= chunk) close();
      }
    }
    close();
  }
  return out;
}

interface Slot {
  bytes: Promise<Uint8Array>;
}

/** Streams every target's bytes from `source` into its sink; see the file comment. */
export async function streamTensors(source: ModelSource, targets: readonly StreamTarget[], opts: StreamOptions): Promise<StreamResult> {
  const reqs = planReads(targets, opts);
  const parallel = Math.max(1, opts.parallel ?? DEFAULT_PARALLEL_READS);
  const budget = opts.budget;
  const total = reqs.reduce((a, r) => a + (r.end - r.start), 0);
  const verifying = new Set(opts.sha256?.keys() ?? []);
  const lastOfFile = new Map<string, number>();
  reqs.forEach((r, i) => lastOfFile.set(r.file, i));

  const ctl = new AbortController();
  const outer = opts.signal;
  const onOuterAbort = () => ctl.abort(outer?.reason);
  if (outer?.aborted) ctl.abort(outer.reason);
  else outer?.addEventListener('abort', onOuterAbort, { once: true });

  const slots: Array<Slot | undefined> = new Array(reqs.length);
  const issued: Array<() => void> = [];
  const issuedP = reqs.map((_, i) => new Promise<void>((r) => (issued[i] = r)));
  const held = new Set<number>(); // requests whose bytes are counted in the budget
  let inFlight = 0;
  let maxInFlight = 0;
  let slotWaiter: (() => void) | null = null;
  let failure: unknown = null;
  const fail = (e: unknown) => {
    if (failure === null) failure = e;
    ctl.abort(e);
    for (const r of issued) r(); // unblock the delivery loop
    slotWaiter?.();
  };

  const issueLoop = async () => {
    for (let i = 0; i < reqs.length; i++) {
      if (failure !== null) return;
      while (inFlight >= parallel) {
        await new Promise<void>((r) => (slotWaiter = r));
        slotWaiter = null;
        if (failure !== null) return;
      }
      const r = reqs[i]!;
      const len = r.end - r.start;
      await budget.acquire(len, ctl.signal);
      held.add(i);
      if (failure !== null) return;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      const bytes = source.range(r.file, r.start, r.end, ctl.signal).finally(() => {
        inFlight--;
        slotWaiter?.();
      });
      bytes.catch(() => {}); // observed by the delivery loop
      slots[i] = { bytes };
      issued[i]!();
    }
  };

  const hashers = new Map<string, Sha256>();
  const verified: string[] = [];
  let done = 0;
  const deliverLoop = async () => {
    for (let i = 0; i < reqs.length; i++) {
      await issuedP[i];
      if (failure !== null) return;
      const r = reqs[i]!;
      const bytes = await slots[i]!.bytes;
      if (bytes.length !== r.end - r.start) {
        throw new NibbleError('network', `${r.file}: read [${r.start}, ${r.end}) returned ${bytes.length} bytes`);
      }
      if (verifying.has(r.file)) {
        let h = hashers.get(r.file);
        if (!h) hashers.set(r.file, (h = new Sha256()));
        if (h.bytes !== r.start) throw new NibbleError('integrity', `${r.file}: internal error: hashing out of order`);
        h.update(bytes);
      }
      for (const p of r.pieces) {
        await p.target.write(p.row0, bytes.subarray(p.offset, p.offset + p.bytes));
      }
      if (verifying.has(r.file) && lastOfFile.get(r.file) === i) {
        const got = hashers.get(r.file)!.hex();
        const want = opts.sha256!.get(r.file)!.toLowerCase();
        if (got !== want) {
          throw new NibbleError(
            'integrity',
            `${r.file} in ${source.description} failed its sha256 check: expected ${want}, got ${got} (corrupted download or the file changed); nothing was cached`,
          );
        }
        verified.push(r.file);
      }
      slots[i] = undefined;
      held.delete(i);
      budget.release(r.end - r.start);
      done += r.end - r.start;
      opts.onProgress?.(done, total);
    }
  };

  try {
    await Promise.all([issueLoop().catch(fail), deliverLoop().catch(fail)]);
    if (failure !== null) throw failure;
  } catch (e) {
    if (outer?.aborted && !(e instanceof NibbleError && e.code === 'aborted')) {
      throw new NibbleError('aborted', 'model load aborted', { cause: outer.reason });
    }
    throw e;
  } finally {
    outer?.removeEventListener('abort', onOuterAbort);
    ctl.abort(); // nothing should still run; make sure of it
    for (const i of held) budget.release(reqs[i]!.end - reqs[i]!.start);
    held.clear();
  }
  return { requests: reqs.length, bytesRead: total, verified, maxInFlight };
}
