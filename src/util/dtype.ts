/**
 * The safetensors dtypes and the host-side conversions of their bytes to f32 (the host is
 * little-endian on every WebGPU platform). The checkpoint reader (src/loader/) and the weight
 * formats (src/quant/) both use them.
 */
import { NibbleError } from '../errors.ts';

export type DType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U8'
  | 'BOOL'
  | 'F8_E4M3'
  | 'F8_E5M2';

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

function outArray(n: number, dst: Float32Array | undefined, what: string): Float32Array {
  if (!dst) return new Float32Array(n);
  if (dst.length < n) {
    throw new NibbleError('bad-argument', `${what}: destination holds ${dst.length} floats, need ${n}`);
  }
  return dst;
}

function checkEven(src: Uint8Array, what: string): void {
  if (src.length % 2 !== 0) throw new NibbleError('bad-tensor', `${what}: ${src.length} bytes is not a whole number of 2-byte values`);
}

/**
 * bfloat16 → float32: a bf16 is the top 16 bits of an f32, so this is exact (NaN payloads,
 * infinities, subnormals and -0 included). Works for any byteOffset of `src`.
 */
export function bf16ToF32(src: Uint8Array, dst?: Float32Array): Float32Array {
  checkEven(src, 'bf16ToF32');
  const n = src.length >>> 1;
  const out = outArray(n, dst, 'bf16ToF32');
  const bits = new Uint32Array(out.buffer, out.byteOffset, n);
  for (let i = 0, j = 0; i < n; i++, j += 2) {
    bits[i] = ((src[j]! | (src[j + 1]! << 8)) << 16) >>> 0;
  }
  return out;
}

/** f16 bit pattern → f32 bit pattern for all 65536 values, built on first use (256 KiB). */
let f16Table: Uint32Array | null = null;

function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf / NaN (payload kept)
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0; // normal: rebias 15 → 127
  if (mant === 0) return sign >>> 0; // ±0
  // Subnormal: value = mant × 2^-24. Normalize: shift the mantissa until its leading 1 reaches
  // bit 10, lowering the exponent by one per shift.
  let e = 113; // 127 - 15 + 1: exponent of 2^-14, the subnormal scale
  let m = mant;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

function getF16Table(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

/** IEEE binary16 → float32, exact (subnormals, ±inf, NaN, -0). Works for any byteOffset of `src`. */
export function f16ToF32(src: Uint8Array, dst?: Float32Array): Float32Array {
  checkEven(src, 'f16ToF32');
  const n = src.length >>> 1;
  const out = outArray(n, dst, 'f16ToF32');
  const bits = new Uint32Array(out.buffer, out.byteOffset, n);
  const table = getF16Table();
  for (let i = 0, j = 0; i < n; i++, j += 2) {
    bits[i] = table[src[j]! | (src[j + 1]! << 8)]!;
  }
  return out;
}

/**
 * Raw tensor bytes → Float32Array for F32, F16 and BF16. For F32 with a 4-byte aligned
 * byteOffset the result is a zero-copy VIEW of `bytes`; unaligned input is copied.
 */
export function toF32(bytes: Uint8Array, dtype: DType): Float32Array {
  switch (dtype) {
    case 'F32': {
      if (bytes.length % 4 !== 0) {
        throw new NibbleError('bad-tensor', `toF32: ${bytes.length} bytes is not a whole number of F32 values`);
      }
      if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
      const copy = new Uint8Array(bytes.length); // fresh buffer → offset 0, aligned
      copy.set(bytes);
      return new Float32Array(copy.buffer);
    }
    case 'F16':
      return f16ToF32(bytes);
    case 'BF16':
      return bf16ToF32(bytes);
    default:
      throw new NibbleError('bad-tensor', `toF32: dtype ${dtype} is not supported (only F32, F16, BF16)`);
  }
}
