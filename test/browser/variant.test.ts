import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { openHarness, type Caller } from './page.ts';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { FsSource } from '../../src/node/fs-source.ts';
import { openCheckpoint } from '../../src/loader/safetensors.ts';
import { buildSafetensors, type BuildTensor } from '../helpers/safetensors-build.ts';
import { FUSED_MODEL_TYPE } from '../helpers/fused-variant.ts';

/**
 * A made-up architecture variant, declared with src/model/ APIs only (an Architecture: its
 * checkpoint's tensors and the graph's weights from them), loads through the unchanged generic
 * loader: stories260K rewritten with q/k/v and gate/up stored fused (`qkv_proj`, `gate_up_proj`)
 * under model_type "fused-llama" computes exactly the stock model's logits and tokens.
 */
const STOCK = join(modelsDir(), 'stories260K');
const NAME = 'fused-stories260K';
const dir = resolve(repoRoot(), '.cache', 'test-models', NAME);

async function makeVariant(): Promise<void> {
  const cfg = { ...JSON.parse(readFileSync(join(STOCK, 'config.json'), 'utf8')), model_type: FUSED_MODEL_TYPE };
  const marker = join(dir, 'config.json');
  if (existsSync(marker) && readFileSync(marker, 'utf8') === JSON.stringify(cfg, null, 2)) return;
  mkdirSync(dir, { recursive: true });
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(STOCK, f), join(dir, f));
  const src = new FsSource(STOCK);
  const { tensors } = await openCheckpoint(src);
  const bytes = async (name: string) => {
    const t = tensors.get(name)!;
    return { t, data: await src.range(t.file, t.start, t.end) };
  };
  const fused = async (name: string, parts: string[]): Promise<BuildTensor> => {
    const got = await Promise.all(parts.map(bytes));
    const data = new Uint8Array(got.reduce((a, g) => a + g.data.length, 0));
    let off = 0;
    for (const g of got) {
      data.set(g.data, off);
      off += g.data.length;
    }
    return { name, dtype: got[0]!.t.dtype, shape: [got.reduce((a, g) => a + g.t.shape[0]!, 0), got[0]!.t.shape[1]!], data };
  };
  const same = async (name: string): Promise<BuildTensor> => {
    const { t, data } = await bytes(name);
    return { name, dtype: t.dtype, shape: t.shape, data };
  };
  const out: BuildTensor[] = [await same('model.embed_tokens.weight')];
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      await same(`${p}.input_layernorm.weight`),
      await fused(`${p}.self_attn.qkv_proj.weight`, ['q', 'k', 'v'].map((x) => `${p}.self_attn.${x}_proj.weight`)),
      await same(`${p}.self_attn.o_proj.weight`),
      await same(`${p}.post_attention_layernorm.weight`),
      await fused(`${p}.mlp.gate_up_proj.weight`, [`${p}.mlp.gate_proj.weight`, `${p}.mlp.up_proj.weight`]),
      await same(`${p}.mlp.down_proj.weight`),
    );
  }
  out.push(await same('model.norm.weight'));
  writeFileSync(join(dir, 'model.safetensors'), buildSafetensors(out));
  writeFileSync(marker, JSON.stringify(cfg, null, 2)); // last: marks the folder complete
}

let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  await makeVariant();
  ({ call, close } = await openHarness());
}, 120_000);
afterAll(async () => close?.());

describe('a made-up architecture variant', () => {
  it('fused-llama (q/k/v, gate/up stored fused) reproduces stories260K exactly, in f32 and nf4', async () => {
    const ids = [1, 403, 407, 261, 378, 11, 10, 423];
    for (const quant of ['f32', 'nf4'] as const) {
      const r = await call('variantVsStock', { variant: `/cache/test-models/${NAME}`, stock: '/models/stories260K', ids, load: { quant } });
      expect(r.variant.modelType).toBe(FUSED_MODEL_TYPE);
      expect(r.stock.modelType).toBe('llama');
      // the same GPU weights, fused from one tensor instead of several: 1 + 5 × 6 + 1 weights
      expect(r.variant.weights).toBe(r.stock.weights);
      expect(r.variant.weights).toBe(32);
      expect(r.variant.logits).toEqual(r.stock.logits);
      expect(r.variant.tokens).toEqual(r.stock.tokens);
      expect(r.variant.tokens).toHaveLength(16);
    }
  }, 300_000);
});
