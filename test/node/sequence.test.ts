import { describe, expect, it } from 'vitest';
import type { PassModel } from '../../src/generate/model.ts';
import { Sequence } from '../../src/generate/sequence.ts';
import { NibbleError } from '../../src/errors.ts';

/**
 * Sequence's bookkeeping on a fake model that records each pass (no GPU): where each pass starts,
 * what it writes, and how unresolved positions, rollback and prefix reuse move the cache.
 */
function fakeModel(o: { ctx?: number; maxBatch?: number } = {}) {
  (globalThis as Record<string, unknown>).GPUBufferUsage ??= { MAP_READ: 1, COPY_DST: 8, STORAGE: 128, COPY_SRC: 4 };
  (globalThis as Record<string, unknown>).GPUMapMode ??= { READ: 1 };
  const passes: Array<{ T: number; pos0: number; headRows: number; head: boolean; argmax: boolean; written: number[] | null; extra: number }> = [];
  let written: number[] | null = null;
  const device = {
    createBuffer: () => ({ destroy() {}, mapAsync: async () => {}, getMappedRange: () => new Uint32Array([42]).buffer, unmap() {} }),
    createCommandEncoder: () => ({ finish: () => ({}), copyBufferToBuffer() {} }),
    queue: {
      writeBuffer: (_b: unknown, _o: number, d: Uint32Array) => {
        written = Array.from(d);
      },
      submit() {},
    },
  };
  let shape = { T: 0, pos0: 0, headRows: 0 };
  const model = {
    cfg: { vocabSize: 100 },
    contextLength: o.ctx ?? 32,
    maxBatch: o.maxBatch ?? 8,
    maxLogitRows: 8,
    tokens: {},
    logits: {},
    rt: {
      device,
      setStep: (s: typeof shape) => (shape = s),
      record: (_e: unknown, ops: Array<{ head?: boolean; argmax?: boolean }>) => {
        passes.push({ ...shape, head: !!ops[0]!.head, argmax: !!ops[0]!.argmax, written, extra: ops.length - 1 });
        written = null;
      },
    },
    ops: (_s: unknown, f: { head: boolean; argmax: boolean }) => [f],
  } as unknown as PassModel;
  return { model, passes };
}

describe('Sequence', () => {
  it('passes start where the cache ends; unresolved positions, resolve and rollback', () => {
    const { model, passes } = fakeModel();
    const seq = new Sequence(model);
    seq.pass([1, 2, 3]);
    expect(passes.at(-1)).toMatchObject({ T: 3, pos0: 0, head: false, written: [1, 2, 3] });
    expect([seq.length, seq.ids]).toEqual([3, [1, 2, 3]]);
    // x known, then 2 rows whose tokens the GPU placed (drafts): unresolved
    seq.pass([4], { T: 3, headRows: 3 });
    expect(passes.at(-1)).toMatchObject({ T: 3, pos0: 3, headRows: 3, head: true, written: [4] });
    expect([seq.length, seq.ids.length]).toEqual([6, 4]);
    expect(() => seq.pass([9])).toThrow(/after unresolved positions/);
    seq.resolve([5, 6]);
    seq.rollback(1); // the last draft rejected
    expect([seq.length, seq.ids]).toEqual([5, [1, 2, 3, 4, 5]]);
    seq.pass([], { T: 1, headRows: 1, argmax: true });
    expect(passes.at(-1)).toMatchObject({ T: 1, pos0: 5, argmax: true, written: null });
    seq.accept(7);
    seq.accept(8); // never fed back: stays out
    expect(seq.ids).toEqual([1, 2, 3, 4, 5, 7]);
    seq.pass([], { T: 1 });
    seq.rollback(3); // the unresolved one, then two cached
    expect(seq.ids).toEqual([1, 2, 3, 4]);
    expect(() => seq.resolve([1])).toThrow(NibbleError);
  });

  it('refuses passes past the context, over maxBatch or with more logit rows than rows', () => {
    const { model } = fakeModel({ ctx: 4 });
    const seq = new Sequence(model);
    seq.pass([1, 2, 3]);
    expect(() => seq.pass([4, 5])).toThrow(/context of 4 tokens is full/);
    expect(() => seq.pass([4], { headRows: 2 })).toThrow(/logit rows/);
    expect(() => seq.pass(Array(9).fill(1))).toThrow(/at most 8 rows/);
    seq.pass([4]);
    expect(seq.length).toBe(4);
  });

  it('prefill reuses the longest cached prefix, recomputes the last token for its logits, chunks by maxBatch', async () => {
    const { model, passes } = fakeModel({ maxBatch: 4 });
    const seq = new Sequence(model);
    void seq.prefill([1, 2, 3, 4, 5, 6], null);
    expect(passes.map((p) => [p.pos0, p.T, p.head])).toEqual([
      [0, 4, false],
      [4, 2, false],
    ]);
    expect(seq.reused).toBe(0);
    passes.length = 0;
    expect(await seq.prefill([1, 2, 3, 9, 9])).toBe(42); // shares 3 tokens; the id read back
    expect(seq.reused).toBe(3);
    expect(passes.map((p) => [p.pos0, p.T, p.head, p.argmax])).toEqual([[3, 2, true, true]]);
    expect(seq.ids).toEqual([1, 2, 3, 9, 9]);
    passes.length = 0;
    await seq.prefill([1, 2, 3, 9, 9]); // all cached: the last one runs again for its logits
    expect(seq.reused).toBe(4);
    expect(passes.map((p) => [p.pos0, p.T, p.written])).toEqual([[4, 1, [9]]]);
  });
});
