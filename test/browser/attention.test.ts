import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHarness, type Caller } from './page.ts';
import { attnInputs, type AttnCase } from './harness-attn.ts';
import type { AttnTuning } from '../../src/kernels/ops.ts';
import * as ref from '../ref/cpu.ts';
import { f16BitsToF32, f32ToF16Bits } from '../ref/quant.ts';

/**
 * attention.wgsl (decode: attentionOp, prefill: attentionPrefillOp) against the CPU reference on
 * odd shapes: GQA ratios 1–7, head_dim 4–256, caches up to 2,048 positions, prompt continuation
 * over an existing cache (pos0 > 0), and every way of splitting the work (split-D; split-K with the
 * subgroup or the workgroup-memory merge, in one or several chunks; lane counts; head chunks with
 * padding; query tiles). Cache positions past the causal range hold NaN.
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

/** The CPU reference for a case (k, v re-laid out as [P, NKV, D]). */
function expected(c: AttnCase): Float32Array {
  const { q, k: kc, v: vc } = attnInputs(c);
  if (c.kv16) {
    // what an f16 cache holds
    for (const a of [kc, vc]) for (let i = 0; i < a.length; i++) a[i] = f16BitsToF32(f32ToF16Bits(a[i]!));
  }
  const P = c.pos0 + c.T;
  const k = new Float32Array(P * c.NKV * c.D);
  const v = new Float32Array(P * c.NKV * c.D);
  for (let g = 0; g < c.NKV; g++)
    for (let j = 0; j < P; j++) {
      const src = (g * c.ctx + j) * c.D;
      k.set(kc.subarray(src, src + c.D), (j * c.NKV + g) * c.D);
      v.set(vc.subarray(src, src + c.D), (j * c.NKV + g) * c.D);
    }
  return ref.attention(q, k, v, c.T, c.pos0, c.NH, c.NKV, c.D);
}

async function check(c: AttnCase) {
  const got = await call('attnRun', c);
  const want = expected(c);
  expect(got.length).toBe(want.length);
  let scale = 1;
  for (const x of want) scale = Math.max(scale, Math.abs(x));
  const err = ref.maxAbsDiff(got, want) / scale;
  expect(err, `max |Δ| / max |want| for ${JSON.stringify(c)}`).toBeLessThan(1e-5);
}

const name = (c: Partial<AttnCase>) =>
  `NH=${c.NH} NKV=${c.NKV} D=${c.D}` + (c.T ? ` T=${c.T} pos0=${c.pos0}` : "") + (c.prefill ? ' prefill' : '') + (c.tune ? ` ${JSON.stringify(c.tune)}` : '');

describe('attention vs CPU reference', () => {
  // ctx is fixed per shape so one pipeline serves every position
  const shapes = [
    { NH: 4, NKV: 4, D: 4 }, // MHA, one vec4 per head
    { NH: 6, NKV: 3, D: 8 }, // GQA 2
    { NH: 9, NKV: 3, D: 64 }, // GQA 3 (SmolLM2-135M)
    { NH: 8, NKV: 2, D: 128 }, // GQA 4, head_dim 128 (head chunks)
    { NH: 3, NKV: 1, D: 256 }, // GQA 3, the largest head_dim
    { NH: 7, NKV: 1, D: 64 }, // GQA 7: the last head chunk is padded
  ];
  for (const s of shapes) {
    it(`decode T=1 ${name(s)} at pos0 0, 1, 63, 64, 65, 1000, 2047`, async () => {
      for (const pos0 of [0, 1, 63, 64, 65, 1000, 2047]) await check({ ...s, ctx: 2048, T: 1, pos0, seed: 10 + pos0, qStd: 2 });
    });
  }

  const prompts = [
    { NH: 9, NKV: 3, D: 64, T: 64, pos0: 65 },
    { NH: 6, NKV: 3, D: 8, T: 33, pos0: 0 },
    { NH: 4, NKV: 4, D: 4, T: 7, pos0: 1000 },
    { NH: 8, NKV: 2, D: 128, T: 19, pos0: 63 },
    { NH: 3, NKV: 1, D: 256, T: 5, pos0: 2043 }, // ends at the last cache position
    { NH: 7, NKV: 1, D: 64, T: 10, pos0: 1 },
    { NH: 32, NKV: 8, D: 64, T: 37, pos0: 700 }, // Llama-3.2-1B heads
  ];
  for (const p of prompts) {
    it(`prompt continuation ${name(p)} (prefill and decode kernels)`, async () => {
      await check({ ...p, ctx: 2048, seed: 7, qStd: 2, prefill: true });
      await check({ ...p, ctx: 2048, seed: 7, qStd: 2 });
    });
  }

  // the f16 cache (pack2x16float pairs, read with unpack2x16float): the same kernels on half the bytes
  for (const [c, tune] of [
    [{ NH: 9, NKV: 3, D: 64, T: 1, pos0: 1000 }, undefined],
    [{ NH: 8, NKV: 2, D: 128, T: 19, pos0: 63, prefill: true }, undefined],
    [{ NH: 6, NKV: 3, D: 8, T: 1, pos0: 40 }, { splitD: false }],
    [{ NH: 4, NKV: 2, D: 36, T: 6, pos0: 3, prefill: true }, { splitD: false, subgroups: false }],
  ] as Array<[Omit<AttnCase, 'ctx' | 'seed'>, AttnTuning | undefined]>) {
    it(`f16 KV cache ${name(c)}${tune ? ` ${JSON.stringify(tune)}` : ''}`, async () => {
      await check({ ...c, ctx: 2048, seed: 9, qStd: 2, kv16: true, tune });
    });
  }

  // every merge / split path, whatever the adapter picks by default (split-K is the GPU default
  // and the path of devices without subgroups)
  const base = { NH: 9, NKV: 3, D: 64, ctx: 300, seed: 5, qStd: 2 };
  const decode = (pos0: number) => ({ ...base, T: 1, pos0 });
  const prompt = { ...base, T: 13, pos0: 70, prefill: true };
  const odd = { ...base, NH: 4, NKV: 2, D: 36, T: 6, pos0: 3 }; // head_dim 36: no split-D
  const small = { ...base, NH: 6, NKV: 3, D: 8, T: 9, pos0: 40 }; // split-D over 2 lanes
  const variants: Array<[AttnTuning, AttnCase[]]> = [
    [{ splitD: false }, [decode(0), decode(130), decode(299), prompt, odd]], // subgroup merge
    [{ splitD: false, subgroups: false }, [decode(0), decode(299), prompt, odd, small]], // workgroup-memory merge
    [{ splitD: false, wg: 64, subgroups: false }, [decode(0), decode(299), prompt]], // the merge in 2 chunks of vec4s
    [{ splitD: false, wg: 32, subgroups: false, heads: 2 }, [decode(130), prompt]], // G = 3 in chunks of 2: a padded row
    [{ splitD: false, tq: 5, heads: 2, subgroups: false }, [prompt]],
    [{ heads: 1 }, [decode(299), prompt]],
    [{ heads: 2, tq: 3 }, [prompt, small]],
  ];
  for (const [tune, cases] of variants) {
    it(`merge/split variant ${JSON.stringify(tune)}`, async () => {
      for (const c of cases) await check({ ...c, tune });
    });
  }

  it('refuses head_dim that is not a multiple of 4 or above 256, and NH not a multiple of NKV', async () => {
    for (const s of [
      { NH: 4, NKV: 2, D: 6 },
      { NH: 4, NKV: 2, D: 260 },
      { NH: 5, NKV: 2, D: 64 },
    ]) {
      const e = await call('attnError', s);
      expect(e?.code).toBe('unsupported-architecture');
      expect(e?.message).toMatch(/head_dim|num_key_value_heads/);
    }
  });
});
