/**
 * models.json, the supported catalogue: the entry type, and the numbers derived from a model's
 * published config.json — parameter count, context length, download size and the GPU memory per
 * weight format. Those are computed here, never typed by hand: `npm run models:update`
 * (scripts/models-catalogue.mjs) writes them into models.json and README's table from the configs
 * in test/fixtures/configs/, and test/node/models-catalogue.test.ts fails when they are stale.
 *
 * The GPU bytes come from the loader's own sizing: `describeWeights` (src/model/spec.ts: which
 * 2-D weights the model declares and the loader builds, fused qkv and gate_up, in which format) and each format's `layout`
 * (src/quant/*.ts, the geometry its builder allocates), summed by the memory preflight's
 * `estimateGpuMemory` (src/api/preflight.ts), which also sizes the KV cache, activations, logits and
 * load-time staging exactly as `Engine.load` does before it downloads anything.
 */
import { estimateGpuMemory, modelDims } from '../api/preflight.ts';
import type { DType, TensorInfo } from '../loader/safetensors.ts';
import { parseConfig, type LlamaConfig } from '../model/config.ts';
import { expectedShapes } from '../model/checkpoint.ts';
import '../quant/formats.ts';
import { NibbleError } from '../errors.ts';

/** The formats the catalogue sizes (each a whole-model plan: `quant: '<format>'`). */
export const CATALOGUE_FORMATS = ['f32', 'f16', 'int8', 'nf4', 'nf4-dq'] as const;
export type CatalogueFormat = (typeof CATALOGUE_FORMATS)[number];

/**
 * GPU memory of `Engine.load(model, { quant: format })` with default options (no draft), in bytes,
 * at the context `gpuContextLength`.
 */
export interface CatalogueFormatBytes {
  /** The weights alone, as `engine.info.weightBytes` reports them (codes + scales, f32 norms and biases). */
  weights: number;
  /** The preflight's total: weights + KV cache + activations, logits, RoPE table, sampler + load-time staging. */
  total: number;
}
export type CatalogueGpuBytes = Record<CatalogueFormat, CatalogueFormatBytes>;

/** A draft model for speculative decoding: another catalogue entry, or the target itself at a cheaper format. */
export interface CatalogueDraft {
  /** 'self' (the same checkpoint, `draft: { quant }`) or the id of another entry sharing the tokenizer. */
  model: string;
  quant: string;
}

/** One models.json entry. Fields marked "computed" are written by `npm run models:update`. */
export interface CatalogueEntry {
  /** Hub id to load (an ungated mirror where the original is gated; see `original`). */
  id: string;
  /** The original (gated) Hub repo when `id` is a mirror of it. */
  original?: string;
  /** config.json's model_type. */
  family: string;
  /** Parameter count as a label ("135M", "1.2B"), within 3% of `parameters`. */
  params: string;
  /** Computed: the exact parameter count of the tensors nibble loads (a tied head counted once). */
  parameters: number;
  /** Computed: max_position_embeddings. */
  contextLength: number;
  /** The weight format suggested for this model. */
  defaultFormat: CatalogueFormat;
  /** Whether the repo ships a chat template (tokenizer_config.json `chat_template`). */
  chatTemplate: boolean;
  /** Suggested draft for speculative decoding; null when none helps. */
  draft: CatalogueDraft | null;
  /** golden | synthetic | none: how this repository tests the architecture (see models.json's $comment). */
  checked: 'golden' | 'synthetic' | 'none';
  /** `nibble synth --shape` name when `checked` is synthetic. */
  synth?: string;
  /** The repo needs a Hub token (accepted licence). */
  gated?: boolean;
  notes: string;
  /** Computed: bytes of the checkpoint's tensors in its published dtype (safetensors headers not counted). */
  downloadBytes: number;
  /** Computed: the context the GPU estimate assumes, Engine.load's default: min(max_position_embeddings, 4096). */
  gpuContextLength: number;
  /** Computed: the KV caches (f32 k and v, every layer) at gpuContextLength; the same for every format. */
  kvCacheBytes: number;
  /** Computed: GPU bytes per format (see CatalogueFormatBytes). */
  gpuBytes: CatalogueGpuBytes;
}

export interface Catalogue {
  $comment: string;
  models: CatalogueEntry[];
}

/** The fixture file name of an entry's config: test/fixtures/configs/<catalogueFixtureName(id)>.json. */
export function catalogueFixtureName(id: string): string {
  return id
    .replace(/\//g, '--')
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^_+|_+$/g, '');
}

const DTYPES: Record<string, { dtype: DType; bytes: number }> = {
  bfloat16: { dtype: 'BF16', bytes: 2 },
  float16: { dtype: 'F16', bytes: 2 },
  float32: { dtype: 'F32', bytes: 4 },
};

/** The tensor table a checkpoint of this config has (one file, tensors back to back, in its torch_dtype). */
export function syntheticTensorTable(cfg: LlamaConfig): Map<string, TensorInfo> {
  const { dtype, bytes } = DTYPES[cfg.torchDtype ?? 'bfloat16'] ?? DTYPES.bfloat16!;
  const table = new Map<string, TensorInfo>();
  let offset = 8;
  for (const [name, shape] of expectedShapes(cfg)) {
    const n = shape.reduce((a, d) => a * d, 1) * bytes;
    table.set(name, { name, dtype, shape, file: 'model.safetensors', start: offset, end: offset + n });
    offset += n;
  }
  return table;
}

/** What the catalogue derives from a config.json. */
export interface CatalogueShapeFacts {
  family: string;
  parameters: number;
  contextLength: number;
  vocabSize: number;
  downloadBytes: number;
  gpuContextLength: number;
  kvCacheBytes: number;
  gpuBytes: CatalogueGpuBytes;
}

export function catalogueShapeFacts(configJson: unknown): CatalogueShapeFacts {
  const cfg = parseConfig(configJson);
  const tensors = syntheticTensorTable(cfg);
  let parameters = 0;
  let downloadBytes = 0;
  for (const t of tensors.values()) {
    parameters += t.shape.reduce((a, d) => a * d, 1);
    downloadBytes += t.end - t.start;
  }
  const gpuBytes = {} as CatalogueGpuBytes;
  let kvCacheBytes = 0;
  for (const format of CATALOGUE_FORMATS) {
    // what Engine.load passes the preflight for a plain load with default options
    const est = estimateGpuMemory([{ cfg, tensors, plan: { default: format }, samplerRows: 1, draftTokens: 0 }]);
    gpuBytes[format] = { weights: est.weights, total: est.total };
    kvCacheBytes = est.kvCache;
  }
  return {
    family: cfg.modelType,
    parameters,
    contextLength: cfg.maxPositionEmbeddings,
    vocabSize: cfg.vocabSize,
    downloadBytes,
    gpuContextLength: modelDims(cfg, {}).ctx,
    kvCacheBytes,
    gpuBytes,
  };
}

/** "260K" / "135M" / "1.2B" → a number; NaN when it is not such a label. */
export function parseParamsLabel(label: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMB])$/.exec(label);
  if (!m) return NaN;
  return Number(m[1]) * { K: 1e3, M: 1e6, B: 1e9 }[m[2] as 'K' | 'M' | 'B'];
}

/** An entry with its computed fields (re)written from its config, keys in catalogue order. */
export function withComputedFields(entry: CatalogueEntry, configJson: unknown): CatalogueEntry {
  const facts = catalogueShapeFacts(configJson);
  const out: CatalogueEntry = {
    id: entry.id,
    ...(entry.original !== undefined ? { original: entry.original } : {}),
    family: entry.family,
    params: entry.params,
    parameters: facts.parameters,
    contextLength: facts.contextLength,
    defaultFormat: entry.defaultFormat,
    chatTemplate: entry.chatTemplate,
    draft: entry.draft,
    checked: entry.checked,
    ...(entry.synth !== undefined ? { synth: entry.synth } : {}),
    ...(entry.gated !== undefined ? { gated: entry.gated } : {}),
    notes: entry.notes,
    downloadBytes: facts.downloadBytes,
    gpuContextLength: facts.gpuContextLength,
    kvCacheBytes: facts.kvCacheBytes,
    gpuBytes: facts.gpuBytes,
  };
  return out;
}

/** Bytes as GiB / MiB with three significant figures. */
export function formatBytes(n: number): string {
  const [v, unit] = n >= 2 ** 30 ? [n / 2 ** 30, 'GiB'] : n >= 2 ** 20 ? [n / 2 ** 20, 'MiB'] : [n / 2 ** 10, 'KiB'];
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${unit}`;
}

/** README's supported-models table, generated from models.json. */
export function catalogueReadmeTable(models: CatalogueEntry[]): string {
  const head = [
    '| Model | Family | Params | Context | Default | GPU f16 / int8 / nf4 (KV included) | Chat | Draft | Tested |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  const rows = models.map((m) => {
    const g = m.gpuBytes;
    const gpu = `${formatBytes(g.f16.total)} / ${formatBytes(g.int8.total)} / ${formatBytes(g.nf4.total)}`;
    const draft = m.draft ? `${m.draft.model === 'self' ? 'self' : m.draft.model.split('/').pop()} @ ${m.draft.quant}` : '—';
    const id = `\`${m.id}\`${m.gated ? ' (gated)' : ''}`;
    return `| ${id} | ${m.family} | ${m.params} | ${m.contextLength} | ${m.defaultFormat} | ${gpu} | ${m.chatTemplate ? 'yes' : 'no'} | ${draft} | ${m.checked} |`;
  });
  return [...head, ...rows].join('\n');
}

export const README_TABLE_BEGIN = '<!-- models.json table: generated by `npm run models:update` -->';
export const README_TABLE_END = '<!-- end of models.json table -->';

/** README with the text between the table markers replaced (throws when the markers are missing). */
export function replaceReadmeTable(readme: string, table: string): string {
  const a = readme.indexOf(README_TABLE_BEGIN);
  const b = readme.indexOf(README_TABLE_END);
  if (a < 0 || b < a) throw new NibbleError('not-found', `README.md has no "${README_TABLE_BEGIN}" … "${README_TABLE_END}" markers`);
  return readme.slice(0, a + README_TABLE_BEGIN.length) + '\n' + table + '\n' + readme.slice(b);
}

/** The table currently between README's markers, or null. */
export function readmeTable(readme: string): string | null {
  const a = readme.indexOf(README_TABLE_BEGIN);
  const b = readme.indexOf(README_TABLE_END);
  if (a < 0 || b < a) return null;
  return readme.slice(a + README_TABLE_BEGIN.length, b).trim();
}

/**
 * models.json as text: two-space JSON with each entry's nested objects of plain values
 * (draft, each format's bytes) on one line.
 */
export function formatCatalogue(doc: Catalogue): string {
  const text = JSON.stringify(doc, null, 2);
  // collapse `{ "k": v, ... }` objects whose values are all scalars
  return (
    text.replace(/\{\n(\s+"[^"\n]+": (?:-?[\d.e+-]+|"[^"\n]*"|true|false|null),?\n)+\s*\}/g, (block) =>
      '{ ' +
      block
        .slice(1, -1)
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean)
        .join(' ') +
      ' }',
    ) + '\n'
  );
}
