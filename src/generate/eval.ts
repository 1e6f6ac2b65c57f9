/**
 * Evaluation on a Sequence: the logits of a token sequence's last rows, and its perplexity under
 * the model (teacher forcing). Both start from an empty cache and leave the ids in it.
 */
import { NibbleError, show } from '../errors.ts';
import { checkTokenIds, type Sequence } from './sequence.ts';

/** Logits of the last `rows` positions after running `ids` from position 0. */
export async function sequenceLogits(seq: Sequence, ids: number[], rows: number): Promise<Float32Array[]> {
  const m = seq.model;
  checkTokenIds(ids, 'ids', m.cfg.vocabSize);
  if (!Number.isInteger(rows) || rows < 1) throw new NibbleError('bad-argument', `rows must be a positive integer, got ${show(rows)}`);
  if (rows > m.maxLogitRows) throw new NibbleError('bad-argument', `at most ${m.maxLogitRows} logit rows per pass`);
  if (ids.length > m.contextLength) {
    throw new NibbleError('context-overflow', `the text has ${ids.length} tokens but the context holds ${m.contextLength}; use a longer contextLength`);
  }
  // all but the last chunk without the head, then the last chunk with `rows` logit rows
  const splitAt = Math.max(0, ids.length - Math.min(ids.length, m.maxBatch));
  const tail = ids.slice(splitAt);
  if (rows > tail.length) throw new NibbleError('bad-argument', `asked for ${rows} logit rows of ${tail.length} tokens`);
  seq.reset();
  if (splitAt > 0) seq.prefill(ids.slice(0, splitAt), null);
  seq.pass(tail, { headRows: rows });
  return (await seq.readLogits(rows)).map((r) => r.slice());
}

/**
 * Perplexity of a token sequence (teacher forcing): batched passes of up to maxLogitRows tokens over
 * a continuing KV cache, each producing logits for all its rows; log-softmax on the CPU in float64.
 * Returns the mean negative log-likelihood (nats) of ids[1..] given their prefixes, and exp of it.
 * `check` runs after every readback (the engine stops there when it was disposed).
 */
export async function sequencePerplexity(seq: Sequence, ids: number[], check: () => void = () => {}): Promise<{ perplexity: number; nll: number; tokens: number }> {
  const m = seq.model;
  checkTokenIds(ids, 'ids', m.cfg.vocabSize);
  if (ids.length < 2) throw new NibbleError('bad-argument', 'perplexity needs at least 2 tokens');
  if (ids.length > m.contextLength) {
    throw new NibbleError('context-overflow', `the text has ${ids.length} tokens but the context holds ${m.contextLength}; use a longer contextLength`);
  }
  const V = m.cfg.vocabSize;
  const step = Math.min(m.maxLogitRows, m.maxBatch);
  seq.reset();
  let nll = 0;
  let count = 0;
  for (let p = 0; p < ids.length - 1; p += step) {
    const chunk = ids.slice(p, Math.min(ids.length - 1, p + step));
    seq.pass(chunk, { headRows: chunk.length });
    const rows = await seq.readLogits(chunk.length);
    check();
    rows.forEach((row, t) => {
      let mx = -Infinity;
      for (let v = 0; v < V; v++) if (row[v]! > mx) mx = row[v]!;
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(row[v]! - mx);
      nll += Math.log(sum) + mx - row[ids[p + t + 1]!]!;
      count++;
    });
  }
  const mean = nll / count;
  return { perplexity: Math.exp(mean), nll: mean, tokens: count };
}
