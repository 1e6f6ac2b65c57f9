import { NibbleError, show } from '../errors.ts';
import type { Op } from '../kernels/runtime.ts';
import type { LlamaModel } from '../model/llama.ts';

/** Token ids: a non-empty array of integers inside the vocabulary (else a bad-argument NibbleError). */
export function checkTokenIds(ids: unknown, what: string, vocabSize: number): asserts ids is number[] {
  const bad = (msg: string): never => {
    throw new NibbleError('bad-argument', msg);
  };
  if (!Array.isArray(ids)) bad(`${what} must be an array of token ids, got ${show(ids)}`);
  const list = ids as unknown[];
  if (list.length === 0) bad(`${what} is empty: give at least one token id`);
  for (let i = 0; i < list.length; i++) {
    const id = list[i];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocabSize) {
      bad(`${what}[${i}] must be a token id (an integer in 0..${vocabSize - 1}), got ${show(id)}`);
    }
  }
}

/**
 * One sequence in the model's KV cache: which tokens are cached at positions 0..length-1, and
 * the passes that extend it. Only token ids cross between CPU and GPU: prompt ids are written
 * in, and each decode step reads back the 4-byte id its pick op (argmax or the sampler) chose.
 *
 * A pick op writes the chosen id into tokens[0], which is also the next step's embedding input,
 * so step n + 1 can be queued before step n's id is read. Tokens enter `cached` only once a
 * queued step has consumed them (its k/v are written in queue order before any later pass).
 */
export class Sequence {
  readonly model: LlamaModel;
  /** Token ids whose k/v are in the cache, in order. */
  cached: number[] = [];
  /** Tokens of the last prefill's prompt that were already cached (their pass was skipped). */
  reused = 0;
  private staging: GPUBuffer[] = [];
  private next = 0;

  constructor(model: LlamaModel) {
    this.model = model;
    for (let i = 0; i < 4; i++) {
      this.staging.push(
        model.rt.device.createBuffer({
          label: `token_readback${i}`,
          size: 16,
          usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        }),
      );
    }
  }

  /**
   * Runs the prompt through the model from the longest prefix already in the cache (chat turns
   * reuse it), in batched passes of up to maxBatch tokens, and submits the choice of the next
   * token: `pick` (a sampler op writing tokens[0]), argmax when undefined, or no LM head at all
   * when null (the result is then null). Returns a promise of that token id.
   */
  prefill(ids: number[], pick?: Op | null): Promise<number> | null {
    const m = this.model;
    checkTokenIds(ids, 'the prompt\'s token ids', m.cfg.vocabSize);
    if (ids.length > m.ctx) {
      throw new NibbleError('context-overflow', `the prompt has ${ids.length} tokens but the context holds ${m.ctx}`);
    }
    this.pending = 0;
    let start = 0;
    while (start < this.cached.length && start < ids.length && this.cached[start] === ids[start]) start++;
    if (start === ids.length && pick !== null) start--; // recompute the last token to get its logits
    this.reused = start;
    this.cached = ids.slice(0, start);
    const head = pick !== null;
    const device = m.rt.device;
    let result: (() => Promise<number>) | null = null;
    for (let p = start; p < ids.length; p += m.maxBatch) {
      const chunk = ids.slice(p, Math.min(ids.length, p + m.maxBatch));
      const last = p + chunk.length === ids.length;
      device.queue.writeBuffer(m.tokens, 0, new Uint32Array(chunk));
      const s = { T: chunk.length, pos0: p, headRows: 1 };
      m.rt.setStep(s);
      const enc = device.createCommandEncoder();
      const ops = m.ops(s, { head: last && head, argmax: last && head && pick === undefined });
      if (last && pick) ops.push(pick);
      m.rt.record(enc, ops, s);
      if (last && head) result = this.readToken(enc);
      device.queue.submit([enc.finish()]);
      this.cached.push(...chunk);
    }
    return result ? result() : null;
  }

  /**
   * Submits one decode step for the token the previous pick left in tokens[0] (the id the caller
   * will append with `accept`), without waiting: the next step can be queued before this one's id
   * is read. `pick` as in prefill (undefined: argmax).
   */
  decodeStep(pick?: Op): Promise<number> {
    const m = this.model;
    const pos = this.cached.length + this.pending;
    if (pos >= m.ctx) throw new NibbleError('context-overflow', `the context of ${m.ctx} tokens is full`);
    const s = { T: 1, pos0: pos, headRows: 1 };
    m.rt.setStep(s);
    const enc = m.rt.device.createCommandEncoder();
    const ops = m.ops(s, { head: true, argmax: pick === undefined });
    if (pick) ops.push(pick);
    m.rt.record(enc, ops, s);
    const read = this.readToken(enc);
    m.rt.device.queue.submit([enc.finish()]);
    this.pending++;
    return read();
  }

  /** Decode steps submitted whose input token the caller has not yet appended with accept(). */
  private pending = 0;

  /**
   * Records a generated token. It joins `cached` only if a submitted step consumed it (that step
   * wrote its k/v); the last token of a generation, never fed back, stays out of the cache.
   */
  accept(id: number): void {
    if (this.pending > 0) {
      this.cached.push(id);
      this.pending--;
    }
  }

  /** Forgets queued steps after a stop (their k/v lie beyond `cached` and get overwritten). */
  async dropPending(): Promise<void> {
    this.pending = 0;
    await this.settle();
  }

  reset(): void {
    this.cached = [];
    this.pending = 0;
  }

  /** Keeps only the first n cached tokens (a rollback: later k/v are overwritten by later passes). */
  truncate(n: number): void {
    if (n < this.cached.length) this.cached.length = n;
  }

  /** Waits for every outstanding token readback (so their staging buffers can be reused). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
  }

  private inflight = new Set<Promise<number>>();

  /** Records the copy of tokens[0] into the next staging buffer; call the result after submit. */
  private readToken(enc: GPUCommandEncoder): () => Promise<number> {
    const buf = this.staging[this.next];
    this.next = (this.next + 1) % this.staging.length;
    enc.copyBufferToBuffer(this.model.tokens, 0, buf, 0, 4);
    return () => this.mapToken(buf);
  }

  private mapToken(buf: GPUBuffer): Promise<number> {
    const p = buf.mapAsync(GPUMapMode.READ).then(() => {
      const id = new Uint32Array(buf.getMappedRange(0, 4))[0];
      buf.unmap();
      return id;
    });
    this.inflight.add(p);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }

  destroy(): void {
    for (const b of this.staging) b.destroy();
  }
}
