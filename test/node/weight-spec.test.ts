import { describe, expect, it } from 'vitest';
import '../../src/quant/formats.ts';
import { getFormat } from '../../src/quant/format.ts';
import type { TensorInfo } from '../../src/loader/safetensors.ts';
import { makeJobs, memberTensor } from '../../src/loader/jobs.ts';
import { parseConfig } from '../../src/model/config.ts';
import { checkpointTensors } from '../../src/model/checkpoint.ts';
import { fusedCheckpoint, registerFusedLlama } from '../helpers/fused-variant.ts';
import { architectureOf, checkTensors } from '../../src/model/architecture.ts';
import { describeWeights, partRows } from '../../src/model/spec.ts';
import { NibbleError } from '../../src/errors.ts';

const MiB = 2 ** 20;
const LIMITS = { maxStorageBufferBindingSize: 128 * MiB, maxBufferSize: 256 * MiB };

/** A header-only tensor table (bf16, one file, in order) for these shapes. */
function table(list: Array<{ name: string; shape: number[] }>): Map<string, TensorInfo> {
  let off = 0;
  return new Map(
    list.map(({ name, shape }) => {
      const n = shape.reduce((a, b) => a * b, 1) * 2;
      const t: TensorInfo = { name, dtype: 'BF16', shape, file: 'model.safetensors', start: off, end: off + n };
      off += n;
      return [name, t];
    }),
  );
}

// the Llama 3.2 1B shape: a 128256 × 2048 tied embedding (1002 MiB in f32)
const big = parseConfig({
  model_type: 'llama',
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 2,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  vocab_size: 128256,
  tie_word_embeddings: true,
});

describe('the weight spec splits weights over the binding limit into row parts', () => {
  it('partRows: the largest multiple of 64 rows whose buffers bind', () => {
    expect(partRows('f32', 128256, 2048, 128 * MiB)).toBe(16384); // 16384 × 2048 × 4 = 128 MiB exactly
    expect(partRows('f32', 1000, 2048, 128 * MiB)).toBe(1000); // fits whole
    expect(partRows('nf4', 128256, 2048, 128 * MiB)).toBe(128256); // 125.3 MiB of codes: whole
    expect(partRows('f32', 128256, 2048, 100 * MiB)).toBe(12800);
    expect(partRows('f32', 128256, 2048, 4096)).toBe(128256); // not even 64 rows bind: left whole (Runtime.buffer reports it)
  });

  it('the tied f32 embedding / LM head in 8 parts, each its own weight and cache entry; nothing split without limits or in nf4', () => {
    const tensors = table(checkpointTensors(big));
    const s = describeWeights(big, tensors, { default: 'f32' }, LIMITS);
    expect(s.head).toBe(s.embed);
    expect(s.embed.parts.map((p) => p.label)).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => `model.embed_tokens.weight#${i}`));
    expect(s.embed.rowStarts).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => i * 16384));
    expect(s.embed.parts.map((p) => p.rows)).toEqual([...Array(7).fill(16384), 128256 - 7 * 16384]);
    expect(s.embed.rows).toBe(128256);
    const f32 = getFormat('f32')!;
    for (const p of s.embed.parts) {
      expect(p.members).toEqual([{ tensor: tensors.get('model.embed_tokens.weight'), rowStart: p.members[0]!.rowStart, rowCount: p.rows }]);
      for (const b of f32.layout!(p.rows, p.cols).buffers) expect(b).toBeLessThanOrEqual(128 * MiB);
      // the part reads only its rows of the tensor
      const view = memberTensor(p.members[0]!);
      expect(view.end - view.start).toBe(p.rows * 2048 * 2);
      expect(view.start).toBe(tensors.get('model.embed_tokens.weight')!.start + p.members[0]!.rowStart * 2048 * 2);
    }
    expect(s.all.filter((w) => w.label.startsWith('model.embed_tokens'))).toHaveLength(8);
    expect(new Set(s.all.map((w) => w.label)).size).toBe(s.all.length); // labels unique: loadable
    expect(() => makeJobs(s.all)).not.toThrow();

    expect(describeWeights(big, tensors, { default: 'f32' }).embed.parts.map((p) => p.label)).toEqual(['model.embed_tokens.weight']);
    expect(describeWeights(big, tensors, { default: 'nf4' }, LIMITS).embed.parts).toHaveLength(1);
    // an untied head is split on its own (here only the head is f32)
    const untied = { ...big, tieWordEmbeddings: false };
    const u = describeWeights(untied, table(checkpointTensors(untied)), { default: 'nf4', overrides: [{ pattern: '^lm_head', format: 'f32' }] }, LIMITS);
    expect(u.embed.parts).toHaveLength(1);
    expect(u.head.parts).toHaveLength(8);
    expect(u.head.parts[7]!.label).toBe('lm_head.weight#7');
  });
});

describe('a made-up architecture variant needs changes in src/model/ only', () => {
  const json = { model_type: 'fused-llama', hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2, num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 512 };

  it('is refused until registered; then parsed, checked and specified through its Architecture', () => {
    expect(() => parseConfig({ ...json, model_type: 'fused-llama-unregistered' })).toThrow(NibbleError);
    registerFusedLlama();
    const cfg = parseConfig(json);
    expect(cfg.modelType).toBe('fused-llama');
    expect(architectureOf(cfg).family).toBe('llama');
    const tensors = table(fusedCheckpoint(cfg));
    expect(() => checkTensors(cfg, tensors)).not.toThrow();
    // the stock layout's names are not what this checkpoint holds
    expect(() => checkTensors({ ...cfg, modelType: 'llama' }, tensors)).toThrow(/q_proj.weight" is missing/);
    const s = architectureOf(cfg).describeWeights(cfg, tensors, { default: 'nf4' });
    expect(s.layers[1]!.qkv.members.map((m) => m.tensor.name)).toEqual(['model.layers.1.self_attn.qkv_proj.weight']);
    expect(s.layers[1]!.qkv.rows).toBe((8 + 2 * 4) * 8);
    expect(s.layers[0]!.gateUp.rows).toBe(2 * 172);
    expect(s.all).toHaveLength(1 + 2 * 6 + 2); // embed, 2 layers, norm, the untied head
    expect(s.head.parts[0]!.members[0]!.tensor.name).toBe('lm_head.weight');
    expect(() => makeJobs(s.all)).not.toThrow();
  });
});
