import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHarness, type Caller } from './page.ts';
import { modelVariant, narrowF32, rewriteTensors } from '../helpers/model-variants.ts';

/**
 * A checkpoint whose weights hold NaN or ±Inf fails to load with `bad-tensor` naming the tensor
 * (and the row), in every weight format and checkpoint dtype: the GPU quantizers count non-finite
 * inputs as they read them (quant_common.wgsl), the loader checks what it converts on the CPU
 * (f32 weights, norms, biases). Nothing is left allocated, and a clean copy still loads.
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const url = (name: string) => `/cache/test-models/${name}`;

/** Copies stories260K as `name`, in `dtype`, with `value` at element [row, col] of `tensor`. */
function poisoned(name: string, dtype: 'F32' | 'BF16' | 'F16', tensor: string | null, row: number, col: number, value: number) {
  modelVariant(name, (d) =>
    rewriteTensors(d, (n, _dt, data, shape) => {
      const f = new Float32Array(data.buffer, data.byteOffset, data.length / 4).slice();
      if (n === tensor) f[row * (shape[1] ?? 1) + col] = value;
      const bytes = Buffer.from(f.buffer);
      return { dtype, data: dtype === 'F32' ? bytes : narrowF32(bytes, dtype) };
    }),
  );
  return url(name);
}

const K_PROJ = 'model.layers.0.self_attn.k_proj.weight';
const DOWN = 'model.layers.1.mlp.down_proj.weight';

describe('non-finite weights → bad-tensor naming the tensor', () => {
  it('a NaN in k_proj (fused into qkv), F32 checkpoint, every format', async () => {
    const model = poisoned('nan-kproj', 'F32', K_PROJ, 3, 5, NaN);
    for (const quant of ['f32', 'f16', 'int8', 'nf4', 'nf4-dq'] as const) {
      const r = await call('failedLoad', { model, load: { quant } });
      expect(r.error?.code, quant).toBe('bad-tensor');
      expect(r.error?.message, quant).toContain(`"${K_PROJ}"`);
      expect(r.error?.message, quant).toMatch(/NaN or ±Inf/);
      expect(r.error?.message, quant).toMatch(/row 3\b/);
      expect(r.live, quant).toEqual([]);
    }
  });

  it('+Inf in down_proj of a BF16 checkpoint and -Inf in an F16 one', async () => {
    const bf16 = poisoned('inf-down-bf16', 'BF16', DOWN, 7, 60, Infinity);
    const f16 = poisoned('inf-down-f16', 'F16', DOWN, 0, 1, -Infinity);
    for (const model of [bf16, f16]) {
      for (const quant of ['f32', 'f16', 'int8', 'nf4'] as const) {
        const r = await call('failedLoad', { model, load: { quant } });
        expect(r.error?.code, `${model} ${quant}`).toBe('bad-tensor');
        expect(r.error?.message, `${model} ${quant}`).toContain(`"${DOWN}"`);
        expect(r.error?.message).toMatch(model === bf16 ? /row 7\b/ : /row 0\b/);
      }
    }
  });

  it('a NaN in a norm vector (kept f32) and in the tied embedding', async () => {
    const norm = 'model.layers.0.post_attention_layernorm.weight';
    const m1 = poisoned('nan-norm', 'F32', norm, 0, 9, NaN);
    const r1 = await call('failedLoad', { model: m1, load: { quant: 'nf4' } });
    expect(r1.error?.code).toBe('bad-tensor');
    expect(r1.error?.message).toContain(`"${norm}"`);
    expect(r1.error?.message).toMatch(/element 9/);
    const m2 = poisoned('nan-embed', 'BF16', 'model.embed_tokens.weight', 100, 0, NaN);
    const r2 = await call('failedLoad', { model: m2, load: { quant: 'int8' } });
    expect(r2.error?.code).toBe('bad-tensor');
    expect(r2.error?.message).toContain('"model.embed_tokens.weight"');
    expect(r2.error?.message).toMatch(/row 100\b/);
  });

  it('clean BF16 and F16 copies load and generate (no false alarms; large finite values are fine)', async () => {
    for (const [name, dtype] of [['clean-bf16', 'BF16'], ['clean-f16', 'F16']] as const) {
      const model = poisoned(name, dtype, DOWN, 2, 2, 60000); // finite in both dtypes
      for (const quant of ['f32', 'f16', 'nf4'] as const) {
        const r = await call('failedLoad', { model, load: { quant } });
        expect(r.error, `${name} ${quant}`).toBeNull();
        expect(r.tokens).toHaveLength(2);
        expect(r.live).toEqual([]);
      }
    }
  });
});
