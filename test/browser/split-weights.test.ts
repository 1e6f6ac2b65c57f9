import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { openHarness, type Caller } from './page.ts';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { buildSafetensors } from '../helpers/safetensors-build.ts';
import { narrowF32 } from '../helpers/model-variants.ts';
import * as ref from '../ref/cpu.ts';
import { loadRefModel } from '../ref/weights.ts';

/**
 * A model whose tied embedding / LM head (32000 × 1088 f32 = 139 MB) exceeds WebGPU's default
 * 128 MiB storage-binding limit, loaded on a device with the default limits: the weight is stored
 * in row parts (SplitWeight; one matmul per part writes its logits columns, one embedding dispatch
 * per part), and the logits match the CPU reference for ids in every part.
 */
const NAME = 'big-vocab-32k';
const dir = resolve(repoRoot(), '.cache', 'test-models', NAME);
const V = 32000;
const H = 1088;
const I = 256;
const HEADS = 17;
const D = 64;

/** Writes the model once (deterministic weights, bf16; the Llama 2 tokenizer of ../shared). */
function makeModel(): void {
  const cfg = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: H,
    intermediate_size: I,
    num_hidden_layers: 1,
    num_attention_heads: HEADS,
    num_key_value_heads: HEADS,
    head_dim: D,
    vocab_size: V,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    hidden_act: 'silu',
    tie_word_embeddings: true,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'bfloat16',
  };
  const marker = join(dir, 'config.json');
  if (existsSync(marker) && readFileSync(marker, 'utf8') === JSON.stringify(cfg, null, 2)) return;
  mkdirSync(dir, { recursive: true });
  const tok = join(modelsDir(), 'llama2-tokenizer');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tok, f), join(dir, f));
  let seed = 1;
  const t = (name: string, shape: number[], std: number, mean = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const f = ref.randn(n, seed++, std);
    if (mean) for (let i = 0; i < n; i++) f[i] += mean;
    const data = narrowF32(Buffer.from(f.buffer, f.byteOffset, f.byteLength), 'BF16');
    return { name, dtype: 'BF16', shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  };
  const p = 'model.layers.0';
  const file = buildSafetensors([
    t('model.embed_tokens.weight', [V, H], 1),
    t(`${p}.input_layernorm.weight`, [H], 0.1, 1),
    t(`${p}.self_attn.q_proj.weight`, [HEADS * D, H], 0.03),
    t(`${p}.self_attn.k_proj.weight`, [HEADS * D, H], 0.03),
    t(`${p}.self_attn.v_proj.weight`, [HEADS * D, H], 0.03),
    t(`${p}.self_attn.o_proj.weight`, [H, HEADS * D], 0.03),
    t(`${p}.post_attention_layernorm.weight`, [H], 0.1, 1),
    t(`${p}.mlp.gate_proj.weight`, [I, H], 0.03),
    t(`${p}.mlp.up_proj.weight`, [I, H], 0.03),
    t(`${p}.mlp.down_proj.weight`, [H, I], 0.06),
    t('model.norm.weight', [H], 0.1, 1),
  ]);
  writeFileSync(join(dir, 'model.safetensors'), file);
  writeFileSync(marker, JSON.stringify(cfg, null, 2)); // last: marks the folder complete
}

let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  makeModel();
  ({ call, close } = await openHarness());
}, 120_000);
afterAll(async () => close?.());

describe('weights over the binding limit are split into row parts', () => {
  it('f32: the 139 MB tied embedding / LM head loads on a 128 MiB-binding device and matches the CPU reference', async () => {
    // ids on both sides of the part boundary (30784 rows fit in 128 MiB at 1088 f32 per row) and the ends
    const ids = [1, 30783, 30784, 31999, 0, 15000, 31000];
    const r = await call('splitLogits', { model: `/cache/test-models/${NAME}`, ids, load: { quant: 'f32' } });
    expect(r.error).toBeNull();
    expect(r.limits.maxStorageBufferBindingSize).toBeLessThan(V * H * 4);
    const { w, dims } = await loadRefModel(dir);
    const want = ref.llamaForward(ids, w, dims);
    expect(r.logits.length).toBe(ids.length);
    r.logits.forEach((row, t) => {
      expect(ref.maxAbsDiff(row, want.subarray(t * V, (t + 1) * V)), `row ${t}`).toBeLessThan(2e-3);
    });
    // greedy decoding runs on the split weight too (the chosen ids feed the split embedding back)
    let ctx = ids.slice();
    const expected: number[] = [];
    for (let i = 0; i < 4; i++) {
      const l = ref.llamaForward(ctx, w, dims).subarray((ctx.length - 1) * V, ctx.length * V);
      const next = ref.argmax(l);
      expected.push(next);
      ctx = [...ctx, next];
    }
    expect(r.generated).toEqual(expected);
  }, 300_000);
});
