import type { DType } from '../util/dtype.ts';

/**
 * NaN / ±Inf in raw checkpoint bytes (F32, F16, BF16; other dtypes are not scanned): how many, and
 * the element index of the first. The loader scans what it converts on the CPU (norms, biases,
 * f32-format weights); the GPU quantizers count their own inputs (quant_common.wgsl).
 */
export function scanNonFinite(bytes: Uint8Array, dtype: DType): { count: number; first: number } {
  let count = 0;
  let first = -1;
  if (dtype === 'F32') {
    const n = bytes.length >> 2;
    const u = bytes.byteOffset % 4 === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, n) : new Uint32Array(bytes.slice(0, n * 4).buffer);
    for (let i = 0; i < n; i++) {
      if ((u[i] & 0x7f800000) === 0x7f800000) {
        if (count++ === 0) first = i;
      }
    }
  } else if (dtype === 'F16' || dtype === 'BF16') {
    const n = bytes.length >> 1;
    const u = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.slice(0, n * 2).buffer);
    const exp = dtype === 'F16' ? 0x7c00 : 0x7f80;
    for (let i = 0; i < n; i++) {
      if ((u[i] & exp) === exp) {
        if (count++ === 0) first = i;
      }
    }
  }
  return { count, first };
}
