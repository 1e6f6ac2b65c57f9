/**
 * models.json against the published config.json of every model (test/fixtures/configs/, written from
 * the Hub's configs; nothing is downloaded): family, parameter count, context length, and the GPU bytes
 * per format as the loader's sizing computes them now, so a hand edit or a change to a format's layout
 * that was not followed by `npm run models:update` fails here. Also README's generated table.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  CATALOGUE_FORMATS,
  catalogueFixtureName,
  catalogueReadmeTable,
  catalogueShapeFacts,
  parseParamsLabel,
  readmeTable,
  withComputedFields,
  type Catalogue,
  type CatalogueFormat,
  type CatalogueEntry,
} from '../../src/models/catalogue.ts';
import { parseConfig } from '../../src/model/config.ts';
import { SYNTH_SHAPES, SYNTH_SOURCES, type SynthShapeName } from '../../src/node/synth.ts';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const fixturesDir = path.join(repoRoot, 'test/fixtures/configs');
const catalogue = JSON.parse(readFileSync(path.join(repoRoot, 'models.json'), 'utf8')) as Catalogue;
const models = catalogue.models;
const byId = new Map(models.map((m) => [m.id, m]));
const configOf = (id: string): Record<string, unknown> =>
  JSON.parse(readFileSync(path.join(fixturesDir, `${catalogueFixtureName(id)}.json`), 'utf8')) as Record<string, unknown>;

/** What the issue asks the catalogue to hold at least (an ungated mirror where the original is gated). */
const REQUIRED = [
  'HuggingFaceTB/SmolLM2-135M-Instruct',
  'HuggingFaceTB/SmolLM2-360M-Instruct',
  'HuggingFaceTB/SmolLM2-1.7B-Instruct',
  'meta-llama/Llama-3.2-1B-Instruct',
  'meta-llama/Llama-3.2-3B-Instruct',
  'Qwen/Qwen2.5-0.5B-Instruct',
  'Qwen/Qwen2.5-1.5B-Instruct',
  'TinyLlama/TinyLlama-1.1B-Chat-v1.0',
  'mistralai/Mistral-7B-Instruct-v0.3',
  'meta-llama/Llama-3.1-8B-Instruct',
];

/**
 * The published shapes, a second time by hand: hidden, intermediate, layers, heads, kv heads, vocab,
 * max positions, tied. Guards the fixtures against an accidental edit.
 */
const PUBLISHED: Record<string, [number, number, number, number, number, number, number, boolean]> = {
  'HuggingFaceTB/SmolLM2-135M-Instruct': [576, 1536, 30, 9, 3, 49152, 8192, true],
  'HuggingFaceTB/SmolLM2-360M-Instruct': [960, 2560, 32, 15, 5, 49152, 8192, true],
  'HuggingFaceTB/SmolLM2-1.7B-Instruct': [2048, 8192, 24, 32, 32, 49152, 8192, true],
  'meta-llama/Llama-3.2-1B-Instruct': [2048, 8192, 16, 32, 8, 128256, 131072, true],
  'meta-llama/Llama-3.2-3B-Instruct': [3072, 8192, 28, 24, 8, 128256, 131072, true],
  'Qwen/Qwen2.5-0.5B-Instruct': [896, 4864, 24, 14, 2, 151936, 32768, true],
  'Qwen/Qwen2.5-1.5B-Instruct': [1536, 8960, 28, 12, 2, 151936, 32768, true],
  'TinyLlama/TinyLlama-1.1B-Chat-v1.0': [2048, 5632, 22, 32, 4, 32000, 2048, false],
  'mistralai/Mistral-7B-Instruct-v0.3': [4096, 14336, 32, 32, 8, 32768, 32768, false],
  'meta-llama/Llama-3.1-8B-Instruct': [4096, 14336, 32, 32, 8, 128256, 131072, false],
  'meta-llama/Llama-2-7b-chat-hf': [4096, 11008, 32, 32, 32, 32000, 4096, false],
};
const SHAPE_KEYS = [
  'hidden_size',
  'intermediate_size',
  'num_hidden_layers',
  'num_attention_heads',
  'num_key_value_heads',
  'vocab_size',
  'max_position_embeddings',
  'tie_word_embeddings',
] as const;

const repoOf = (m: CatalogueEntry) => m.original ?? m.id;

describe('models.json', () => {
  it('holds every model the issue lists, each id once, each with a config fixture and no stray fixture', () => {
    const repos = models.map(repoOf);
    for (const r of REQUIRED) expect(repos, r).toContain(r);
    expect(new Set(models.map((m) => m.id)).size).toBe(models.length);
    expect(models.some((m) => m.checked === 'golden' && m.id.includes('stories260K'))).toBe(true);
    const fixtures = new Set(readdirSync(fixturesDir).filter((f) => f.endsWith('.json')));
    for (const m of models) {
      const f = `${catalogueFixtureName(m.id)}.json`;
      expect(fixtures.has(f), `${m.id}: test/fixtures/configs/${f}`).toBe(true);
      fixtures.delete(f);
    }
    expect([...fixtures], 'fixtures no entry uses').toEqual([]);
  });

  it('gated repos are mirrored or marked gated', () => {
    for (const m of models) {
      if (m.id.startsWith('meta-llama/')) expect(m.gated, `${m.id} is gated: use an ungated mirror or mark it`).toBe(true);
      if (m.original) {
        expect(m.original).not.toBe(m.id);
        // a mirror keeps the original's repo name
        expect(m.id.split('/')[1], m.id).toBe(m.original.split('/')[1]);
        expect(m.gated).toBeUndefined();
      }
    }
  });

  it.each(models.map((m) => [m.id, m] as const))('%s: hand-kept fields are well-formed', (_, m) => {
    expect(typeof m.params).toBe('string');
    expect(CATALOGUE_FORMATS).toContain(m.defaultFormat);
    expect(typeof m.chatTemplate).toBe('boolean');
    expect(['golden', 'synthetic', 'none']).toContain(m.checked);
    expect(typeof m.notes).toBe('string');
    if (m.checked === 'synthetic') expect(Object.keys(SYNTH_SHAPES)).toContain(m.synth);
    else expect(m.synth).toBeUndefined();
    expect(m.chatTemplate, 'Instruct / Chat models ship a template').toBe(/Instruct|[Cc]hat/.test(m.id));
  });

  it.each(models.map((m) => [m.id, m] as const))('%s: matches its published config.json', (_, m) => {
    const json = configOf(m.id);
    const cfg = parseConfig(json); // nibble loads it
    expect(m.family).toBe(json.model_type);
    expect(m.contextLength).toBe(json.max_position_embeddings);
    const published = PUBLISHED[repoOf(m)];
    if (published) expect(SHAPE_KEYS.map((k) => json[k])).toEqual(published);
    else expect(m.id).toContain('stories260K');

    const facts = catalogueShapeFacts(json);
    expect(m.parameters).toBe(facts.parameters);
    // the label within 3% of the exact count (model names round: 360M is 361.8M, Qwen's 1.5B is 1.54B)
    const label = parseParamsLabel(m.params);
    expect(label, `params label "${m.params}"`).toBeGreaterThan(0);
    expect(Math.abs(label - m.parameters) / m.parameters, `${m.params} vs ${m.parameters}`).toBeLessThan(0.03);

    // independent of the loader's code: the parameter count from the shape by hand
    const H = cfg.hiddenSize;
    const q = cfg.numHeads * cfg.headDim;
    const kv = cfg.numKvHeads * cfg.headDim;
    const bias = cfg.attentionBias ? q + 2 * kv + (cfg.modelType === 'llama' ? H : 0) : 0;
    const layer = H * (q + 2 * kv) + q * H + 3 * H * cfg.intermediateSize + 2 * H + bias;
    const heads = cfg.tieWordEmbeddings ? 1 : 2;
    expect(m.parameters).toBe(cfg.numLayers * layer + heads * cfg.vocabSize * H + H);
  });

  it.each(models.map((m) => [m.id, m] as const))('%s: computed fields equal what the loader sizing gives now', (_, m) => {
    const json = configOf(m.id);
    const fresh = withComputedFields(m, json);
    expect(m, 'stale or hand-edited: run `npm run models:update`').toEqual(fresh);
    const g = m.gpuBytes;
    expect(Object.keys(g).sort()).toEqual([...CATALOGUE_FORMATS].sort());
    // cross-checks by hand: f32 weights are 4 bytes a parameter (every real dimension is a multiple
    // of 4, so rows need no padding); the KV cache is f32 k and v per layer at the default context
    const cfg = parseConfig(json);
    expect(g.f32.weights).toBe(4 * m.parameters);
    expect(m.gpuContextLength).toBe(Math.min(cfg.maxPositionEmbeddings, 4096));
    expect(m.kvCacheBytes).toBe(cfg.numLayers * 2 * cfg.numKvHeads * cfg.headDim * m.gpuContextLength * 4);
    const bytes = { bfloat16: 2, float16: 2, float32: 4 }[json.torch_dtype as string];
    expect(m.downloadBytes).toBe(bytes! * m.parameters);
    // smaller formats are smaller; the total holds the weights and the KV cache
    const w = CATALOGUE_FORMATS.map((f) => g[f].weights);
    for (let i = 1; i < w.length; i++) expect(w[i]!).toBeLessThan(w[i - 1]!);
    for (const f of CATALOGUE_FORMATS) expect(g[f].total).toBeGreaterThan(g[f].weights + m.kvCacheBytes);
    // roughly the format's bits per weight (the per-row / per-block scales and f32 vectors on top)
    expect(g.int8.weights / m.parameters).toBeGreaterThan(1);
    expect(g.int8.weights / m.parameters).toBeLessThan(1.2);
    expect(g.nf4.weights / m.parameters).toBeGreaterThan(0.5);
    expect(g.nf4.weights / m.parameters).toBeLessThan(0.65);
  });

  it.each(models.map((m) => [m.id, m] as const))('%s: the suggested draft fits it', (_, m) => {
    if (m.draft === null) {
      expect(m.notes, 'say why there is no draft').toMatch(/draft|shares its tokenizer|vocabulary/);
      return;
    }
    expect(Object.keys(m.draft).sort()).toEqual(['model', 'quant']);
    expect(CATALOGUE_FORMATS).toContain(m.draft.quant);
    if (m.draft.model === 'self') {
      // a self-draft only helps when it reads fewer bytes than the target's default format
      expect(m.gpuBytes[m.draft.quant as CatalogueFormat].weights).toBeLessThan(m.gpuBytes[m.defaultFormat].weights);
      return;
    }
    const d = byId.get(m.draft.model);
    expect(d, `draft ${m.draft.model} is a catalogue entry`).toBeDefined();
    expect(d!.parameters).toBeLessThan(m.parameters);
    expect(d!.gpuBytes[m.draft.quant as CatalogueFormat].weights).toBeLessThan(m.gpuBytes[m.defaultFormat].weights);
    // same tokenizer: same vocabulary size, same BOS
    const a = configOf(m.id);
    const b = configOf(d!.id);
    expect(b.vocab_size).toBe(a.vocab_size);
    expect(b.bos_token_id).toBe(a.bos_token_id);
    expect(d!.family).toBe(m.family);
  });

  it('synthetic shapes (src/node/synth.ts) agree with the fixtures where they overlap', () => {
    const keys = [...SHAPE_KEYS, 'model_type', 'rope_theta', 'rope_scaling', 'rms_norm_eps', 'head_dim'] as const;
    const synthetic = models.filter((m) => m.synth);
    expect(synthetic.length).toBeGreaterThan(0);
    for (const m of synthetic) {
      const shape = SYNTH_SHAPES[m.synth as SynthShapeName] as Record<string, unknown>;
      const json = configOf(m.id);
      for (const k of keys) expect(json[k] ?? null, `${m.id} ${k}`).toEqual(shape[k] ?? null);
      // the synthetic shape copies the base model of this Instruct repo
      expect(`${SYNTH_SOURCES[m.synth as SynthShapeName]}-Instruct`).toBe(repoOf(m));
    }
  });

  it('the stories260K fixture is the test model’s config.json', () => {
    const dir = path.resolve(repoRoot, process.env.NIBBLE_MODELS_DIR ?? '../shared/models', 'stories260K');
    const file = path.join(dir, 'config.json');
    if (!existsSync(file)) return; // the model folder is optional for this test
    const m = models.find((x) => x.id.includes('stories260K'))!;
    expect(configOf(m.id)).toEqual(JSON.parse(readFileSync(file, 'utf8')));
  });

  it("README's supported-models table is generated from models.json", () => {
    const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
    expect(readmeTable(readme), 'run `npm run models:update`').toBe(catalogueReadmeTable(models));
  });
});
