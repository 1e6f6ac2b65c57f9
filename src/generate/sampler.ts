import type { Op, Runtime, StepShape } from '../kernels/runtime.ts';
import { sampleOp } from '../kernels/sample.ts';
import { SAMPLE_PARAMS_BYTES, encodeSampleParams } from '../kernels/uniforms.ts';
import { hasPenalties, MAX_LOGIT_BIAS, type ResolvedSampling } from './sampling.ts';

export type SamplerVariant =
  /** one row → out[0], counts updated (plain decoding) */
  | 'decode'
  /** one row → out[0] and the kept distribution in scratch row 0 (the draft of speculative sampling) */
  | 'draft'
  /** headRows rows → the kept distribution in scratch rows, no draw (the target's verify pass) */
  | 'verify';

/**
 * The GPU state of sample.wgsl for one model: the Params uniform, the per-token counts the
 * penalties read (seeded from the prompt once per request, then kept up to date by the kernel),
 * the logit-bias list and the per-row scratch. Everything is allocated once; `configure` writes
 * a request's settings (a few bytes, plus the counts when penalties are on) before its first step.
 */
export class GpuSampler {
  readonly rt: Runtime;
  readonly V: number;
  readonly rows: number;
  readonly params: GPUBuffer;
  readonly counts: GPUBuffer;
  readonly scratch: GPUBuffer;
  readonly bias: GPUBuffer;
  private ops: Array<{ variant: SamplerVariant; logits: GPUBuffer; out: GPUBuffer; op: Op }> = [];
  private buffers: GPUBuffer[];

  constructor(rt: Runtime, V: number, rows = 1) {
    this.rt = rt;
    this.V = V;
    this.rows = rows;
    this.params = rt.device.createBuffer({ label: 'sample_params', size: SAMPLE_PARAMS_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    this.counts = rt.buffer(V * 4, 'sample_counts');
    this.scratch = rt.buffer(rows * V * 4, 'sample_scratch');
    this.bias = rt.buffer(MAX_LOGIT_BIAS * 8, 'sample_bias');
    this.buffers = [this.params, this.counts, this.scratch, this.bias];
  }

  /** Writes a request's settings; `contextIds` (the prompt) seed the penalty counts. */
  configure(s: ResolvedSampling, contextIds: readonly number[]): void {
    const penalize = hasPenalties(s);
    const q = this.rt.device.queue;
    q.writeBuffer(
      this.params,
      0,
      encodeSampleParams({
        temperature: s.temperature,
        topK: s.topK,
        topP: s.topP,
        minP: s.minP,
        repetitionPenalty: s.repetitionPenalty,
        presencePenalty: s.presencePenalty,
        frequencyPenalty: s.frequencyPenalty,
        seed: s.seed,
        nBias: s.logitBias.length,
        penalize: penalize ? 1 : 0,
      }),
    );
    if (s.logitBias.length) {
      const b = new ArrayBuffer(s.logitBias.length * 8);
      const bu = new Uint32Array(b);
      const bf = new Float32Array(b);
      s.logitBias.forEach(([id, v], i) => {
        bu[2 * i] = id;
        bf[2 * i + 1] = Math.max(-3e38, Math.min(3e38, v));
      });
      q.writeBuffer(this.bias, 0, b);
    }
    if (penalize) {
      const c = new Uint32Array(this.V);
      for (const id of contextIds) if (id >= 0 && id < this.V) c[id]++;
      q.writeBuffer(this.counts, 0, c);
    }
  }

  /** The sampler op reading `logits` and writing token ids to `out` (built once per variant). */
  op(variant: SamplerVariant, logits: GPUBuffer, out: GPUBuffer): Op {
    let op = this.ops.find((o) => o.variant === variant && o.logits === logits && o.out === out)?.op;
    if (!op) {
      const rows = variant === 'verify' ? (s: StepShape) => s.headRows : () => 1;
      op = sampleOp(
        this.rt,
        {
          params: this.params,
          logits,
          out,
          scratch: this.scratch,
          counts: this.counts,
          bias: this.bias,
          V: this.V,
          probs: variant !== 'decode',
          sample: variant !== 'verify',
          updateCounts: variant === 'decode',
          rows,
        },
        `sample:${variant}`,
      );
      this.ops.push({ variant, logits, out, op });
    }
    return op;
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
    this.buffers = [];
  }
}
