/**
 * The demo's model picker: entries of models.json (the supported catalogue), read tolerantly —
 * `id`, `params`, `notes` always; per-format GPU bytes, download bytes, chat template, default
 * format and context length when the catalogue has them (under any of a few spellings).
 */
import catalogue from '../models.json';

export const FORMATS = ['f32', 'f16', 'int8', 'nf4', 'nf4-dq'] as const;
export type Format = (typeof FORMATS)[number];

export interface CatalogueEntry {
  /** What the picker shows. */
  label: string;
  /** Where the model loads from: a Hub id, or a URL (the dev server's test model). */
  source: { kind: 'hub' | 'url'; value: string };
  params?: string;
  notes?: string;
  family?: string;
  /** Estimated GPU bytes per weight format (the whole load: weights, KV cache, scratch), from models.json. */
  gpuBytes: Partial<Record<string, number>>;
  /** Estimated GPU bytes of the weights alone per format, from models.json. */
  weightBytes: Partial<Record<string, number>>;
  /** The context length the GPU estimates assume. */
  gpuContextLength?: number;
  /** Estimated download (checkpoint) bytes, from models.json. */
  downloadBytes?: number;
  chatTemplate?: boolean;
  defaultFormat?: string;
  contextLength?: number;
  draft?: string;
}

const HUB_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;

type Raw = Record<string, unknown>;

function pick(e: Raw, keys: string[]): unknown {
  for (const k of keys) if (e[k] !== undefined && e[k] !== null) return e[k];
  return undefined;
}

function num(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (v && typeof v === 'object') {
    const o = v as Raw;
    for (const k of ['total', 'bytes', 'gpuBytes', 'weights']) if (typeof o[k] === 'number') return o[k] as number;
  }
  return undefined;
}

/** Per-format bytes: { nf4: 123, ... } or { nf4: { total: 123 } } or [{ format, bytes }]. */
function perFormat(v: unknown, field?: string): Partial<Record<string, number>> {
  const out: Partial<Record<string, number>> = {};
  const value = (x: unknown) => (field ? (x && typeof x === 'object' ? num((x as Raw)[field]) : undefined) : num(x));
  if (Array.isArray(v)) {
    for (const x of v) if (x && typeof x === 'object' && typeof (x as Raw).format === 'string') out[(x as Raw).format as string] = value(x);
  } else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v as Raw)) {
      const n = value(x);
      if (n !== undefined) out[k] = n;
    }
  }
  return out;
}

/** A suggested draft: "HuggingFaceTB/SmolLM2-135M-Instruct at f16", "the same model at nf4". */
function draftText(d: unknown): string | undefined {
  if (typeof d === 'string') return d;
  if (!d || typeof d !== 'object') return undefined;
  const o = d as Raw;
  const model = typeof o.model === 'string' ? o.model : typeof o.id === 'string' ? o.id : undefined;
  if (!model) return undefined;
  const who = model === 'self' ? 'the same model' : model;
  return typeof o.quant === 'string' ? `${who} at ${o.quant}` : who;
}

function entry(e: Raw): CatalogueEntry | null {
  const id = typeof e.id === 'string' ? e.id : '';
  let source: CatalogueEntry['source'];
  if (HUB_ID.test(id)) source = { kind: 'hub', value: id };
  else if (/stories260K/i.test(id)) source = { kind: 'url', value: '/models/stories260K' }; // served by `npm run demo`
  else return null;
  const gpu = pick(e, ['gpuBytes', 'gpu_bytes', 'estimatedGpuBytes', 'gpuMemory', 'gpu_memory', 'memory']);
  const dl = pick(e, ['downloadBytes', 'download_bytes', 'checkpointBytes', 'checkpoint_bytes', 'download']);
  const tmpl = pick(e, ['chatTemplate', 'chat_template', 'hasChatTemplate']);
  const draft = pick(e, ['draft', 'suggestedDraft', 'draftModel', 'draft_model']);
  const params = pick(e, ['params', 'parameters']);
  return {
    label: source.kind === 'hub' ? id : 'stories260K (test model)',
    source,
    params: params === undefined ? undefined : String(params),
    notes: typeof e.notes === 'string' ? e.notes : undefined,
    family: typeof e.family === 'string' ? e.family : undefined,
    gpuBytes: perFormat(gpu),
    weightBytes: perFormat(gpu, 'weights'),
    gpuContextLength: num(pick(e, ['gpuContextLength', 'gpu_context_length'])),
    downloadBytes: num(dl),
    chatTemplate: typeof tmpl === 'boolean' ? tmpl : undefined,
    defaultFormat: (pick(e, ['defaultFormat', 'default_format', 'defaultQuant']) as string | undefined) ?? undefined,
    contextLength: num(pick(e, ['contextLength', 'context_length', 'maxContext'])),
    draft: draftText(draft),
  };
}

export const entries: CatalogueEntry[] = ((catalogue as { models?: Raw[] }).models ?? []).map(entry).filter((e): e is CatalogueEntry => e !== null);

/** "360M" / "1.2B" / "260K" → a count. */
export function paramCount(p: string | undefined): number | undefined {
  const m = /^\s*([\d.]+)\s*([KMB])?/i.exec(p ?? '');
  if (!m) return undefined;
  const scale = { K: 1e3, M: 1e6, B: 1e9 }[(m[2] ?? '').toUpperCase() as 'K' | 'M' | 'B'] ?? 1;
  return Number(m[1]) * scale;
}

/** Rough bits per weight of each format (scales included), when models.json has no estimate. */
const ROUGH_BITS: Record<Format, number> = { f32: 32, f16: 16, int8: 8.5, nf4: 4.5, 'nf4-dq': 4.13 };

export function roughGpuBytes(params: number, format: Format): number {
  return (params * ROUGH_BITS[format]) / 8;
}

export function bytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '?';
  if (n < 1024) return `${n} B`;
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${u[i]}`;
}
