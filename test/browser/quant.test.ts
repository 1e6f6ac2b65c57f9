import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { openHarness, type Caller } from './page.ts';
import * as ref from '../ref/cpu.ts';
import * as q from '../ref/quant.ts';
import { toF32 } from '../../src/loader/safetensors.ts';
import { readSafetensorsHeader } from '../../src/loader/safetensors.ts';
import { FsSource } from '../../src/node/fs-source.ts';
import { modelsDir } from '../../src/node/paths.ts';
import { dynamicMap } from '../../src/quant/nf4.ts';

/**
 * On-GPU quantization at load, against the CPU reference (test/ref/quant.ts):
 * - bit-exact: the GPU writes the same codes and the same scales (compared as raw u32 words / f32
 *   bits) for every format, from F32 / F16 / BF16 bytes, written in row chunks (odd chunk byte
 *   lengths, rows starting mid-word), into fused weights, and for every stories260K weight;
 * - fused kernels: y from the GPU's fused dequant-matmul vs "CPU dequantize, then f32 matmul".
 *   Tolerance: |y - y_ref| ≤ 1e-5 · (Σ_k |x_k · w_nk| + |bias_n| + |y0_mn|) (f32 sums in another
 *   order; the dequantized weights themselves are identical);
 * - embedding lookup from every format equals the CPU dequantization (exactly; nf4-dq within
 *   1e-6, as a GPU may fuse dmap·absmax2 + offset into one fma).
 */

type DT = 'F32' | 'F16' | 'BF16';
const FORMATS = ['int8', 'int8-g32', 'int8-g128', 'int8-row', 'nf4', 'nf4-dq', 'f16'];
/** Every format a builder writes (f32 is widened on the CPU, with the same padded row layout). */
const BUILT = [...FORMATS, 'f32'];
const DTYPES: DT[] = ['F32', 'F16', 'BF16'];

let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

/**
 * A seeded test matrix: rows of normal values with per-row scales spread over 1e-3..1e2, plus
 * special rows: row 0 all zeros (absmax 0), row 1 int8 ties (absmax 127 → s = 1 → w / s = n.5),
 * row 2 (when the dtype has the range) f16 rounding edges: overflow, subnormals.
 */
function matrix(rows: number, cols: number, seed: number, dtype: DT): Float32Array {
  const w = ref.randn(rows * cols, seed);
  const scale = ref.randn(rows, seed + 1);
  for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) w[r * cols + k] *= 10 ** (scale[r] * 1.2 - 0.5);
  w.fill(0, 0, cols);
  if (rows > 1) [127, 2.5, -3.5, 0.5, -0.5, 1.5, 126.5, -127].forEach((v, k) => k < cols && (w[cols + k] = v));
  if (rows > 2 && dtype !== 'F16') {
    const edges = [65519, 65520, -65536, 65504, 1e-8, 6e-8, -3e-5, 2 ** -25, 1.5 * 2 ** -25, 1e-30, 100000, 2 ** -14];
    edges.forEach((v, k) => k < cols && (w[2 * cols + k] = v));
  }
  return w;
}

/** The values the GPU sees: the matrix as `dtype` bytes, decoded back. */
function asDtype(w: Float32Array, dtype: DT): { bytes: Uint8Array; values: Float32Array } {
  const bytes = q.encode(w, dtype);
  return { bytes, values: toF32(bytes, dtype).slice() };
}

/** Words equal to the reference; the GPU buffer may be longer (16-byte rounding) and is 0 there. */
function expectWords(got: number[], want: Uint32Array, what: string) {
  let bad = -1;
  for (let i = 0; i < want.length && bad < 0; i++) if (got[i] !== want[i]) bad = i;
  if (bad >= 0) {
    expect.fail(`${what}: word ${bad} of ${want.length} is 0x${(got[bad] >>> 0).toString(16)}, want 0x${want[bad].toString(16)}`);
  }
  expect(got.slice(want.length).every((v) => v === 0), `${what}: padding`).toBe(true);
}

function expectSameQuant(got: { buffers: number[][]; bytes: number }, want: q.Quantized, format: string, rows: number, cols: number, what: string) {
  expect(got.buffers.length, what).toBe(want.buffers.length);
  want.buffers.forEach((b, i) => expectWords(got.buffers[i], b, `${what} buffer ${i}`));
  // GpuWeight.bytes counts the padded rows: the reference's buffers and the shape formula agree
  expect(got.bytes, `${what}: bytes`).toBe(q.weightBytes(format, rows, cols));
  expect(got.bytes, `${what}: bytes from the shape`).toBe(q.formatBytes(format, rows, cols));
}

describe('CPU reference sanity', () => {
  it('f16 rounding edges', () => {
    const cases: Array<[number, number]> = [
      [1, 0x3c00], [65504, 0x7bff], [65519, 0x7bff], [65520, 0x7c00], [-1e6, 0xfc00], [Infinity, 0x7c00],
      [2 ** -24, 0x0001], [2 ** -25, 0x0000], [1.5 * 2 ** -25, 0x0001], [3 * 2 ** -25, 0x0002], [2 ** -14, 0x0400],
      [-0, 0x8000], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [NaN, 0x7e00],
    ];
    for (const [v, h] of cases) expect(q.f32ToF16Bits(v), String(v)).toBe(h);
  });

  it('NF4 tree and dynamic-map search pick the nearest code; the dynamic map is bnb-shaped', () => {
    const r = ref.rng(7);
    /** Distance to the picked code minus distance to the nearest code (0 when nearest). */
    const miss = (codebook: Float32Array, pick: (x: number) => number) => {
      let worst = 0;
      for (let i = 0; i < 20000; i++) {
        const x = Math.fround(r() * 2 - 1);
        let best = Infinity;
        for (const v of codebook) best = Math.min(best, Math.abs(x - v));
        worst = Math.max(worst, Math.abs(x - codebook[pick(x)]) - best);
      }
      return worst;
    };
    expect(miss(q.NF4, q.quantizeNF4)).toBeLessThan(1e-7); // midpoints rounded to f32
    const m = q.dynamicMap();
    expect(miss(m, (x) => q.quantizeDynamic(m, x))).toBeLessThan(1e-7);
    expect(m.length).toBe(256);
    expect(m[127]).toBe(0);
    expect(m[255]).toBe(1);
    expect(m[128]).toBe(Math.fround(Math.fround(1e-6) * Math.fround(0.55))); // 1e-6 · mean(linspace(0.1, 1, 2))
    expect(m[0]).toBe(-m[254]);
    expect(m.every((v, i) => i === 0 || v > m[i - 1])).toBe(true);
    expect(Array.from(dynamicMap())).toEqual(Array.from(m)); // the map nibble uploads

  });
});

describe('GPU quantization is bit-exact with the CPU reference', () => {
  const shapes: Array<[number, number, number]> = [
    [7, 172, 3], // stories260K's down_proj K, 3 row chunks
    [33, 100, 7],
    [5, 64, 1],
    [300, 257, 37], // odd K: 2-byte rows start mid-word, chunks of odd byte length
    [11, 45, 4], // K % 32 ≠ 0 everywhere: padded code rows (nf4: 0x77777777 words)
    [6, 3, 5], // K < a word of codes: one padded 16-byte chunk per row
    [4, 96, 3], // K % 32 = 0, K % 64 ≠ 0: no padding, a half block
  ];
  for (const format of BUILT) {
    it(`${format}: odd shapes × F32/F16/BF16, chunked writes`, async () => {
      const jobs = [];
      const wants: Array<{ want: q.Quantized; rows: number; cols: number; what: string }> = [];
      for (const [rows, cols, chunkRows] of shapes)
        for (const dtype of DTYPES) {
          const { bytes, values } = asDtype(matrix(rows, cols, rows * 31 + cols, dtype), dtype);
          jobs.push({ format, cols, parts: [{ dtype, bytes: Array.from(bytes), rows }], chunkRows });
          wants.push({ want: q.quantize(format, values, rows, cols), rows, cols, what: `${format} ${rows}×${cols} ${dtype}` });
        }
      const got = await call('quantizeAll', { jobs });
      got.forEach((g, i) => expectSameQuant(g, wants[i].want, format, wants[i].rows, wants[i].cols, wants[i].what));
    });
  }

  it('fused weight: two tensors of different dtypes at a row offset, every format', async () => {
    const cols = 100;
    const a = asDtype(matrix(20, cols, 1, 'F16'), 'F16');
    const b = asDtype(matrix(13, cols, 2, 'BF16'), 'BF16');
    const both = new Float32Array([...a.values, ...b.values]);
    const parts = [
      { dtype: 'F16' as const, bytes: Array.from(a.bytes), rows: 20 },
      { dtype: 'BF16' as const, bytes: Array.from(b.bytes), rows: 13 },
    ];
    const got = await call('quantizeAll', { jobs: BUILT.map((format) => ({ format, cols, parts, chunkRows: 6 })) });
    BUILT.forEach((format, i) => expectSameQuant(got[i], q.quantize(format, both, 33, cols), format, 33, cols, `fused ${format}`));
  });

  it('bits per weight at K = 64·n: nf4 4.5, int8 8.5, nf4-dq ≈ 4.13', async () => {
    const [rows, cols] = [64, 128];
    const bytes = Array.from(q.encode(ref.randn(rows * cols, 3), 'F32'));
    const got = await call('quantizeAll', {
      jobs: ['nf4', 'int8', 'nf4-dq', 'f16'].map((format) => ({ format, cols, parts: [{ dtype: 'F32' as const, bytes, rows }], chunkRows: 64 })),
    });
    const bpw = got.map((g) => (g.bytes * 8) / (rows * cols));
    expect(bpw[0]).toBe(4.5);
    expect(bpw[1]).toBe(8.5);
    // 4 + 8/64 (codes of absmax) + 32·(1 + ceil(128/256)) / 8192 (offset, one absmax2) = 4.1328
    expect(bpw[2]).toBeCloseTo(4 + 8 / 64 + 64 / 8192, 10);
    expect(Math.abs(bpw[2] - 4.13)).toBeLessThan(0.05);
    expect(bpw[3]).toBe(16);
  });

  /**
   * Blocks the once-per-block reciprocal must not meet (see quant_common.wgsl): inf / NaN blocks
   * (codes of 0.0), absmax < 2^-100 or ≥ 2^100 (divided weight by weight), subnormal weights in a
   * block whose reciprocal is used, absmax at both ends of the reciprocal's range, and int8 scales
   * that round to 0. K = 150: 3 blocks of 64 (the last one 22 wide). F32 and BF16 (F16 lacks the range).
   */
  it('special blocks: inf / NaN, tiny and huge absmax, subnormal weights; every format', async () => {
    const cols = 150;
    const rows = 6;
    const w = ref.randn(rows * cols, 77);
    const set = (r: number, k0: number, k1: number, scale: number) => {
      for (let k = k0; k < k1; k++) w[r * cols + k] *= scale;
    };
    w[0 * cols + 5] = Infinity; // row 0, block 0: inf
    w[1 * cols + 70] = NaN; // row 1, block 1: NaN; block 2: -inf
    w[1 * cols + 140] = -Infinity;
    set(2, 0, 64, 1e-35); // tiny absmax: divided; with subnormal weights
    w[2 * cols + 2] = 1e-39;
    w[2 * cols + 3] = -1e-40;
    set(2, 64, 128, 1e-39); // a block of subnormals (subnormal absmax)
    set(2, 128, 150, 1e-44); // int8: s = absmax / 127 rounds to 0
    set(3, 0, 64, 1e31); // huge absmax (≥ 2^100): divided (int8's s = absmax / 127 is not)
    set(3, 64, 128, 1e-27); // reciprocal 1e27 with subnormal weights in the block
    w[3 * cols + 64] = 3e-39;
    w[3 * cols + 65] = -2e-39;
    w[3 * cols + 66] = 1e-45;
    w[3 * cols + 128] = 2 ** 100; // absmax = 2^100: just outside the reciprocal's range
    set(4, 0, 64, 2 ** -100 / 8); // absmax = 2^-100: just inside
    w[4 * cols + 9] = -(2 ** -100);
    set(4, 64, 128, 1e29);
    w[4 * cols + 100] = Math.fround(2 ** 100 * (1 - 2 ** -24)); // the largest absmax inside
    const finiteRows = 2; // nf4-dq: the mean of all absmax is NaN with inf / NaN blocks; rows 2.. only
    for (const dtype of ['F32', 'BF16'] as const) {
      const { bytes, values } = asDtype(w, dtype);
      const rowBytes = bytes.length / rows;
      const jobs = BUILT.map((format) => {
        const r0 = format === 'nf4-dq' ? finiteRows : 0;
        return { format, cols, parts: [{ dtype, bytes: Array.from(bytes.subarray(r0 * rowBytes)), rows: rows - r0 }], chunkRows: 4 };
      });
      const got = await call('quantizeAll', { jobs });
      BUILT.forEach((format, i) => {
        const r0 = format === 'nf4-dq' ? finiteRows : 0;
        const want = q.quantize(format, values.subarray(r0 * cols), rows - r0, cols);
        expectSameQuant(got[i], want, format, rows - r0, cols, `special ${format} ${dtype}`);
      });
    }
  });

  it('every 2-D stories260K weight, every format', async () => {
    const src = new FsSource(join(modelsDir(), 'stories260K'));
    const { tensors } = await readSafetensorsHeader(src, 'model.safetensors');
    const mats = [...tensors.values()].filter((t) => t.shape.length === 2);
    expect(mats.length).toBe(36);
    const data = [];
    for (const t of mats) {
      expect(t.dtype).toBe('F32');
      const bytes = await src.range(t.file, t.start, t.end);
      data.push({ t, bytes: Array.from(bytes), values: toF32(bytes, 'F32').slice() });
    }
    for (const format of BUILT) {
      const got = await call('quantizeAll', {
        jobs: data.map((d) => ({ format, cols: d.t.shape[1], parts: [{ dtype: 'F32' as const, bytes: d.bytes, rows: d.t.shape[0] }], chunkRows: 16 })),
      });
      data.forEach((d, i) => {
        const [rows, cols] = d.t.shape;
        expectSameQuant(got[i], q.quantize(format, d.values, rows, cols), format, rows, cols, `${d.t.name} ${format}`);
      });
    }
  });
});

describe('fused dequant kernels vs CPU dequantize + f32 matmul', () => {
  // K % 4 = 0 (matmul rows are read as vec4) but not a multiple of the chunk (4 to 32 weights);
  // each case runs one of the three lane reductions
  const cases: Array<[number, number, number, 'decode' | 'verify' | 'prefill', 'row' | 'row-plain' | 'subgroup' | 'workgroup']> = [
    [1, 67, 44, 'decode', 'row'],
    [1, 33, 172, 'decode', 'subgroup'],
    [1, 130, 260, 'decode', 'workgroup'],
    [3, 130, 260, 'verify', 'subgroup'],
    [5, 61, 1100, 'verify', 'row-plain'],
    [9, 150, 100, 'prefill', 'workgroup'],
    [70, 131, 204, 'prefill', 'row'],
  ];
  // the int8 variants share int8's kernels (only the group size differs): two cases each
  const variants = new Set(['int8-g32', 'int8-g128', 'int8-row']);
  for (const format of FORMATS) {
    const mine = variants.has(format) ? cases.filter(([M, , K]) => K === 172 || M === 9) : cases;
    const what = mine.map(([M, N, K, mode, variant]) => `${mode}/${variant} ${M}×${N}×${K}`).join(', ');
    it(`${format}: ${what}, +bias +residual; embedding lookup`, async () => {
      for (const [M, N, K, mode, variant] of mine) {
        const x = ref.randn(M * K, M * 1000 + K);
        const W = ref.randn(N * K, N + K, 0.1);
        const bias = ref.randn(N, 99);
        const y0 = ref.randn(M * N, 98);
        const dq = q.quantize(format, W, N, K).dequant;
        const got = await call('linear', { format, x: Array.from(x), W: Array.from(W), M, N, K, mode, variant, bias: Array.from(bias), y0: Array.from(y0) });
        const want = ref.matmul(x, dq, M, N, K, bias, y0);
        let worst = 0;
        for (let m = 0; m < M; m++)
          for (let n = 0; n < N; n++) {
            let s = Math.abs(bias[n]) + Math.abs(y0[m * N + n]);
            for (let k = 0; k < K; k++) s += Math.abs(x[m * K + k] * dq[n * K + k]);
            worst = Math.max(worst, Math.abs(got[m * N + n] - want[m * N + n]) / s);
          }
        expect(worst, `${format} ${mode} ${variant} M=${M} N=${N} K=${K}`).toBeLessThan(1e-5);
      }
      // embedding: V × H with H odd in blocks and words; an id ≥ V reads zeros
      const [V, H] = [37, 300];
      const table = ref.randn(V * H, 11);
      const ids = [0, 36, 5, 5, 17, 40];
      const dq = q.quantize(format, table, V, H).dequant;
      const got = await call('embed', { format, table: Array.from(table), V, H, ids });
      const want = new Float32Array(ids.length * H);
      ids.forEach((id, t) => id < V && want.set(dq.subarray(id * H, id * H + H), t * H));
      // exact, but for nf4-dq's map and int8's q/127 · (127 s) decode (a few ulp)
      expect(ref.maxAbsDiff(got, want)).toBeLessThanOrEqual(format === 'nf4-dq' || format.startsWith('int8') ? 1e-6 : 0);
    });
  }

  /** A fused case (norm, bias, residual) of `format` with its CPU reference output. */
  const fusedCase = (format: string, M: number, N: number, K: number, seed: number) => {
    const x = ref.randn(M * K, seed);
    const W = ref.randn(N * K, seed + 1, 0.1);
    const g = ref.randn(K, seed + 2);
    const bias = ref.randn(N, seed + 3);
    const y0 = ref.randn(M * N, seed + 4);
    const dq = q.quantize(format, W, N, K).dequant;
    const want = ref.matmul(ref.rmsnorm(x, g, M, K, 1e-5), dq, M, N, K, bias, y0);
    const args = { format, x: Array.from(x), W: Array.from(W), M, N, K, variant: 'row' as const, norm: { g: Array.from(g), eps: 1e-5 }, bias: Array.from(bias), y0: Array.from(y0) };
    return { args, want };
  };

  // CPU adapters' big prefill weights: the 16 × 16 tile compiled after the load (Runtime.upgrade)
  // and swapped into the op; M = 37: two whole 16-row tiles and a partial one, K not a chunk multiple
  // (int8 shares nf4's scaled skeleton lines; its wide verify tile is checked below)
  for (const format of ['f32', 'nf4'] as const) {
    it(`${format}: the large prefill tile swapped in by Runtime.upgrade matches the reference (+norm +bias +residual)`, async () => {
      const { args, want } = fusedCase(format, 37, 70, 204, 31);
      const got = await call('linearShaders', { ...args, mode: 'prefill', largePrefill: true, upgrade: true });
      expect(got.pending).toBe(1);
      expect(got.before.shaders[0]).toMatch(/_mr8_r8:/);
      expect(got.after!.shaders[0]).toMatch(/_mr16_r16:/);
      expect(ref.maxAbsDiff(got.before.y, want)).toBeLessThan(1e-4);
      expect(ref.maxAbsDiff(got.after!.y, want)).toBeLessThan(1e-4);
    });
  }

  // CPU adapters' prefill of nf4 weights: decoded to an f32 copy (dequant.wgsl), then the f32 matmul
  // (also with the large tile swapped in, and per row part of a split weight); formats outside
  // PREFILL_DEQUANT, and weights larger than the scratch, keep the direct kernel
  it('nf4, nf4-dq: prefill through the f32 dequant copy matches the reference (+norm +bias +residual, split, upgraded)', async () => {
    const [M, N, K] = [37, 70, 204];
    for (const format of ['nf4', 'nf4-dq'] as const) {
      const { args, want } = fusedCase(format, M, N, K, 51);
      const got = await call('linearShaders', { ...args, mode: 'prefill', dequantBytes: N * K * 4, largePrefill: true, upgrade: true });
      expect(got.before.shaders, format).toEqual([expect.stringMatching(/^dequant_nf4(dq)?:/), expect.stringMatching(/^matmul_f32_\w+_mr8_r8:/)]);
      expect(got.after!.shaders[1]).toMatch(/^matmul_f32_\w+_mr16_r16:/);
      expect(ref.maxAbsDiff(got.before.y, want), format).toBeLessThan(1e-4);
      expect(ref.maxAbsDiff(got.after!.y, want), format).toBeLessThan(1e-4);
      const split = await call('linearShaders', { ...args, mode: 'prefill', dequantBytes: 40 * K * 4, rowStarts: [0, 40] });
      expect(split.before.shaders.map((s) => s.split(':')[0]!.replace(/_mr\d+_r\d+$/, ''))).toEqual(['dequant_' + format.replace('-', ''), 'matmul_f32_xb', 'dequant_' + format.replace('-', ''), 'matmul_f32_xb']);
      // (nf4-dq quantizes each part's absmax on its own: the direct kernel on the same parts is the reference)
      const splitDirect = await call('linearShaders', { ...args, mode: 'prefill', rowStarts: [0, 40] });
      expect(ref.maxAbsDiff(split.before.y, splitDirect.before.y), `${format} split`).toBeLessThan(1e-4);
      if (format === 'nf4') expect(ref.maxAbsDiff(split.before.y, want), `${format} split`).toBeLessThan(1e-4);
    }
    const small = fusedCase('nf4', M, N, K, 52);
    const direct = await call('linearShaders', { ...small.args, mode: 'prefill', dequantBytes: N * K * 4 - 4 });
    expect(direct.before.shaders).toEqual([expect.stringMatching(/^matmul_nf4_/)]);
    expect(ref.maxAbsDiff(direct.before.y, small.want)).toBeLessThan(1e-4);
    const i8 = fusedCase('int8', M, N, K, 53);
    const kept = await call('linearShaders', { ...i8.args, mode: 'prefill', dequantBytes: N * K * 4 });
    expect(kept.before.shaders).toEqual([expect.stringMatching(/^matmul_int8_/)]);
    expect(ref.maxAbsDiff(kept.before.y, i8.want)).toBeLessThan(1e-4);
  });

  // the big weights' verify tile (16 weight rows per invocation, nf4 8) on a small weight
  it('f32, int8, nf4: the wide verify tile of big weights matches the reference (5 rows, +norm +bias +residual)', async () => {
    for (const format of ['f32', 'int8', 'nf4'] as const) {
      const { args, want } = fusedCase(format, 5, 70, 204, 41);
      const got = await call('linearShaders', { ...args, mode: 'verify', wideVerify: true });
      expect(got.pending).toBe(0);
      expect(got.before.shaders[0]).toMatch(format === 'nf4' ? /_mr5_r8:/ : /_mr5_r16:/);
      expect(ref.maxAbsDiff(got.before.y, want), format).toBeLessThan(1e-4);
    }
  });

  it('nf4 in head mode uses the last headRows rows', async () => {
    const [M, N, K] = [5, 33, 80];
    const x = ref.randn(M * K, 5);
    const W = ref.randn(N * K, 6);
    const got = await call('linear', { format: 'nf4', x: Array.from(x), W: Array.from(W), M, N, K, mode: 'verify', headRows: 2 });
    expect(ref.maxAbsDiff(got, ref.matmul(x, q.quantize('nf4', W, N, K).dequant, M, N, K).slice(3 * N))).toBeLessThan(1e-4);
  });
});
