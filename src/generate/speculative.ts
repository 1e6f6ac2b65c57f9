import { NibbleError } from '../errors.ts';
import type { Op, StepShape } from '../kernels/runtime.ts';
import { argmaxRowsOp, specAcceptOp } from '../kernels/sample.ts';
import type { LlamaModel } from '../model/llama.ts';
import type { LoopControl, LoopResult, TokenSink } from './decode.ts';
import { GpuSampler } from './sampler.ts';
import { isGreedy, isPlainArgmax, type ResolvedSampling } from './sampling.ts';
import { Sequence } from './sequence.ts';

/** Speculative decoding statistics of one generation. */
export interface SpeculativeStats {
  /** Draft tokens proposed per round (the configured k). */
  draftTokens: number;
  /** Rounds: one batched target pass each (verifying up to k drafted tokens). */
  targetPasses: number;
  proposed: number;
  accepted: number;
  /** accepted / proposed (1 when every proposal was accepted). */
  acceptanceRate: number;
  /** Tokens produced per target pass (≤ k + 1); plain decoding is 1. */
  tokensPerTargetPass: number;
}

/**
 * Speculative decoding (Leviathan et al. 2023, Chen et al. 2023; the gpt-fast recipe): a cheap draft
 * model proposes k tokens one step at a time, the target checks all of them in one batched pass of
 * k + 1 positions, and the longest acceptable prefix plus one target token is kept. Both models live
 * on the same GPUDevice (same Runtime), so the drafted ids go from the draft's tokens buffer into the
 * target's with GPU copies; a round costs one CPU round trip, which reads only token ids:
 *   greedy   — the target's argmax of each of the k + 1 rows (argmax_rows.wgsl, or sample.wgsl's
 *              per-row argmax when logit bias is on) and the k drafted ids; the CPU keeps drafted
 *              tokens while they equal the target's argmax. The output is the target's own greedy
 *              output (up to float rounding between the batched and the one-row matmul: an argmax tie
 *              closer than that rounding could resolve differently).
 *   sampling — the draft draws with sample.wgsl and keeps its distribution q per position, the target
 *              computes its distributions p for the k + 1 rows, and spec_accept.wgsl applies the
 *              acceptance rule (accept with min(1, p/q), else draw from norm(max(0, p − q)); a bonus
 *              draw from p after k acceptances) on the GPU: 2 + k ids cross back, never probabilities.
 *              Noise is keyed by (seed, position) like plain sampling, so a draft that is the target
 *              itself reproduces plain sampling's tokens.
 * Rejected positions are rolled back in both caches by bookkeeping only: `cached` is cut, and the
 * k/v beyond it are overwritten by later passes. Penalties are not supported here (their counts
 * would need rolling back too): the engine decodes plainly when they are set.
 */
export class Speculator {
  readonly target: LlamaModel;
  readonly draft: LlamaModel;
  readonly k: number;
  /** Adapt the proposals per round to the acceptance: +1 after a full acceptance, else n + 1 (≤ k). */
  readonly adaptive: boolean;
  readonly targetSeq: Sequence;
  readonly draftSeq: Sequence;
  readonly targetSampler: GpuSampler;
  readonly draftSampler: GpuSampler;
  private readonly qRows: GPUBuffer;
  private readonly picks: GPUBuffer;
  private readonly result: GPUBuffer;
  private readonly staging: GPUBuffer;
  private readonly argmaxRows: Op;
  private readonly accept: Op;

  constructor(target: LlamaModel, draft: LlamaModel, targetSeq: Sequence, targetSampler: GpuSampler, k: number, adaptive = false) {
    if (target.rt !== draft.rt) throw new Error('target and draft must share one Runtime');
    const V = target.cfg.vocabSize;
    if (draft.cfg.vocabSize !== V) {
      throw new NibbleError('bad-argument', `the draft's vocabulary (${draft.cfg.vocabSize}) differs from the target's (${V})`);
    }
    if (k + 1 > Math.min(target.maxLogitRows, target.maxBatch) || targetSampler.rows < k + 1) {
      throw new NibbleError('bad-argument', `draft tokens ${k} needs ${k + 1} logit rows; the target allows ${Math.min(target.maxLogitRows, target.maxBatch)}`);
    }
    this.target = target;
    this.draft = draft;
    this.k = k;
    this.adaptive = adaptive;
    this.targetSeq = targetSeq;
    this.draftSeq = new Sequence(draft);
    this.targetSampler = targetSampler;
    const rt = target.rt;
    this.draftSampler = new GpuSampler(rt, V, 1);
    this.qRows = rt.buffer(Math.max(1, k) * V * 4, 'spec_q');
    this.picks = rt.buffer((k + 1) * 4, 'spec_picks');
    this.result = rt.buffer(16, 'spec_result');
    this.staging = rt.device.createBuffer({ label: 'spec_readback', size: Math.ceil(((2 * k + 2) * 4) / 16) * 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const rows = (s: StepShape) => s.headRows;
    this.argmaxRows = argmaxRowsOp(rt, { logits: target.logits, out: this.picks, V, rows });
    this.accept = specAcceptOp(rt, { params: targetSampler.params, p: targetSampler.scratch, q: this.qRows, tokens: target.tokens, out: this.result, V });
  }

  /**
   * Generates from `ids` with the draft's help. `s` must not use penalties. The target sampler is
   * configured by the caller (the engine); the draft's sampler is configured here.
   */
  async run(ids: number[], s: ResolvedSampling, sink: TokenSink, c: LoopControl): Promise<LoopResult & { stats: SpeculativeStats }> {
    const t = this.target;
    const d = this.draft;
    const greedy = isGreedy(s);
    const plain = isPlainArgmax(s);
    this.draftSampler.configure(s, ids);
    const targetPick = plain ? undefined : this.targetSampler.op('decode', t.logits, t.tokens);
    const draftPick = plain ? undefined : this.draftSampler.op('draft', d.logits, d.tokens);
    const verifyOps: Op[] = plain
      ? [this.argmaxRows]
      : greedy
        ? [this.targetSampler.op('verify', t.logits, this.picks)]
        : [this.targetSampler.op('verify', t.logits, this.picks), this.accept];
    const stats = { draftTokens: this.k, targetPasses: 0, proposed: 0, accepted: 0, acceptanceRate: 0, tokensPerTargetPass: 0 };
    const done = (reason: LoopResult['reason'], firstTokenAt: number) => {
      stats.acceptanceRate = stats.proposed ? stats.accepted / stats.proposed : 0;
      stats.tokensPerTargetPass = stats.targetPasses ? (stats.accepted + stats.targetPasses) / stats.targetPasses : 0;
      return { reason, firstTokenAt, stats };
    };

    // prompt: the target picks the first token; the draft only fills its cache
    const first = this.targetSeq.prefill(ids, targetPick)!;
    this.draftSeq.prefill(ids, null);
    let x = await first;
    // the draft's prompt pass belongs to the time to the first token, not to the decoding after it
    await t.rt.device.queue.onSubmittedWorkDone();
    const firstTokenAt = performance.now();
    c.check();
    if (c.signal?.aborted) return done('abort', firstTokenAt);
    let delivered = 1;
    let r = sink(x);
    if (r) return done(r, firstTokenAt);

    const V = t.cfg.vocabSize;
    const rt = t.rt;
    const dev = rt.device;
    let kNow = this.k;
    for (;;) {
      const P = this.targetSeq.cached.length; // x sits at position P
      const room = t.ctx - 2 - P; // the round may produce tokens up to position ctx − 1
      if (room < 0) return done('length', firstTokenAt);
      const kr = Math.max(0, Math.min(kNow, c.maxNewTokens - delivered - 1, room));
      dev.queue.writeBuffer(t.tokens, 0, Uint32Array.of(x));
      if (kr > 0) {
        // the draft first catches up on tokens it has not seen (the last round's full acceptance)
        const feed = [...this.targetSeq.cached.slice(this.draftSeq.cached.length), x];
        while (feed.length > d.maxBatch) {
          const chunk = feed.splice(0, d.maxBatch);
          dev.queue.writeBuffer(d.tokens, 0, new Uint32Array(chunk));
          const s0 = { T: chunk.length, pos0: this.draftSeq.cached.length, headRows: 1 };
          rt.run(d.ops(s0, { head: false, argmax: false }), s0);
          this.draftSeq.cached.push(...chunk);
        }
        dev.queue.writeBuffer(d.tokens, 0, new Uint32Array(feed));
        for (let i = 1; i <= kr; i++) {
          const st = i === 1 ? { T: feed.length, pos0: this.draftSeq.cached.length, headRows: 1 } : { T: 1, pos0: P + i - 1, headRows: 1 };
          rt.setStep(st);
          const enc = dev.createCommandEncoder();
          const ops = d.ops(st, { head: true, argmax: !draftPick });
          if (draftPick) ops.push(draftPick);
          rt.record(enc, ops, st);
          enc.copyBufferToBuffer(d.tokens, 0, t.tokens, 4 * i, 4);
          if (!greedy) enc.copyBufferToBuffer(this.draftSampler.scratch, 0, this.qRows, (i - 1) * V * 4, V * 4);
          dev.queue.submit([enc.finish()]);
        }
        this.draftSeq.cached.push(...feed);
      }
      // the target verifies x, d_1..d_kr in one pass of kr + 1 rows
      const sv = { T: kr + 1, pos0: P, headRows: kr + 1 };
      rt.setStep(sv);
      const enc = dev.createCommandEncoder();
      rt.record(enc, [...t.ops(sv, { head: true, argmax: false }), ...verifyOps], sv);
      if (greedy) enc.copyBufferToBuffer(this.picks, 0, this.staging, 0, (kr + 1) * 4);
      else enc.copyBufferToBuffer(this.result, 0, this.staging, 0, 8);
      const draftsAt = greedy ? kr + 1 : 2;
      if (kr > 0) enc.copyBufferToBuffer(t.tokens, 4, this.staging, draftsAt * 4, kr * 4);
      dev.queue.submit([enc.finish()]);
      await this.staging.mapAsync(GPUMapMode.READ);
      const got = new Uint32Array(this.staging.getMappedRange().slice(0));
      this.staging.unmap();
      c.check();
      stats.targetPasses++;
      const drafts = Array.from(got.subarray(draftsAt, draftsAt + kr));
      let n: number;
      let next: number;
      if (greedy) {
        n = 0;
        while (n < kr && drafts[n] === got[n]) n++;
        next = got[n];
      } else {
        n = got[0];
        next = got[1];
      }
      stats.proposed += kr;
      stats.accepted += n;
      if (this.adaptive && kr > 0) kNow = n === kr ? Math.min(this.k, kNow + 1) : Math.max(1, n + 1);
      // keep x and the accepted drafts; the draft saw x and d_1..d_{kr-1}
      this.targetSeq.cached.push(x, ...drafts.slice(0, n));
      if (kr > 0) this.draftSeq.cached.push(...drafts.slice(0, Math.min(n, kr - 1)));
      if (c.signal?.aborted) return done('abort', firstTokenAt);
      for (const id of [...drafts.slice(0, n), next]) {
        r = sink(id);
        delivered++;
        if (r) return done(r, firstTokenAt);
      }
      if (delivered >= c.maxNewTokens) return done('length', firstTokenAt);
      x = next;
    }
  }

  destroy(): void {
    this.draftSeq.destroy();
    this.draftSampler.destroy();
    this.qRows.destroy();
    this.picks.destroy();
    this.result.destroy();
    this.staging.destroy();
  }
}
