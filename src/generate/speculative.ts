import { NibbleError } from '../errors.ts';
import { bufferSize, type Op, type StepShape } from '../kernels/runtime.ts';
import { argmaxRowsOp, specAcceptOp } from '../kernels/sample.ts';
import type { LoopControl, LoopResult, TokenSink } from './decode.ts';
import type { PassModel } from './model.ts';
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
 * With `pipeline`, the draft's first pass of the next round (the last draft token and the target's
 * bonus token, copied on the GPU) is queued right after the verify pass, before its readback, as if
 * the round were accepted whole; the CPU round trip then overlaps GPU work. When the round is not
 * accepted whole, that pass is rolled back like a rejected draft (and the next round does not
 * queue one).
 * Rejected positions are rolled back in both caches by bookkeeping only (Sequence.rollback): the
 * k/v beyond the kept tokens are overwritten by later passes. Penalties are not supported here (their counts
 * would need rolling back too): the engine decodes plainly when they are set.
 */
/**
 * The checks of a draft against its target, made once when the engine loads (from the configs and
 * the load's dimensions, before any weight is downloaded): the same vocabulary, and k + 1 logit rows
 * per verify pass.
 */
export function checkDraft(target: { vocabSize: number; logitRows: number }, draftVocabSize: number, k: number): void {
  if (draftVocabSize !== target.vocabSize) {
    throw new NibbleError('bad-argument', `the draft's vocabulary (${draftVocabSize}) differs from the target's (${target.vocabSize})`);
  }
  if (k + 1 > target.logitRows) {
    throw new NibbleError('bad-argument', `draft tokens ${k} needs ${k + 1} logit rows per pass; this load allows ${target.logitRows} (maxLogitRows / maxBatch)`);
  }
}

export class Speculator {
  readonly target: PassModel;
  readonly draft: PassModel;
  readonly k: number;
  /** Adapt the proposals per round to the acceptance: +1 after a full acceptance, else n + 1 (≤ k). */
  readonly adaptive: boolean;
  /** Queue the next round's first draft pass before the verify's readback (see the class comment). */
  readonly pipeline: boolean;
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

  /** target and draft share one Runtime; checkDraft has passed (the engine's load). */
  constructor(target: PassModel, draft: PassModel, targetSeq: Sequence, targetSampler: GpuSampler, k: number, adaptive = false, pipeline = false) {
    this.target = target;
    this.draft = draft;
    this.k = k;
    this.adaptive = adaptive;
    this.pipeline = pipeline;
    this.targetSeq = targetSeq;
    this.draftSeq = new Sequence(draft);
    this.targetSampler = targetSampler;
    const rt = target.rt;
    const V = target.cfg.vocabSize;
    this.draftSampler = new GpuSampler(rt, V, 1);
    this.qRows = rt.buffer(Math.max(1, k) * V * 4, 'spec_q');
    this.picks = rt.buffer((k + 1) * 4, 'spec_picks');
    this.result = rt.buffer(16, 'spec_result');
    this.staging = rt.device.createBuffer({ label: 'spec_readback', size: bufferSize((2 * k + 2) * 4), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
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
    const greedy = isGreedy(s);
    const plain = isPlainArgmax(s);
    this.draftSampler.configure(s, ids);
    const targetPick = plain ? undefined : this.targetSampler.op('decode', t.logits, t.tokens);
    const draftPick = plain ? undefined : this.draftSampler.op('draft', this.draft.logits, this.draft.tokens);
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
    c.check();
    if (c.signal?.aborted) return done('abort', performance.now());
    let delivered = 1;
    let r = sink(x); // delivered at once; the draft's prompt pass may still be running
    // that pass belongs to the prompt phase (timings), not to the decoding after it
    await t.rt.device.queue.onSubmittedWorkDone();
    const firstTokenAt = performance.now();
    if (r) return done(r, firstTokenAt);

    let kNow = this.k;
    // proposals of this round whose first draft pass the last round queued (0: none)
    let queued = 0;
    let lastWhole = true;
    // a round's proposals with x at position `at`, `given` tokens delivered and up to `k` per round
    const proposals = (at: number, given: number, k: number) => Math.max(0, Math.min(k, c.maxNewTokens - given - 1, t.contextLength - 2 - at));
    for (;;) {
      const P = this.targetSeq.length; // x sits at position P
      const room = t.contextLength - 2 - P; // the round may produce tokens up to position ctx − 1
      if (room < 0) return done('length', firstTokenAt);
      const kr = queued || proposals(P, delivered, kNow);
      if (kr > 0) this.propose(x, kr, greedy, draftPick, queued > 0);
      // the next round's proposals if this one is accepted whole (its draft pass is queued now)
      const kWhole = this.adaptive ? Math.min(this.k, kNow + 1) : kNow;
      const ahead = this.pipeline && lastWhole && kr > 0 && delivered + kr + 1 < c.maxNewTokens ? proposals(P + kr + 1, delivered + kr + 1, kWhole) : 0;
      const { n, next, drafts } = await this.verify(x, kr, greedy, verifyOps, ahead > 0 ? draftPick ?? null : undefined);
      c.check();
      stats.targetPasses++;
      stats.proposed += kr;
      stats.accepted += n;
      lastWhole = n === kr;
      queued = ahead > 0 && lastWhole ? ahead : 0;
      if (this.adaptive && kr > 0) kNow = n === kr ? Math.min(this.k, kNow + 1) : Math.max(1, n + 1);
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

  /**
   * The draft catches up on the tokens it has not seen (the last round's full acceptance) and x,
   * then proposes d_1..d_kr one step at a time; each id goes from its tokens[0] into the target's
   * tokens[i] (and, sampling, its distribution into q row i − 1) on the GPU.
   */
  private propose(x: number, kr: number, greedy: boolean, pick: Op | undefined, firstQueued: boolean): void {
    const d = this.draft;
    const V = d.cfg.vocabSize;
    // firstQueued: the last round's verify queued pass 1 (x and the draft before it are in the cache, d_1 in tokens)
    const feed = firstQueued ? [] : [...this.targetSeq.ids.slice(this.draftSeq.length), x];
    while (feed.length > d.maxBatch) this.draftSeq.pass(feed.splice(0, d.maxBatch));
    for (let i = firstQueued ? 2 : 1; i <= kr; i++) {
      this.draftSeq.pass(i === 1 ? feed : [], {
        T: i === 1 ? feed.length : 1,
        headRows: 1,
        argmax: !pick,
        ops: pick ? [pick] : [],
        encode: (enc) => {
          enc.copyBufferToBuffer(d.tokens, 0, this.target.tokens, 4 * i, 4);
          if (!greedy) enc.copyBufferToBuffer(this.draftSampler.scratch, 0, this.qRows, (i - 1) * V * 4, V * 4);
        },
      });
    }
  }

  /**
   * The target verifies x, d_1..d_kr in one pass of kr + 1 rows and reads back its choices (2 + kr
   * ids). Both sequences keep x and the accepted drafts and roll the rejected ones back. With
   * `ahead` (the draft's pick op, null for argmax) the next round's first draft pass is queued
   * before the readback: d_kr and the target's next token (rows 0 and 1 of the draft's tokens).
   */
  private async verify(x: number, kr: number, greedy: boolean, verifyOps: Op[], ahead?: Op | null): Promise<{ n: number; next: number; drafts: number[] }> {
    const draftsAt = greedy ? kr + 1 : 2;
    const d = this.draft;
    this.targetSeq.pass([x], {
      T: kr + 1,
      headRows: kr + 1,
      ops: verifyOps,
      encode: (enc) => {
        if (greedy) enc.copyBufferToBuffer(this.picks, 0, this.staging, 0, (kr + 1) * 4);
        else enc.copyBufferToBuffer(this.result, 0, this.staging, 0, 8);
        if (kr > 0) enc.copyBufferToBuffer(this.target.tokens, 4, this.staging, draftsAt * 4, kr * 4);
        // the token after d_kr if every draft is accepted: the argmax of row kr, or the bonus draw
        if (ahead !== undefined) enc.copyBufferToBuffer(greedy ? this.picks : this.result, greedy ? kr * 4 : 4, d.tokens, 4, 4);
      },
    });
    if (ahead !== undefined) {
      const V = d.cfg.vocabSize;
      this.draftSeq.pass([], {
        T: 2,
        headRows: 1,
        argmax: !ahead,
        ops: ahead ? [ahead] : [],
        encode: (enc) => {
          enc.copyBufferToBuffer(d.tokens, 0, this.target.tokens, 4, 4);
          if (!greedy) enc.copyBufferToBuffer(this.draftSampler.scratch, 0, this.qRows, 0, V * 4);
        },
      });
    }
    await this.staging.mapAsync(GPUMapMode.READ);
    const got = new Uint32Array(this.staging.getMappedRange().slice(0));
    this.staging.unmap();
    const drafts = Array.from(got.subarray(draftsAt, draftsAt + kr));
    let n: number;
    let next: number;
    if (greedy) {
      n = 0;
      while (n < kr && drafts[n] === got[n]) n++;
      next = got[n]!;
    } else {
      n = got[0]!;
      next = got[1]!;
    }
    // the target saw x, d_1..d_kr; the draft x (resolved) and d_1..d_{kr-1}
    this.targetSeq.resolve(drafts);
    this.targetSeq.rollback(kr - n);
    if (kr > 0) {
      this.draftSeq.resolve(drafts.slice(0, kr - 1));
      // the queued pass saw d_kr and next: kept when every draft was accepted, else rolled back too
      if (ahead !== undefined && n === kr) this.draftSeq.resolve([drafts[kr - 1]!, next]);
      else this.draftSeq.rollback(kr - 1 - Math.min(n, kr - 1) + (ahead !== undefined ? 2 : 0));
    }
    return { n, next, drafts };
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
