/**
 * The hub mirror's responses with fault injection (src/node/hub-server.ts): which requests a fault
 * applies to, and file bodies streamed from disk with the cut / stall / corrupt faults applied.
 */
import { createReadStream, type Stats } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HubFaults, HubRequestRecord } from './hub-server.ts';

const DEFAULT_FAULT_PATHS = /\.safetensors$/;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The faults one response body gets; `hit` counts each fault that fires towards `maxFaults`. */
export interface BodyFaults {
  cutAfter?: number;
  stallAfter?: number;
  corruptAt?: number;
  hit(): void;
}

/** The current faults, their deterministic failRate sequence and how many have fired. */
export class FaultInjector {
  private faults: HubFaults | undefined;
  private rng = mulberry32(0);
  private faulted = 0;

  set(f: HubFaults | undefined): void {
    this.faults = f ? { ...f } : undefined;
    this.rng = mulberry32(f?.seed ?? 0);
    this.faulted = 0;
  }

  /**
   * Applies a request's latency and failRate faults (true: answer 500) and returns the faults for
   * its body. Whether faults are still active (maxFaults) is decided once, on arrival.
   */
  async before(method: string, path: string): Promise<{ fail: boolean; body: BodyFaults }> {
    const f = this.faults;
    const hit = () => void this.faulted++;
    if (!f || !(f.onlyPaths ?? DEFAULT_FAULT_PATHS).test(path)) return { fail: false, body: { hit } };
    const active = f.maxFaults === undefined || this.faulted < f.maxFaults;
    const get = method === 'GET';
    const body: BodyFaults = { corruptAt: get ? f.corruptByteAt : undefined, hit };
    if (!active) return { fail: false, body };
    if (f.latencyMs && f.latencyMs > 0) {
      this.faulted++;
      await new Promise((r) => setTimeout(r, f.latencyMs));
    }
    if (f.failRate && f.failRate > 0 && this.rng() < f.failRate) {
      this.faulted++;
      return { fail: true, body };
    }
    if (get) Object.assign(body, { cutAfter: f.cutAfterBytes, stallAfter: f.stallAfterBytes });
    return { fail: false, body };
  }
}

function contentType(file: string): string {
  if (/\.json$/i.test(file)) return 'application/json; charset=utf-8';
  if (/\.(txt|md)$/i.test(file)) return 'text/plain; charset=utf-8';
  if (/\.(jinja|py|yaml|yml)$/i.test(file)) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

/** Parses a single-range `bytes=` header. null: no (usable) range → 200; 'unsatisfiable' → 416. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (!header) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return null; // malformed or multi-range: ignored (RFC 9110 allows answering 200)
  const [, a, b] = m;
  if (a === '' && b === '') return null;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return size === 0 ? 'unsatisfiable' : { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  let end = b === '' ? size - 1 : Number(b);
  if (b !== '' && end < start) return null; // invalid → ignore
  if (start >= size) return 'unsatisfiable';
  end = Math.min(end, size - 1);
  return { start, end };
}

/** Answers with the bytes of a file (whole, or the requested range: 206 / 416), streaming, with the body faults. */
export function sendFile(
  req: IncomingMessage,
  res: ServerResponse,
  rec: HubRequestRecord,
  file: { abs: string; st: Stats },
  headers: Record<string, string>,
  faults: BodyFaults,
): void {
  const size = file.st.size;
  const range = parseRange(req.headers.range, size);
  if (range === 'unsatisfiable') {
    rec.status = 416;
    res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}`, 'Content-Length': '0', 'Accept-Ranges': 'bytes' });
    res.end();
    return;
  }
  const start = range ? range.start : 0;
  const end = range ? range.end : size - 1; // inclusive
  const length = Math.max(0, end - start + 1);
  rec.status = range ? 206 : 200;
  const h: Record<string, string> = {
    ...headers,
    'Accept-Ranges': 'bytes',
    'Content-Length': String(length),
    'Content-Type': contentType(file.abs),
    'Last-Modified': file.st.mtime.toUTCString(),
  };
  if (range) h['Content-Range'] = `bytes ${start}-${end}/${size}`;
  res.writeHead(rec.status, h);
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return;
  }
  streamBody(res, rec, file.abs, start, end, faults);
}

/** Closes the connection after what was written, without ending the response: the client sees a short body. */
function cut(res: ServerResponse): void {
  const sock = res.socket;
  if (!res.headersSent) res.flushHeaders();
  if (sock) sock.end();
  else res.destroy();
}

/** Streams bytes [start, end] of a file into `res`, stalling, cutting or corrupting it as `faults` say. */
function streamBody(res: ServerResponse, rec: HubRequestRecord, path: string, start: number, end: number, faults: BodyFaults): void {
  const length = end - start + 1;
  const limit = faults.cutAfter !== undefined && faults.cutAfter >= 0 && faults.cutAfter < length ? faults.cutAfter : Infinity;
  const stallAt = faults.stallAfter !== undefined && faults.stallAfter >= 0 && faults.stallAfter < length ? faults.stallAfter : Infinity;
  if (stallAt === 0 || limit === 0) {
    faults.hit();
    res.flushHeaders();
    if (stallAt !== 0) cut(res);
    return;
  }
  const rs = createReadStream(path, { start, end, highWaterMark: 256 * 1024 });
  let sent = 0;
  /** Sends the part of `buf` before `at` (body offset), then stops reading. */
  const last = (buf: Buffer, at: number) => {
    const part = buf.subarray(0, at - sent);
    faults.hit();
    sent += part.byteLength;
    rec.bytesSent = sent;
    rs.destroy();
    if (part.byteLength > 0) res.write(part);
  };
  res.on('close', () => rs.destroy());
  rs.on('error', (err) => res.destroy(err));
  rs.on('data', (chunk) => {
    const buf = corrupt(chunk as Buffer, start + sent, faults.corruptAt);
    if (sent + buf.byteLength > stallAt && stallAt < limit) return last(buf, stallAt); // the response stays open until the client gives up
    if (sent + buf.byteLength > limit) {
      last(buf, limit);
      return cut(res);
    }
    sent += buf.byteLength;
    rec.bytesSent = sent;
    if (!res.write(buf)) {
      rs.pause();
      res.once('drain', () => rs.resume());
    }
  });
  rs.on('end', () => {
    if (sent < limit) res.end();
  });
}

/** `buf` (file bytes from offset `at`) with the byte at `corruptAt` flipped, when it covers it. */
function corrupt(buf: Buffer, at: number, corruptAt: number | undefined): Buffer {
  if (corruptAt === undefined || corruptAt < at || corruptAt >= at + buf.byteLength) return buf;
  const copy = Buffer.from(buf);
  copy[corruptAt - at] ^= 0xff;
  return copy;
}
