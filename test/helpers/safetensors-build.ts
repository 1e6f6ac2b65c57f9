/**
 * Builds safetensors files in memory for tests, with hooks to corrupt any part of them.
 *
 * Tensors are laid out contiguously in the order given; `data_offsets` are computed from the
 * dtype's element size (unknown dtypes count 1 byte per element so a corrupt header can still
 * be written). Data bytes default to a deterministic pattern.
 */

const ELEMENT_BYTES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
};

export interface BuildTensor {
  name: string;
  dtype: string;
  shape: number[];
  /** Raw little-endian bytes; defaults to a deterministic pattern of the right length. */
  data?: Uint8Array;
}

export interface BuildOptions {
  metadata?: unknown;
  /** Edit (or replace, by returning a value) the header object before it is serialized. */
  corruptHeader?: (header: Record<string, unknown>) => unknown;
  /** Edit the header JSON text before it is encoded (e.g. make it invalid JSON). */
  corruptText?: (json: string) => string;
  /** Write this value as the u64 header length instead of the real one. */
  headerLength?: bigint;
  /** Pad the header with spaces to a multiple of 8 bytes, as the reference writer does (default true). */
  pad?: boolean;
  /** Final hook on the finished file bytes (truncate, flip bytes...). */
  corruptBytes?: (file: Uint8Array) => Uint8Array;
}

/** Bytes of a Float32Array / other typed array, little-endian (host order). */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();
}

export function buildSafetensors(tensors: BuildTensor[], opts: BuildOptions = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (opts.metadata !== undefined) header.__metadata__ = opts.metadata;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1) * (ELEMENT_BYTES[t.dtype] ?? 1);
    const data = t.data ?? Uint8Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + data.length] };
    chunks.push(data);
    offset += data.length;
  }
  let obj: unknown = header;
  if (opts.corruptHeader) {
    const replaced = opts.corruptHeader(header);
    if (replaced !== undefined) obj = replaced;
  }
  let json = JSON.stringify(obj);
  if (opts.corruptText) json = opts.corruptText(json);
  let text = new TextEncoder().encode(json);
  if (opts.pad !== false && text.length % 8 !== 0) {
    const padded = new Uint8Array(Math.ceil(text.length / 8) * 8).fill(0x20);
    padded.set(text);
    text = padded;
  }
  const out = new Uint8Array(8 + text.length + offset);
  new DataView(out.buffer).setBigUint64(0, opts.headerLength ?? BigInt(text.length), true);
  out.set(text, 8);
  let p = 8 + text.length;
  for (const c of chunks) {
    out.set(c, p);
    p += c.length;
  }
  return opts.corruptBytes ? opts.corruptBytes(out) : out;
}
