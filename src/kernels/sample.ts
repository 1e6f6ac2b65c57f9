import type { Op, Runtime, StepShape } from './runtime.ts';
import rngSrc from '../../shaders/rng.wgsl?raw';
import sampleSrc from '../../shaders/sample.wgsl?raw';
import argmaxRowsSrc from '../../shaders/argmax_rows.wgsl?raw';
import specAcceptSrc from '../../shaders/spec_accept.wgsl?raw';

/** Wrappers for the token-choice kernels (sample.wgsl, argmax_rows.wgsl, spec_accept.wgsl). */

export interface SampleOpArgs {
  params: GPUBuffer;
  logits: GPUBuffer;
  out: GPUBuffer;
  scratch: GPUBuffer;
  counts: GPUBuffer;
  bias: GPUBuffer;
  V: number;
  /** Write the kept distribution into the scratch rows. */
  probs: boolean;
  /** Draw a token (false: out[r] = the argmax of the penalized row). */
  sample: boolean;
  /** counts[token] += 1 after the draw (single-row decode). */
  updateCounts: boolean;
  /** Rows of this dispatch for a step (1 when decoding; headRows when verifying). */
  rows: (s: StepShape) => number;
}

/** sample.wgsl's workgroup size: 256 threads for real vocabularies, 64 for tiny ones (fewer idle lanes per barrier). */
export function sampleWorkgroup(V: number): number {
  return V <= 4096 ? 64 : 256;
}

export function sampleOp(rt: Runtime, a: SampleOpArgs, label = 'sample'): Op {
  const p = rt.pipeline('sample', `${rngSrc}\n${sampleSrc}`, 'main', {
    V: a.V,
    PROBS: a.probs,
    SAMPLE: a.sample,
    COUNTS: a.updateCounts,
    WG: sampleWorkgroup(a.V),
  });
  return rt.op(label, p, [a.params, a.logits, a.out, a.scratch, a.counts, a.bias], (s) => [a.rows(s), 1, 1] as const);
}

/** out[r] = argmax of logits row headRows − rows + r, for the last `rows(s)` rows. */
export function argmaxRowsOp(rt: Runtime, a: { logits: GPUBuffer; out: GPUBuffer; V: number; rows: (s: StepShape) => number }, label = 'argmax_rows'): Op {
  const p = rt.pipeline('argmax_rows', argmaxRowsSrc, 'main', { V: a.V });
  return rt.op(label, p, [a.logits, a.out], (s) => [a.rows(s), 1, 1] as const);
}

/** Speculative sampling's accept / residual-draw step over k = step.T − 1 drafted tokens. */
export function specAcceptOp(
  rt: Runtime,
  a: { params: GPUBuffer; p: GPUBuffer; q: GPUBuffer; tokens: GPUBuffer; out: GPUBuffer; V: number },
  label = 'spec_accept',
): Op {
  const pl = rt.pipeline('spec_accept', `${rngSrc}\n${specAcceptSrc}`, 'main', { V: a.V });
  return rt.op(label, pl, [a.params, a.p, a.q, a.tokens, a.out], () => [1, 1, 1] as const);
}
