import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHarness, type Caller } from './page.ts';
import * as ref from '../ref/cpu.ts';
import type { LinearMode } from '../../src/kernels/linear.ts';

/**
 * Every f32 kernel against the CPU reference on seeded random inputs, with odd sizes (not
 * multiples of the workgroup sizes). Tolerances: f32 sums in a different order → ~1e-5 relative.
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const arr = (a: Float32Array) => Array.from(a);

describe('f32 kernels vs CPU reference', () => {
  it('reports the adapter', async () => {
    const info = await call('info', undefined as never);
    expect(info.adapter.summary.length).toBeGreaterThan(0);
    expect(info.maxBuffer).toBeGreaterThan(0);
  });

  // K % 4 = 0 always (matmul rows are read as vec4); N and M odd, K not a multiple of the chunk
  const shapes: Array<[number, number, number]> = [
    [1, 67, 44],
    [1, 131, 172],
    [1, 1001, 64],
    [3, 130, 256],
    [5, 77, 100],
    [8, 64, 64],
    [9, 150, 100],
    [70, 131, 204],
  ];
  const modeOf = (M: number) => (M === 1 ? 'decode' : M <= 8 ? 'verify' : 'prefill');
  for (const [M, N, K] of shapes) {
    const modes = M === 1 ? (['decode', 'verify', 'prefill'] as const) : M <= 8 ? (['verify', 'prefill'] as const) : (['prefill'] as const);
    for (const mode of modes) {
      for (const variant of ['row', 'row-plain', 'subgroup', 'workgroup'] as const) {
        it(`linear f32 ${mode} ${variant} M=${M} N=${N} K=${K} (+bias, +residual)`, async () => {
          const x = ref.randn(M * K, M * 1000 + K);
          const W = ref.randn(N * K, N + K, 0.1);
          const bias = ref.randn(N, 99);
          const y0 = ref.randn(M * N, 98);
          const plain = await call('linear', { format: 'f32', x: arr(x), W: arr(W), M, N, K, mode, variant });
          expect(ref.maxAbsDiff(plain, ref.matmul(x, W, M, N, K))).toBeLessThan(1e-4);
          const fused = await call('linear', { format: 'f32', x: arr(x), W: arr(W), M, N, K, mode, variant, bias: arr(bias), y0: arr(y0) });
          expect(ref.maxAbsDiff(fused, ref.matmul(x, W, M, N, K, bias, y0))).toBeLessThan(1e-4);
        });
      }
    }
  }

  for (const [M, N, K] of [
    [1, 45, 64],
    [1, 67, 172],
    [4, 33, 100],
    [11, 50, 44],
  ] as const) {
    for (const variant of ['row', 'row-plain', 'subgroup', 'workgroup'] as const) {
      it(`linear with the RMSNorm fused (${modeOf(M)} ${variant} M=${M} N=${N} K=${K})`, async () => {
        const x = ref.randn(M * K, 3 + K, 2);
        const W = ref.randn(N * K, 6 + N, 0.1);
        const g = ref.randn(K, 7);
        const got = await call('linear', { format: 'f32', x: arr(x), W: arr(W), M, N, K, mode: modeOf(M), variant, norm: { g: arr(g), eps: 1e-5 } });
        expect(ref.maxAbsDiff(got, ref.matmul(ref.rmsnorm(x, g, M, K, 1e-5), W, M, N, K))).toBeLessThan(1e-4);
      });
    }
  }

  for (const [M, headRows] of [
    [3, 1],
    [6, 2],
    [20, 11],
  ] as const) {
    it(`linear in head mode reads the last ${headRows} of ${M} rows (with the final norm)`, async () => {
      const [N, K] = [33, 20];
      const x = ref.randn(M * K, 5);
      const W = ref.randn(N * K, 6);
      const g = ref.randn(K, 8);
      const got = await call('linear', { format: 'f32', x: arr(x), W: arr(W), M, N, K, mode: modeOf(headRows), headRows, norm: { g: arr(g), eps: 1e-6 } });
      const want = ref.matmul(ref.rmsnorm(x, g, M, K, 1e-6), W, M, N, K).slice((M - headRows) * N);
      expect(ref.maxAbsDiff(got, want)).toBeLessThan(1e-4);
    });
  }

  // a weight too large for one binding is stored in row parts (SplitWeight): one matmul per part
  // writing its columns of y, one embedding dispatch per part writing the ids in its rows
  for (const format of ['f32', 'int8', 'nf4'] as const) {
    for (const [M, headRows] of [
      [1, 1],
      [5, 3],
      [19, 12],
    ] as const) {
      it(`split LM head (${format}, 3 row parts, ${modeOf(headRows)}, last ${headRows} of ${M} rows) = the whole weight`, async () => {
        const [N, K] = [301, 72];
        const x = ref.randn(M * K, 21 + M);
        const W = ref.randn(N * K, 22, 0.2);
        const g = ref.randn(K, 23);
        const a = { format, x: arr(x), W: arr(W), M, N, K, mode: modeOf(headRows) as LinearMode, headRows, norm: { g: arr(g), eps: 1e-5 } };
        const whole = await call('linear', a);
        const split = await call('linear', { ...a, rowStarts: [0, 128, 256] });
        expect(split).toEqual(whole);
        if (format === 'f32') {
          const want = ref.matmul(ref.rmsnorm(x, g, M, K, 1e-5), W, M, N, K).slice((M - headRows) * N);
          expect(ref.maxAbsDiff(split, want)).toBeLessThan(1e-4);
        }
      });
    }
    it(`split embedding (${format}, 3 row parts): every id from its part, ids ≥ V give zeros`, async () => {
      const [V, H] = [200, 68];
      const table = ref.randn(V * H, 31);
      const ids = [0, 63, 64, 127, 128, 199, 5, 150, 200, 4000];
      const whole = await call('embed', { format, table: arr(table), V, H, ids });
      const split = await call('embed', { format, table: arr(table), V, H, ids, rowStarts: [0, 64, 128] });
      expect(split).toEqual(whole);
      expect(split.slice(8 * H)).toEqual(new Array(2 * H).fill(0));
      if (format === 'f32') {
        const want = new Float32Array(ids.length * H);
        ids.forEach((id, t) => id < V && want.set(table.subarray(id * H, id * H + H), t * H));
        expect(ref.maxAbsDiff(split, want)).toBe(0);
      }
    });
  }

  it('embedding lookup (f32 table, odd hidden size)', async () => {
    const V = 37;
    const H = 300;
    const table = ref.randn(V * H, 11);
    const ids = [0, 36, 5, 5, 17];
    const got = await call('embed', { format: 'f32', table: arr(table), V, H, ids });
    const want = new Float32Array(ids.length * H);
    ids.forEach((id, t) => want.set(table.subarray(id * H, id * H + H), t * H));
    expect(ref.maxAbsDiff(got, want)).toBe(0);
  });

  for (const c of [
    { T: 5, pos0: 0, NH: 8, NKV: 4, D: 8, ctx: 16 }, // prompt pass, GQA 2:1
    { T: 1, pos0: 70, NH: 6, NKV: 2, D: 64, ctx: 100 }, // decode step past one key tile, GQA 3:1
    { T: 3, pos0: 130, NH: 4, NKV: 4, D: 36, ctx: 140 }, // MHA, odd head dim, several tiles
    { T: 5, pos0: 0, NH: 8, NKV: 4, D: 8, ctx: 16, kv16: true }, // the f16 cache
    { T: 3, pos0: 130, NH: 4, NKV: 4, D: 36, ctx: 140, kv16: true },
  ] as Array<{ T: number; pos0: number; NH: number; NKV: number; D: number; ctx: number; kv16?: boolean }>) {
    it(`rope + kv write + causal GQA attention T=${c.T} pos0=${c.pos0} NH=${c.NH} NKV=${c.NKV} D=${c.D}${c.kv16 ? ' (f16 cache)' : ''}`, async () => {
      const { T, pos0, NH, NKV, D, ctx, kv16 } = c;
      const invFreq = ref.invFreqDefault(D, 10000);
      const qkv = ref.randn(T * (NH + 2 * NKV) * D, 21 + T);
      const P = pos0 + T;
      // previous keys/values in the cache, [NKV, pos0, D]
      const kPrev = ref.randn(NKV * pos0 * D, 31);
      const vPrev = ref.randn(NKV * pos0 * D, 32);
      const got = await call('attention', { qkv: arr(qkv), kPrev: arr(kPrev), vPrev: arr(vPrev), T, pos0, NH, NKV, D, ctx, invFreq: arr(invFreq), kv16 });
      // reference: rotate the new q/k, assemble k/v as [P, NKV, D], attend
      const W = (NH + 2 * NKV) * D;
      const q = new Float32Array(T * NH * D);
      const k = new Float32Array(P * NKV * D);
      const v = new Float32Array(P * NKV * D);
      for (let j = 0; j < pos0; j++)
        for (let g = 0; g < NKV; g++) {
          k.set(kPrev.subarray((g * pos0 + j) * D, (g * pos0 + j + 1) * D), (j * NKV + g) * D);
          v.set(vPrev.subarray((g * pos0 + j) * D, (g * pos0 + j + 1) * D), (j * NKV + g) * D);
        }
      for (let t = 0; t < T; t++) {
        const p = pos0 + t;
        for (let h = 0; h < NH; h++) q.set(ref.rope(qkv.subarray(t * W + h * D, t * W + h * D + D), p, invFreq), (t * NH + h) * D);
        for (let g = 0; g < NKV; g++) {
          k.set(ref.rope(qkv.subarray(t * W + (NH + g) * D, t * W + (NH + g + 1) * D), p, invFreq), (p * NKV + g) * D);
          v.set(qkv.subarray(t * W + (NH + NKV + g) * D, t * W + (NH + NKV + g + 1) * D), (p * NKV + g) * D);
        }
      }
      expect(ref.maxAbsDiff(got.q, q)).toBeLessThan(1e-5);
      // the cache holds the new rotated keys and raw values at positions pos0.. (an f16 cache: within
      // one f16 rounding, 2^-11 relative); the previous ones are kept
      const f16ulp = (x: number) => Math.max(Math.abs(x) * 2 ** -11, 2 ** -24);
      for (let p = 0; p < P; p++)
        for (let g = 0; g < NKV; g++)
          for (let d = 0; d < D; d++) {
            const [gk, wk] = [got.k[(g * ctx + p) * D + d], k[(p * NKV + g) * D + d]];
            const [gv, wv] = [got.v[(g * ctx + p) * D + d], v[(p * NKV + g) * D + d]];
            if (kv16) {
              expect(Math.abs(gk - wk)).toBeLessThanOrEqual(f16ulp(wk) + 1e-5);
              expect(Math.abs(gv - wv)).toBeLessThanOrEqual(f16ulp(wv));
            } else {
              expect(Math.abs(gk - wk)).toBeLessThan(1e-5);
              expect(gv).toBe(wv);
            }
          }
      // attention over what the cache holds
      const held = (c: number[]) => {
        const x = new Float32Array(P * NKV * D);
        for (let p = 0; p < P; p++) for (let g = 0; g < NKV; g++) x.set(c.slice((g * ctx + p) * D, (g * ctx + p + 1) * D), (p * NKV + g) * D);
        return x;
      };
      const [kh, vh] = kv16 ? [held(got.k), held(got.v)] : [k, v];
      expect(ref.maxAbsDiff(got.out, ref.attention(q, kh, vh, T, pos0, NH, NKV, D))).toBeLessThan(1e-5);
    });
  }

  it('swiglu T=3 I=300', async () => {
    const T = 3;
    const I = 300;
    const gu = ref.randn(T * 2 * I, 41, 3);
    const got = await call('swiglu', { gu: arr(gu), T, I });
    expect(ref.maxAbsDiff(got, ref.swiglu(gu, T, I))).toBeLessThan(1e-5);
  });

  it('argmax over the last row, ties to the lowest index', async () => {
    const V = 1000;
    const rows = 3;
    const logits = ref.randn(V * rows, 51);
    const last = logits.subarray((rows - 1) * V);
    expect(await call('argmax', { logits: arr(logits), V, rows })).toBe(ref.argmax(last));
    last[123] = 50;
    last[777] = 50;
    expect(await call('argmax', { logits: arr(logits), V, rows })).toBe(123);
    expect(await call('argmax', { logits: arr(new Float32Array(V).fill(-1)), V, rows: 1 })).toBe(0);
  });
});
