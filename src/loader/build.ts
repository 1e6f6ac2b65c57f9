/**
 * The streaming build: one scheduler target per member of every job not taken from the cache (a
 * member's rows: a whole tensor, or a row part of one), which hands each piece of rows to the job's
 * weight builder (matrices: the format quantizes on the GPU, or widens to f32) or to its f32 vector,
 * checks the values the CPU sees for NaN/±Inf, and completes the job once every member arrived.
 */
import { NibbleError } from '../errors.ts';
import type { Runtime } from '../kernels/runtime.ts';
import { getFormat } from '../quant/format.ts';
import type { NonFiniteCheck } from '../quant/gpu-builder.ts';
import { memberTensor, nonFiniteError, type Job } from './jobs.ts';
import { scanNonFinite } from './nonfinite.ts';
import { toF32 } from './safetensors.ts';
import type { StreamTarget } from './stream.ts';

export interface BuildSink {
  rt: Runtime;
  /** Every GPU buffer made is pushed here. */
  owned: GPUBuffer[];
  /** The GPU quantizers' non-finite counters. */
  nonFinite: NonFiniteCheck;
  /** A member's last rows arrived. */
  tensorDone(): void;
  /** A builder was created (a weight starts building). */
  started(j: Job): void;
  /** A job is complete: j.weight or j.buffer is set. */
  built(j: Job, buffers: GPUBuffer[]): void;
}

/** Writes rows [row0, row0 + n) of member `i` of a matrix job into its builder. */
function writeMatrixRows(j: Job, i: number, row0: number, bytes: Uint8Array, s: BuildSink): void {
  const m = j.members[i]!;
  if (!j.builder) {
    j.builder = getFormat(j.format)!.create(s.rt, j.rows, j.cols, j.label);
    if (j.builder.nonFinite) s.nonFinite.add(j.label, j.builder.nonFinite);
    s.started(j);
  }
  if (!j.builder.nonFinite) {
    const nf = scanNonFinite(bytes, m.tensor.dtype);
    if (nf.count > 0) throw nonFiniteError(m.tensor.name, nf.count, `in row ${m.rowStart + row0 + Math.floor(nf.first / j.cols)}`);
  }
  j.builder.write(j.bases[i]! + row0, m.tensor.dtype, bytes);
}

function writeVector(j: Job, i: number, bytes: Uint8Array): void {
  const t = j.members[i]!.tensor;
  const nf = scanNonFinite(bytes, t.dtype);
  if (nf.count > 0) throw nonFiniteError(t.name, nf.count, `at element ${nf.first}`);
  j.vec ??= new Float32Array(j.cols);
  j.vec.set(toF32(bytes, t.dtype), j.bases[i]!);
}

/** Finishes a job whose members all arrived: the builder's weight, or the vector uploaded. */
function complete(j: Job, s: BuildSink): void {
  if (j.kind === 'matrix') {
    const w = j.builder!.finish();
    j.builder = undefined;
    j.weight = w;
    s.owned.push(...w.buffers);
    s.built(j, w.buffers);
  } else {
    const b = s.rt.upload(j.vec!, j.label);
    j.vec = undefined;
    j.buffer = b;
    s.owned.push(b);
    s.built(j, [b]);
  }
}

/** The scheduler targets of the jobs to build. */
export function buildTargets(jobs: readonly Job[], s: BuildSink): StreamTarget[] {
  const targets: StreamTarget[] = [];
  for (const j of jobs) {
    if (j.fromCache) continue;
    j.members.forEach((m, i) => {
      const tensor = memberTensor(m);
      const rows = tensor.shape.length >= 2 ? tensor.shape[0]! : 1;
      const rowBytes = rows > 0 ? (tensor.end - tensor.start) / rows : 0;
      let left = rows;
      targets.push({
        tensor,
        write: (row0, bytes) => {
          if (j.kind === 'matrix') writeMatrixRows(j, i, row0, bytes, s);
          else writeVector(j, i, bytes);
          left -= j.kind === 'matrix' && rowBytes > 0 ? bytes.length / rowBytes : left; // a vector (or empty tensor) comes whole
          if (left > 0) return;
          s.tensorDone();
          if (--j.membersLeft === 0) complete(j, s);
        },
      });
    });
  }
  return targets;
}

/** Every job got all its bytes (else the checkpoint's reads came up short). */
export function checkComplete(jobs: readonly Job[]): void {
  for (const j of jobs) {
    if (j.kind === 'matrix' ? !j.weight : !j.buffer) {
      throw new NibbleError('missing-tensor', `weight ${j.label} did not receive all its bytes`);
    }
  }
}

/** Destroys the buffers of builders a failed load left unfinished. */
export function dropBuilders(jobs: readonly Job[]): void {
  for (const j of jobs) {
    if (!j.builder) continue;
    try {
      for (const b of j.builder.finish().buffers) b.destroy();
    } catch {
      // a builder that cannot finish a partial weight: its buffers go with the device
    }
    j.builder = undefined;
  }
}
