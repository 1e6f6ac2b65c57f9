import { NibbleError, show } from '../errors.ts';
import type { Op } from '../kernels/runtime.ts';
import type { PassModel } from './model.ts';

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

/** One forward pass of a Sequence (see Sequence.pass). */
export interface PassOptions {
  /** Rows of the pass (default: ids.length); rows past the given ids were placed in `tokens` on the GPU. */
  T?: number;
  /** Logit rows of the LM head (the last rows of the pass); 0 (default): no head. */
  headRows?: number;
  /** Greedy choice of the next token into tokens[0] (needs the head). */
  argmax?: boolean;
  /** Ops recorded after the model's (a sampler's pick, the speculator's verify ops). */
  ops?: Op[];
  /** Commands encoded after the pass, in the same submit (copies of tokens or logits). */
  encode?: (enc: GPUCommandEncoder) => void;
  /** Read back tokens[0] after the pass (the id its pick chose). */
  readToken?: boolean;
}

/**
 * One sequence in the model's KV cache, and the only code that runs a forward pass (`pass`). It
 * knows which tokens are cached at positions 0..length-1; rollback(n) forgets the last n (their
 * k/v are overwritten by later passes: rejected drafts, a stop). Only token ids cross between CPU
 * and GPU: prompt ids are written in, and a decode step reads back the 4-byte id its pick op
 * (argmax or the sampler) chose.
 *
 * A pick op writes the chosen id into tokens[0], which is also the next step's embedding input, so
 * step n + 1 can be queued before step n's id is read: such a position is *unresolved* until its
 * id is known (accept / resolve). Positions are resolved in order; known ids always precede them.
 */
export class Sequence {
  readonly model: PassModel;
  /** Token ids whose k/v are in the cache, in order (the resolved positions). */
  private cached: number[] = [];
  /** Positions after `cached` whose k/v a submitted pass writes but whose ids the CPU does not know yet. */
  private unresolved = 0;
  /** Tokens of the last prefill's prompt that were already cached (their pass was skipped). */
  reused = 0;
  private staging: GPUBuffer[] = [];
  private next = 0;

  constructor(model: PassModel) {
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

  /** Positions filled (resolved or not): where the next pass starts. */
  get length(): number {
    return this.cached.length + this.unresolved;
  }

  /** The resolved token ids, in order. */
  get ids(): readonly number[] {
    return this.cached;
  }

  /**
   * Submits one forward pass over positions length.. (the given ids, then rows whose tokens are
   * already in `tokens` on the GPU, which stay unresolved). With `readToken` it returns the promise
   * of the id tokens[0] holds after the pass.
   */
  pass(ids: readonly number[], o: PassOptions = {}): Promise<number> | null {
    const m = this.model;
    const T = o.T ?? ids.length;
    const pos0 = this.length;
    if (T < 1 || T > m.maxBatch || ids.length > T) throw new NibbleError('bad-argument', `a pass of ${T} rows (${ids.length} ids given; at most ${m.maxBatch} rows)`);
    if (ids.length > 0 && this.unresolved > 0) throw new NibbleError('bad-argument', 'a pass with known ids after unresolved positions');
    if (pos0 + T > m.contextLength) throw new NibbleError('context-overflow', `the context of ${m.contextLength} tokens is full`);
    const headRows = o.headRows ?? 0;
    if (headRows > Math.min(T, m.maxLogitRows)) throw new NibbleError('bad-argument', `${headRows} logit rows of a pass of ${T} (at most ${m.maxLogitRows})`);
    const device = m.rt.device;
    if (ids.length > 0) device.queue.writeBuffer(m.tokens, 0, new Uint32Array(ids));
    const s = { T, pos0, headRows: Math.max(1, headRows) };
    m.rt.setStep(s);
    const enc = device.createCommandEncoder();
    const ops = m.ops(s, { head: headRows > 0, argmax: !!o.argmax }); // a fresh list: extend it in place
    if (o.ops) ops.push(...o.ops);
    m.rt.record(enc, ops, s);
    o.encode?.(enc);
    const read = o.readToken ? this.readToken(enc) : null;
    device.queue.submit([enc.finish()]);
    this.cached.push(...ids);
    this.unresolved += T - ids.length;
    return read ? read() : null;
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
    if (ids.length > m.contextLength) {
      throw new NibbleError('context-overflow', `the prompt has ${ids.length} tokens but the context holds ${m.contextLength}`);
    }
    this.unresolved = 0;
    let start = 0;
    while (start < this.cached.length && start < ids.length && this.cached[start] === ids[start]) start++;
    if (start === ids.length && pick !== null) start--; // recompute the last token to get its logits
    this.reused = start;
    this.rollback(this.cached.length - start);
    const head = pick !== null;
    let result: Promise<number> | null = null;
    for (let p = start; p < ids.length; p += m.maxBatch) {
      const chunk = ids.slice(p, Math.min(ids.length, p + m.maxBatch));
      const last = p + chunk.length === ids.length && head;
      result = this.pass(chunk, { headRows: last ? 1 : 0, argmax: last && pick === undefined, ops: last && pick ? [pick] : [], readToken: last });
    }
    return result;
  }

  /**
   * Submits one decode step for the token the previous pick left in tokens[0] (the id the caller
   * will append with `accept`), without waiting: the next step can be queued before this one's id
   * is read. `pick` as in prefill (undefined: argmax).
   */
  decodeStep(pick?: Op): Promise<number> {
    return this.pass([], { T: 1, headRows: 1, argmax: pick === undefined, ops: pick ? [pick] : [], readToken: true })!;
  }

  /**
   * Records a generated token. It joins the cache only if a submitted step consumed it (that step
   * wrote its k/v); the last token of a generation, never fed back, stays out.
   */
  accept(id: number): void {
    if (this.unresolved > 0) this.resolve([id]);
  }

  /** The ids of the first unresolved positions, now known (drafts read back). */
  resolve(ids: readonly number[]): void {
    if (ids.length > this.unresolved) throw new NibbleError('bad-argument', `${ids.length} ids for ${this.unresolved} unresolved positions`);
    this.cached.push(...ids);
    this.unresolved -= ids.length;
  }

  /** Forgets the last n positions (unresolved ones first); later passes overwrite their k/v. */
  rollback(n: number): void {
    const u = Math.min(n, this.unresolved);
    this.unresolved -= u;
    if (n > u) this.cached.length = Math.max(0, this.cached.length - (n - u));
  }

  /** Forgets queued steps after a stop (their k/v lie beyond the cache and get overwritten). */
  async dropPending(): Promise<void> {
    this.rollback(this.unresolved);
    await this.settle();
  }

  reset(): void {
    this.cached = [];
    this.unresolved = 0;
  }

  /** The logits of the last pass's `rows` head rows, one array per row. */
  async readLogits(rows: number): Promise<Float32Array[]> {
    const m = this.model;
    const V = m.cfg.vocabSize;
    const buf = new Float32Array(await m.rt.read(m.logits, 0, rows * V * 4));
    return Array.from({ length: rows }, (_, r) => buf.subarray(r * V, (r + 1) * V));
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
