import type { Op } from '../kernels/runtime.ts';
import type { Sequence } from './sequence.ts';

export type FinishReason = 'stop' | 'length' | 'abort';

/**
 * Receives each generated token in order; returns null to go on, or the reason to stop
 * ('stop' for an EOS id or a stop string, 'length' when the token budget is used up).
 */
export type TokenSink = (id: number) => FinishReason | null;

export interface LoopControl {
  maxNewTokens: number;
  signal?: AbortSignal;
  /** Throws when the engine can no longer run (device lost). Called after every readback. */
  check: () => void;
}

export interface LoopResult {
  reason: FinishReason;
  /** performance.now() when the first generated id reached the CPU. */
  firstTokenAt: number;
}

/**
 * Plain decoding: prefill, then one step per token. Step n + 1 is queued before step n's id is
 * read (the pick op — argmax, or the sampler — leaves the id in tokens[0], where step n + 1's
 * embedding reads it), so the GPU never waits for the CPU's round trip.
 * Generation ends at the sink's word, at maxNewTokens, when the context is full ('length':
 * prompt + generated tokens never exceed the context length), or on abort.
 */
export async function plainDecode(seq: Sequence, ids: number[], pick: Op | undefined, sink: TokenSink, c: LoopControl): Promise<LoopResult> {
  const m = seq.model;
  let firstTokenAt = performance.now();
  let pending: Promise<number> | null = seq.prefill(ids, pick);
  let delivered = 0;
  while (pending) {
    // queue the next step before reading this one's id (its embedding reads tokens[0] on the GPU)
    const room = seq.length + 1 < m.contextLength;
    const wantMore = delivered + 1 < c.maxNewTokens && room;
    const following: Promise<number> | null = wantMore ? seq.decodeStep(pick) : null;
    const id = await pending;
    if (delivered === 0) firstTokenAt = performance.now();
    c.check();
    seq.accept(id); // joins the cache only if `following` consumed it
    let reason: FinishReason | null = c.signal?.aborted ? 'abort' : null;
    if (!reason) {
      reason = sink(id);
      delivered++;
    }
    if (reason || !following) {
      if (following) {
        following.catch(() => {});
        await seq.dropPending(); // its token is never read; its k/v slot gets overwritten
      }
      return { reason: reason ?? 'length', firstTokenAt };
    }
    pending = following;
  }
  return { reason: 'length', firstTokenAt };
}
