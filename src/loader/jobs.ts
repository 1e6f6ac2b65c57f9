/**
 * Planning a weight load: one job per GPU weight of the spec, the byte range of each member's rows
 * (a row part of a split weight reads only its rows), the files' metadata (sizes, sha256 / ETags)
 * and the cache key of each weight (what its stored bytes depend on).
 */
import { NibbleError } from '../errors.ts';
import { entryKey, shortHash } from '../cache/model-cache.ts';
import { getFormat, type GpuWeight, type WeightBuilder } from '../quant/format.ts';
import type { NonFiniteReport } from '../quant/gpu-builder.ts';
import type { FileMetadata, ModelSource } from '../source/types.ts';
import type { TensorInfo } from './safetensors.ts';
import type { WeightMember, WeightSpec } from './weights.ts';

/** A weight being loaded: its spec and the load's state. */
export interface Job extends WeightSpec {
  /** Cache entry key (when a cache is open). */
  key?: string;
  /** Member tensors (or row ranges) not yet complete. */
  membersLeft: number;
  builder?: WeightBuilder;
  vec?: Float32Array;
  weight?: GpuWeight;
  buffer?: GPUBuffer;
  fromCache?: boolean;
  /** Weight rows (matrix) or elements (vector) where each member starts. */
  bases: number[];
}

export function makeJobs(specs: readonly WeightSpec[]): Job[] {
  const seen = new Set<string>();
  return specs.map((w) => {
    if (seen.has(w.label)) throw new NibbleError('bad-argument', `two weights are labelled "${w.label}"`);
    seen.add(w.label);
    const bases: number[] = [];
    let base = 0;
    for (const m of w.members) {
      bases.push(base);
      base += w.kind === 'matrix' ? m.rowCount : m.tensor.shape.reduce((x, d) => x * d, 1);
    }
    if (w.kind === 'matrix' && base !== w.rows) {
      throw new NibbleError('bad-argument', `weight ${w.label}: its members hold ${base} rows, not ${w.rows}`);
    }
    return { ...w, membersLeft: w.members.length, bases };
  });
}

/** Checkpoint bytes of a job's members. */
export function memberBytes(j: WeightSpec): number {
  return j.members.reduce((a, m) => a + (memberTensor(m).end - memberTensor(m).start), 0);
}

/**
 * The member's rows as a tensor of their own (the whole tensor when the member takes all its rows):
 * what the scheduler reads.
 */
export function memberTensor(m: WeightMember): TensorInfo {
  const t = m.tensor;
  const rows = t.shape[0] ?? 1;
  if (m.rowStart === 0 && m.rowCount === rows) return t;
  if (t.shape.length < 2 || m.rowStart < 0 || m.rowCount < 0 || m.rowStart + m.rowCount > rows) {
    throw new NibbleError('bad-argument', `rows ${m.rowStart}..${m.rowStart + m.rowCount} of tensor "${t.name}" [${t.shape.join(',')}]`);
  }
  const rowBytes = (t.end - t.start) / rows;
  return { ...t, shape: [m.rowCount, ...t.shape.slice(1)], start: t.start + m.rowStart * rowBytes, end: t.start + (m.rowStart + m.rowCount) * rowBytes };
}

/** The bad-tensor error of a weight whose checkpoint values hold NaN or ±Inf. */
export function nonFiniteError(tensor: string, count: number, where: string): NibbleError {
  return new NibbleError(
    'bad-tensor',
    `tensor "${tensor}" holds ${count === 1 ? 'a non-finite value' : `${count} non-finite values`} (NaN or ±Inf), the first ${where}: the checkpoint is corrupt`,
  );
}

/** The checkpoint tensor and row holding weight row `row` of a (possibly fused or partial) matrix job. */
function memberAt(j: Job, row: number): { name: string; row: number } {
  let i = j.bases.length - 1;
  while (i > 0 && j.bases[i]! > row) i--;
  const m = j.members[i]!;
  return { name: m.tensor.name, row: m.rowStart + row - j.bases[i]! };
}

export function gpuNonFiniteError(j: Job, r: NonFiniteReport): NibbleError {
  const m = memberAt(j, r.firstRow);
  const fused = j.members.length > 1 ? ` of ${j.label}` : '';
  return nonFiniteError(m.name, r.count, `in row ${m.row}${fused ? ` (${r.count} in all${fused})` : ''}`);
}

export interface SourceMeta {
  /** Expected sha256 and size of the files to verify. */
  sha256: Map<string, string>;
  sizes: Map<string, number>;
  /** A validator per file (sha256, ETag + size, or mtime + size); null when a file has none. */
  fingerprints: Record<string, string> | null;
}

function fingerprint(m: FileMetadata | undefined): string | null {
  if (!m) return null;
  if (m.sha256) return `sha256:${m.sha256}`;
  if (m.etag) return `etag:${m.etag}:${m.size}`;
  if (m.lastModified !== undefined) return `mtime:${m.size}:${m.lastModified}`;
  return null;
}

/** One metadata request per weight file; checks that every tensor lies inside its file. */
export async function readMetadata(source: ModelSource, jobs: readonly Job[], verify: boolean, signal: AbortSignal): Promise<SourceMeta> {
  const tensors = jobs.flatMap((j) => j.members.map((m) => m.tensor));
  const files = [...new Set(tensors.map((t) => t.file))];
  const meta = new Map<string, FileMetadata>();
  if (source.metadata) {
    const ms = await Promise.all(files.map((f) => source.metadata!(f, signal)));
    files.forEach((f, i) => meta.set(f, ms[i]!));
  }
  const out: SourceMeta = { sha256: new Map(), sizes: new Map(), fingerprints: files.length > 0 ? {} : null };
  for (const [f, m] of meta) {
    if (verify && m.sha256) {
      out.sha256.set(f, m.sha256);
      out.sizes.set(f, m.size);
    }
  }
  for (const t of tensors) {
    const m = meta.get(t.file);
    if (m && t.end > m.size) {
      throw new NibbleError('bad-safetensors', `${t.file}: tensor "${t.name}" ends at byte ${t.end} but the file has ${m.size} bytes`);
    }
  }
  for (const f of files) {
    const fp = fingerprint(meta.get(f));
    if (fp && out.fingerprints) out.fingerprints[f] = fp;
    else out.fingerprints = null;
  }
  return out;
}

/**
 * Each job's cache key: its label and format, the format's code (its layout and its quantizer's
 * output show there) and its members (name, dtype, shape, file validator, and the row range of a part).
 */
export function assignKeys(jobs: readonly Job[], fps: Record<string, string>): void {
  for (const j of jobs) {
    const f = getFormat(j.format);
    const code = j.kind === 'matrix' && f ? shortHash(f.cacheKey) : 'f32';
    const identity = {
      format: j.format,
      code,
      members: j.members.map(({ tensor: t, rowStart, rowCount }) => ({
        name: t.name,
        dtype: t.dtype,
        shape: t.shape,
        file: fps[t.file],
        ...(rowStart === 0 && rowCount === (t.shape[0] ?? 1) ? {} : { rows: [rowStart, rowCount] }),
      })),
    };
    j.key = entryKey(j.label, j.format, identity);
  }
}
