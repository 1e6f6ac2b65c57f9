/**
 * CPU reference quantizers and dequantizers for every GPU weight format (test code). Plain
 * TypeScript on Float32Array values; every f32 operation is rounded with Math.fround, so the GPU
 * kernels (which compute the same correctly rounded f32 operations) must match bit for bit.
 *
 * Layouts (row-major [rows = out, cols = K = in]; blocks never straddle rows, so a row of K
 * holds ceil(K / block) blocks, the last one partial; bitsandbytes flattens the tensor instead).
 * Every row of codes is padded to a multiple of 16 bytes: KW(v) = 4 · ceil(K / (4v)) u32 words
 * for v weights per word, the padding decoding to 0.0 (scales / absmax are not padded):
 *   int8   codes  u32[rows * KW(4)]       byte k%4 of word k/4 = q (two's complement), pad q = 0
 *          scales f32[rows * ceil(K/G)]   s = absmax / 127
 *   nf4    codes  u32[rows * KW(8)]       bits 4(k%8).. of word k/8 = code (low nibble first), pad 7
 *          absmax f32[rows * ceil(K/64)]
 *   nf4-dq codes  as nf4
 *          qabs   u32[ceil(nb/4)]         byte i%4 of word i/4 = 8-bit code of absmax i (i = row*NB + b)
 *          stats  f32[1 + ceil(nb/256)]   [0] = offset (mean absmax), [1 + j] = absmax2 of group j
 *   f16    codes  u32[rows * KW(2)]       half k%2 of word k/2 (low half = even k), pad 0
 *   f32    W      f32[rows * KW(1)]       row-major, pad 0
 *
 * Normalising by a block scale d (nf4: absmax, int8: s, nf4-dq's second level: absmax2) is, like
 * the GPU's (and bitsandbytes'), a multiplication by the reciprocal computed once per block:
 * f(w * f(1 / d)); where d ∉ [2^-100, 2^100) it is the division f(w / d) (see quant_common.wgsl).
 * An all-zero block, or a block holding inf / NaN, quantizes to codes of 0.0 (its scale: 0, or
 * the inf / NaN; int8's s also when it rounds to 0).
 */

const f = Math.fround;

// ------------------------------------------------------------------------------------- bits

const cvt = new DataView(new ArrayBuffer(4));
export function f32Bits(x: number): number {
  cvt.setFloat32(0, x, true);
  return cvt.getUint32(0, true);
}
export function bitsF32(u: number): number {
  cvt.setUint32(0, u >>> 0, true);
  return cvt.getFloat32(0, true);
}

/** Round half to even (WGSL `round`). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // half up
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * f32 → IEEE binary16 bits, round to nearest even. Overflow: |x| ≥ 65520 (65504 + half an ulp)
 * becomes ±inf; ±inf stays inf; NaN becomes 0x7e00 (sign kept); f16 subnormals are exact RNE.
 * Written from the value (scaling by powers of two), independently of the GPU's bit-twiddling.
 */
export function f32ToF16Bits(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (Number.isNaN(x)) return sign | 0x7e00;
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24); // subnormal (may round up to 0x400)
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const m = roundHalfEven((a / 2 ** e) * 1024); // 1024..2048, exact in f64
  return sign | ((((e + 15) << 10) + (m - 1024)) & 0xffff);
}

export function f16BitsToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  if (e === 0) return s * m * 2 ** -24;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

// ------------------------------------------------------------------------------------- codebooks

/** bitsandbytes' NF4 codebook (float32 values of `nf4_dequantization_lut`). */
export const NF4 = new Float32Array([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);

/** bitsandbytes' dQuantizeNF4 decision tree (thresholds are the f32 midpoints between codes). */
export function quantizeNF4(x: number): number {
  if (x > f(0.03979014977812767))
    if (x > f(0.3893125355243683))
      if (x > f(0.6427869200706482)) return x > f(0.8614784181118011) ? 15 : 14;
      else return x > f(0.5016634166240692) ? 13 : 12;
    else if (x > f(0.2035212516784668)) return x > f(0.2920137718319893) ? 11 : 10;
    else return x > f(0.1202552504837513) ? 9 : 8;
  else if (x > f(-0.33967943489551544))
    if (x > f(-0.13791173323988914)) return x > f(-0.045525018125772476) ? 7 : 6;
    else return x > f(-0.23460740596055984) ? 5 : 4;
  else if (x > f(-0.6106329262256622)) return x > f(-0.4599952697753906) ? 3 : 2;
  else return x > f(-0.8480964004993439) ? 1 : 0;
}

/** torch.linspace(start, end, steps) in float32 (its scalar CPU formula: from both ends). */
function linspaceF32(start: number, end: number, steps: number): number[] {
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const out: number[] = [];
  for (let i = 0; i < steps; i++) out.push(i < half ? f(s + f(step * i)) : f(e - f(step * (steps - i - 1))));
  return out;
}

/**
 * bitsandbytes `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`, step by step
 * in float32 as torch computes it: for exponent i = 0..6, the 2^i midpoints of
 * linspace(0.1, 1, 2^i + 1), scaled by ±10^(i-6); then 0 and 1; sorted (256 values).
 */
export function dynamicMap(): Float32Array {
  const maxExp = 7;
  const nonSign = 7;
  const data: number[] = [];
  const pow10 = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];
  for (let i = 0; i < maxExp; i++) {
    const items = 2 ** (i + nonSign - maxExp) + 1;
    const b = linspaceF32(0.1, 1, items);
    const means = b.slice(0, -1).map((v, j) => f(f(v + b[j + 1]) / 2));
    const p = f(pow10[i]);
    data.push(...means.map((m) => f(p * m)));
    data.push(...means.map((m) => f(-p * m)));
  }
  data.push(0, 1);
  if (data.length !== 256) throw new Error(`dynamic map has ${data.length} values`);
  return new Float32Array(data.sort((a, b) => a - b));
}

/** bitsandbytes' dQuantize<0>: binary search from pivot 127, then the nearer of two neighbours. */
export function quantizeDynamic(code: Float32Array, x: number): number {
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let lower = -1;
  let upper = 1;
  let val = code[pivot];
  for (let i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upperPivot === 255) upper = code[upperPivot];
  if (lowerPivot === 0) lower = code[lowerPivot];
  if (x > val) return x > f(f(upper + val) * 0.5) ? upperPivot : pivot;
  return x < f(f(lower + val) * 0.5) ? lowerPivot : pivot;
}

// ------------------------------------------------------------------------------------- formats

export interface Quantized {
  /** The weight's GPU buffers as u32 words, in binding order (f32 data as its bits). */
  buffers: Uint32Array[];
  /** The dequantized weight, rows × K. */
  dequant: Float32Array;
}

const words = (n: number) => new Uint32Array(n);

/** u32 words of one row of K weights stored v per word, padded to 16 bytes. */
export const rowWords = (K: number, v: number) => Math.ceil(K / (4 * v)) * 4;

/** Whether w / d is computed as w * (1 / d) (the reciprocal once per block): 2^-100 ≤ d < 2^100. */
export const recipOk = (d: number) => d >= 2 ** -100 && d < 2 ** 100;
/** The block's reciprocal (0 where unused). */
const blockRecip = (d: number) => (recipOk(d) ? f(1 / d) : 0);
/** w / d as the quantizers compute it. */
const normBy = (w: number, d: number, inv: number) => (recipOk(d) ? f(w * inv) : f(w / d));
/** A block scale that quantizes (not 0, not inf / NaN). */
const live = (d: number) => d !== 0 && Number.isFinite(d);
/**
 * The bits of max |w| over w[i0..i1), like the GPU: a max over the |bits| of the f32 values (so a
 * NaN keeps its payload, and wins over inf). JS numbers may not keep NaN bits, hence bits.
 */
const absmaxBits = (w: Float32Array, i0: number, i1: number) => {
  const u = new Uint32Array(w.buffer, w.byteOffset, w.length);
  let a = 0;
  for (let i = i0; i < i1; i++) a = Math.max(a, (u[i] & 0x7fffffff) >>> 0);
  return a;
};

/** int8: symmetric absmax per group of G along K (G = K: per row). s = absmax/127, q = round(w · (1/s)). */
export function quantInt8(w: Float32Array, rows: number, K: number, G: number): Quantized {
  const KW = rowWords(K, 4);
  const NG = Math.ceil(K / G);
  const codes = words(rows * KW);
  const scales = new Uint32Array(rows * NG); // bits (inf / NaN kept)
  const dequant = new Float32Array(rows * K);
  for (let n = 0; n < rows; n++)
    for (let g = 0; g < NG; g++) {
      const k0 = g * G;
      const k1 = Math.min(K, k0 + G);
      const amaxBits = absmaxBits(w, n * K + k0, n * K + k1);
      const amax = bitsF32(amaxBits);
      const s = live(amax) ? f(amax / 127) : amax;
      scales[n * NG + g] = live(amax) ? f32Bits(s) : amaxBits;
      const inv = live(s) ? blockRecip(s) : 0;
      for (let k = k0; k < k1; k++) {
        const q = live(s) ? Math.max(-127, Math.min(127, roundHalfEven(normBy(w[n * K + k], s, inv)))) : 0;
        codes[n * KW + (k >> 2)] |= (q & 0xff) << (8 * (k & 3));
        dequant[n * K + k] = f(q * s);
      }
    }
  return { buffers: [codes, scales], dequant };
}

/** NF4 codes and f32 absmax per block of 64 (the first pass of nf4 and nf4-dq). */
function nf4Blocks(w: Float32Array, rows: number, K: number) {
  const KW = rowWords(K, 8);
  const NB = Math.ceil(K / 64);
  const codes = words(rows * KW);
  const absmax = new Float32Array(rows * NB);
  const absmaxU = new Uint32Array(absmax.buffer); // written as bits (inf / NaN kept)
  for (let n = 0; n < rows; n++) {
    for (let k = 0; k < KW * 8; k++) if (k >= K) codes[n * KW + (k >> 3)] |= 7 << (4 * (k & 7)); // padding = 0.0
    for (let b = 0; b < NB; b++) {
      const k0 = b * 64;
      const k1 = Math.min(K, k0 + 64);
      const amaxBits = absmaxBits(w, n * K + k0, n * K + k1);
      const amax = bitsF32(amaxBits);
      absmaxU[n * NB + b] = amaxBits;
      const inv = live(amax) ? blockRecip(amax) : 0;
      for (let k = k0; k < k1; k++) {
        const c = live(amax) ? quantizeNF4(normBy(w[n * K + k], amax, inv)) : 7;
        codes[n * KW + (k >> 3)] |= c << (4 * (k & 7));
      }
    }
  }
  return { codes, absmax, KW, NB };
}

function nf4Dequant(codes: Uint32Array, absmax: ArrayLike<number>, rows: number, K: number): Float32Array {
  const KW = rowWords(K, 8);
  const NB = Math.ceil(K / 64);
  const out = new Float32Array(rows * K);
  for (let n = 0; n < rows; n++)
    for (let k = 0; k < K; k++) {
      const c = (codes[n * KW + (k >> 3)] >>> (4 * (k & 7))) & 15;
      out[n * K + k] = f(NF4[c] * absmax[n * NB + (k >> 6)]);
    }
  return out;
}

export function quantNF4(w: Float32Array, rows: number, K: number): Quantized {
  const { codes, absmax } = nf4Blocks(w, rows, K);
  return { buffers: [codes, new Uint32Array(absmax.buffer)], dequant: nf4Dequant(codes, absmax, rows, K) };
}

/**
 * The GPU's mean of n absmax values: 256 threads sum strided elements (thread t: t, t+256, …) in
 * f32, then a tree (s = 128, 64, …, 1: red[t] += red[t + s]); mean = sum / n, rounded once.
 */
export function gpuMean(a: Float32Array): number {
  const red = new Float32Array(256);
  for (let t = 0; t < 256; t++) {
    let s = 0;
    for (let i = t; i < a.length; i += 256) s = f(s + a[i]);
    red[t] = s;
  }
  for (let s = 128; s > 0; s >>= 1) for (let t = 0; t < s; t++) red[t] = f(red[t] + red[t + s]);
  return f(red[0] / a.length);
}

/** nf4-dq: NF4 whose absmax values are stored as 8-bit dynamic-map codes, bnb's double quantization. */
export function quantNF4dq(w: Float32Array, rows: number, K: number): Quantized & { offset: number } {
  const { codes, absmax } = nf4Blocks(w, rows, K);
  const nb = absmax.length;
  const map = dynamicMap();
  const offset = gpuMean(absmax);
  const groups = Math.ceil(nb / 256);
  const qabs = words(Math.ceil(nb / 4));
  const stats = new Float32Array(1 + groups);
  stats[0] = offset;
  const deq = new Float32Array(nb);
  for (let j = 0; j < groups; j++) {
    const i0 = j * 256;
    const i1 = Math.min(nb, i0 + 256);
    let m = 0;
    for (let i = i0; i < i1; i++) m = Math.max(m, Math.abs(f(absmax[i] - offset)));
    stats[1 + j] = m;
    const inv = live(m) ? blockRecip(m) : 0;
    for (let i = i0; i < i1; i++) {
      const q = live(m) ? quantizeDynamic(map, normBy(f(absmax[i] - offset), m, inv)) : 127;
      qabs[i >> 2] |= q << (8 * (i & 3));
      deq[i] = f(f(map[q] * m) + offset);
    }
  }
  return {
    buffers: [codes, qabs, new Uint32Array(stats.buffer)],
    dequant: nf4Dequant(codes, deq, rows, K),
    offset,
  };
}

export function quantF16(w: Float32Array, rows: number, K: number): Quantized {
  const KW = rowWords(K, 2);
  const codes = words(rows * KW);
  const dequant = new Float32Array(rows * K);
  const u = new Uint32Array(w.buffer, w.byteOffset, w.length); // a NaN's sign, which JS numbers may not keep
  for (let n = 0; n < rows; n++)
    for (let k = 0; k < K; k++) {
      const x = w[n * K + k];
      const h = Number.isNaN(x) ? ((u[n * K + k] >>> 16) & 0x8000) | 0x7e00 : f32ToF16Bits(x);
      codes[n * KW + (k >> 1)] |= h << (16 * (k & 1));
      dequant[n * K + k] = f16BitsToF32(h);
    }
  return { buffers: [codes], dequant };
}

/** f32: the values, rows zero-padded to 16 bytes. */
export function quantF32(w: Float32Array, rows: number, K: number): Quantized {
  const KP = rowWords(K, 1);
  const data = new Float32Array(rows * KP);
  for (let n = 0; n < rows; n++) data.set(w.subarray(n * K, (n + 1) * K), n * KP);
  return { buffers: [new Uint32Array(data.buffer)], dequant: w.slice(0, rows * K) };
}

/** The reference for a registered format name. */
export function quantize(format: string, w: Float32Array, rows: number, K: number): Quantized {
  switch (format) {
    case 'int8':
      return quantInt8(w, rows, K, 64);
    case 'int8-g32':
      return quantInt8(w, rows, K, 32);
    case 'int8-g128':
      return quantInt8(w, rows, K, 128);
    case 'int8-row':
      return quantInt8(w, rows, K, K);
    case 'nf4':
      return quantNF4(w, rows, K);
    case 'nf4-dq':
      return quantNF4dq(w, rows, K);
    case 'f16':
      return quantF16(w, rows, K);
    case 'f32':
      return quantF32(w, rows, K);
    default:
      throw new Error(`no CPU reference for format ${format}`);
  }
}

/** Bytes of the reference's buffers (codes + scales) for a weight. */
export function weightBytes(format: string, rows: number, K: number): number {
  return quantize(format, new Float32Array(rows * K), rows, K).buffers.reduce((a, b) => a + b.byteLength, 0);
}

/**
 * Bytes on the GPU (codes + scales) that a weight's GpuWeight.bytes must report, from its shape:
 * padded code rows (4 · ceil(K / (4v)) words, v weights per word) plus the scales. Where K is a
 * multiple of 64 this is exactly 32 (f32), 16 (f16), 8.5 (int8), 4.5 (nf4) bits per weight and
 * ≈4.13 for nf4-dq.
 */
export function formatBytes(format: string, rows: number, K: number): number {
  const G = { int8: 64, 'int8-g32': 32, 'int8-g128': 128, 'int8-row': K }[format];
  if (G !== undefined) return rows * (rowWords(K, 4) + Math.ceil(K / G)) * 4; // codes + one f32 scale per group
  const nb = rows * Math.ceil(K / 64);
  switch (format) {
    case 'f32':
      return rows * rowWords(K, 1) * 4;
    case 'f16':
      return rows * rowWords(K, 2) * 4;
    case 'nf4': // codes + one f32 absmax per block of 64
      return rows * rowWords(K, 8) * 4 + nb * 4;
    case 'nf4-dq': // codes + one byte per block + the offset and one f32 per 256 blocks
      return rows * rowWords(K, 8) * 4 + Math.ceil(nb / 4) * 4 + (1 + Math.ceil(nb / 256)) * 4;
    default:
      throw new Error(`no byte formula for format ${format}`);
  }
}

/** Encodes f32 values as the raw little-endian bytes of a checkpoint dtype. */
export function encode(w: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(w.buffer.slice(w.byteOffset, w.byteOffset + w.byteLength));
  const out = new Uint8Array(w.length * 2);
  for (let i = 0; i < w.length; i++) {
    // bf16: truncate the f32 bits (tests feed values that are exactly representable or accept it)
    const h = dtype === 'F16' ? f32ToF16Bits(w[i]) : f32Bits(w[i]) >>> 16;
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >> 8;
  }
  return out;
}
