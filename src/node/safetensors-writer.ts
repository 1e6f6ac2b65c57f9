/**
 * Streaming safetensors writer (Node only).
 *
 * File layout (https://github.com/huggingface/safetensors):
 *   [u64 LE: N] [N bytes of UTF-8 JSON header, padded with spaces to a multiple of 8] [tensor data]
 * The header maps each tensor name to `{ dtype, shape, data_offsets: [begin, end) }` (offsets relative
 * to the start of the data section) plus an optional `__metadata__` string→string map. Tensors are
 * stored contiguously, little-endian, row-major, in the order given.
 *
 * Memory stays bounded: each tensor is produced chunk by chunk through its `fill` callback into one
 * of two reused buffers (one is being filled while the other is being written), so a multi-GB file
 * never sits in memory.
 */
import { open, rename, rm } from 'node:fs/promises';
import { endianness } from 'node:os';
import { NibbleError } from '../errors.ts';

export type SafetensorsDtype = 'BF16' | 'F16' | 'F32';

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = { BF16: 2, F16: 2, F32: 4 };

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  /**
   * Write the little-endian bytes of elements [offsetElements, offsetElements + chunk.byteLength /
   * bytesPerElement) into `chunk`. Called in order of increasing offset, from 0 to the end, exactly
   * once per range, so a stateful generator may simply produce the next values. `chunk.byteOffset`
   * is a multiple of 8, so typed-array views over it are aligned.
   */
  fill(chunk: Uint8Array, offsetElements: number): void;
}

export interface WriteSafetensorsOptions {
  /** `__metadata__` of the header; default `{ format: 'pt' }`. */
  metadata?: Record<string, string>;
  /** Bytes per fill/write chunk (rounded down to a multiple of 8); default 4 MiB. */
  chunkBytes?: number;
  /** Called after every chunk written. */
  onProgress?: (bytesWritten: number, totalBytes: number) => void;
  /** Write to `<path>.partial` and rename at the end (default true), so a reader never sees half a file. */
  atomic?: boolean;
}

export interface SafetensorsLayout {
  /** The 8-byte length prefix followed by the padded JSON header. */
  header: Uint8Array;
  /** Per tensor, in input order: byte offsets [begin, end) inside the data section. */
  offsets: Array<[number, number]>;
  /** Size of the data section in bytes. */
  dataBytes: number;
  /** header.byteLength + dataBytes. */
  totalBytes: number;
}

export function tensorElements(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new NibbleError('bad-argument', `bad tensor dimension ${d}`);
    n *= d;
  }
  return n;
}

export function tensorByteSize(t: Pick<TensorToWrite, 'dtype' | 'shape'>): number {
  return tensorElements(t.shape) * DTYPE_BYTES[t.dtype];
}

/** Builds the header (length prefix + JSON padded with spaces to a multiple of 8) and the data offsets. */
export function safetensorsLayout(
  tensors: ReadonlyArray<Pick<TensorToWrite, 'name' | 'dtype' | 'shape'>>,
  metadata: Record<string, string> = { format: 'pt' },
): SafetensorsLayout {
  const json: Record<string, unknown> = { __metadata__: metadata };
  const offsets: Array<[number, number]> = [];
  let pos = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.prototype.hasOwnProperty.call(json, t.name)) {
      throw new NibbleError('bad-argument', `duplicate or reserved tensor name "${t.name}"`);
    }
    if (!(t.dtype in DTYPE_BYTES)) throw new NibbleError('bad-argument', `unsupported dtype ${t.dtype} for ${t.name}`);
    const bytes = tensorByteSize(t);
    offsets.push([pos, pos + bytes]);
    json[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [pos, pos + bytes] };
    pos += bytes;
  }
  const text = new TextEncoder().encode(JSON.stringify(json));
  const padded = Math.ceil(text.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded);
  header.fill(0x20, 8);
  header.set(text, 8);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  return { header, offsets, dataBytes: pos, totalBytes: header.byteLength + pos };
}

/** Writes one safetensors file, streaming each tensor through its `fill`. Returns the file size. */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  opts: WriteSafetensorsOptions = {},
): Promise<{ bytes: number; headerBytes: number; dataBytes: number }> {
  if (endianness() !== 'LE') throw new NibbleError('bad-argument', 'safetensors writer needs a little-endian host');
  const layout = safetensorsLayout(tensors, opts.metadata);
  const chunkBytes = Math.max(8, Math.floor((opts.chunkBytes ?? 4 * 1024 * 1024) / 8) * 8);
  const atomic = opts.atomic ?? true;
  const target = atomic ? `${path}.partial` : path;
  const fh = await open(target, 'w');
  let ok = false;
  try {
    let position = 0;
    const writeAll = async (buf: Uint8Array): Promise<void> => {
      let done = 0;
      while (done < buf.byteLength) {
        const { bytesWritten } = await fh.write(buf, done, buf.byteLength - done, position + done);
        if (bytesWritten <= 0) throw new NibbleError('network', `short write to ${target}`);
        done += bytesWritten;
      }
      position += buf.byteLength;
      opts.onProgress?.(position, layout.totalBytes);
    };
    await writeAll(layout.header);

    // Two buffers: fill one while the other is being written.
    const bufs = [new Uint8Array(new ArrayBuffer(chunkBytes)), new Uint8Array(new ArrayBuffer(chunkBytes))];
    let which = 0;
    let pending: Promise<void> | null = null;
    for (const t of tensors) {
      const bpe = DTYPE_BYTES[t.dtype];
      const total = tensorElements(t.shape);
      const perChunk = Math.floor(chunkBytes / bpe);
      for (let off = 0; off < total; off += perChunk) {
        const n = Math.min(perChunk, total - off);
        const buf = bufs[which]!.subarray(0, n * bpe);
        which ^= 1;
        t.fill(buf, off);
        if (pending) await pending;
        pending = writeAll(buf);
      }
    }
    if (pending) await pending;
    if (position !== layout.totalBytes) {
      throw new NibbleError('bad-argument', `wrote ${position} bytes, expected ${layout.totalBytes} (${path})`);
    }
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await rm(target, { force: true });
  }
  if (atomic) await rename(target, path);
  return { bytes: layout.totalBytes, headerBytes: layout.header.byteLength, dataBytes: layout.dataBytes };
}

// ---- number conversions (round to nearest even), usable by fill callbacks ----

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** bf16 bits of a float32 bit pattern (round to nearest even; NaN stays NaN). */
export function f32BitsToBf16(u: number): number {
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f16 bits of a float32 bit pattern (round to nearest even, subnormals, ±inf on overflow). */
export function f32BitsToF16(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) !== 0)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) !== 0)) half++; // a carry correctly bumps the exponent
  return sign | half;
}

export function f32ToBf16(x: number): number {
  f32Scratch[0] = x;
  return f32BitsToBf16(u32Scratch[0]!);
}

export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  return f32BitsToF16(u32Scratch[0]!);
}

/**
 * Encodes `src` (float32 values) into `out` as little-endian `dtype` elements; `out` must hold
 * exactly src.length elements and start at an offset aligned to the element size.
 */
export function encodeF32Into(src: Float32Array, dtype: SafetensorsDtype, out: Uint8Array): void {
  const n = src.length;
  if (out.byteLength !== n * DTYPE_BYTES[dtype]) throw new NibbleError('bad-argument', 'encodeF32Into: size mismatch');
  if (dtype === 'F32') {
    new Float32Array(out.buffer, out.byteOffset, n).set(src);
    return;
  }
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  const dst = new Uint16Array(out.buffer, out.byteOffset, n);
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) {
      const u = bits[i]!;
      dst[i] = (u & 0x7f800000) === 0x7f800000 ? f32BitsToBf16(u) : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    }
  } else {
    for (let i = 0; i < n; i++) dst[i] = f32BitsToF16(bits[i]!);
  }
}
