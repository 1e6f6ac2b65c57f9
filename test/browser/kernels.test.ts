import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHarness, type Caller } from './page.ts';
import * as ref from '../ref/cpu.ts';

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
  ]) {
    it(`rope + kv write + causal GQA attention T=${c.T} pos0=${c.pos0} NH=${c.NH} NKV=${c.NKV} D=${c.D}`, async () => {
      const { T, pos0, NH, NKV, D, ctx } = c;
      const invFreq = ref.invFreqDefault(D, 10000);
      const qkv = ref.randn(T * (NH + 2 * NKV) * D, 21 + T);
      const P = pos0 + T;
      // previous keys/values in the cache, [NKV, pos0, D]
      const kPrev = ref.randn(NKV * pos0 * D, 31);
      const vPrev = ref.randn(NKV * pos0 * D, 32);
      const got = await call('attention', { qkv: arr(qkv), kPrev: arr(kPrev), vPrev: arr(vPrev), T, pos0, NH, NKV, D, ctx, invFreq: arr(invFreq) });
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
      // the cache holds the new rotated keys and raw values at positions pos0..
      for (let t = 0; t < T; t++)
        for (let g = 0; g < NKV; g++)
          for (let d = 0; d < D; d++) {
            const p = pos0 + t;
            expect(Math.abs(got.k[(g * ctx + p) * D + d] - k[(p * NKV + g) * D + d])).toBeLessThan(1e-5);
            expect(got.v[(g * ctx + p) * D + d]).toBe(v[(p * NKV + g) * D + d]);
          }
      expect(ref.maxAbsDiff(got.out, ref.attention(q, k, v, T, pos0, NH, NKV, D))).toBeLessThan(1e-5);
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
