import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NibbleError } from '../../src/errors.ts';
import { HostBudget } from '../../src/util/host-budget.ts';
import { parseSafetensorsHeader, type TensorInfo } from '../../src/loader/safetensors.ts';
import { planReads, streamTensors, type StreamTarget } from '../../src/loader/stream.ts';
import { safetensorsLayout } from '../../src/node/safetensors-writer.ts';
import { synthTensors } from '../../src/node/synth.ts';
import type { ModelSource } from '../../src/source/types.ts';
import { buildSafetensors } from '../helpers/safetensors-build.ts';

/**
 * The loader's streaming scheduler without a GPU: fake sources, sinks that check what they get,
 * and the host-memory meter. The llama-3.2-1b case uses the real tensor table (synth's shapes and
 * the safetensors writer's layout) over a source that serves only the header and zeros: 2.47 GB
 * streamed through a 256 MiB budget (and smaller ones).
 */

/** A ModelSource over in-memory files, with a per-request delay that shuffles completion order. */
class FakeSource implements ModelSource {
  readonly description = 'fake';
  inFlight = 0;
  maxInFlight = 0;
  ranges: Array<[string, number, number]> = [];
  private readonly files: Map<string, { size: number; bytes?: Uint8Array; header?: Uint8Array }>;
  private readonly delay: (i: number) => number;
  constructor(files: Map<string, { size: number; bytes?: Uint8Array; header?: Uint8Array }>, delay: (i: number) => number = () => 0) {
    this.files = files;
    this.delay = delay;
  }
  async text(): Promise<string> {
    throw new Error('not used');
  }
  async exists(p: string) {
    return this.files.has(p);
  }
  async size(p: string) {
    return this.files.get(p)!.size;
  }
  async range(p: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    const f = this.files.get(p)!;
    if (end > f.size) throw new Error(`range beyond ${p}`);
    const i = this.ranges.push([p, start, end]) - 1;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      const ms = this.delay(i);
      if (ms > 0) await new Promise((r) => setTimeout(r, ms));
      if (signal?.aborted) throw new NibbleError('aborted', 'aborted');
      if (f.bytes) return f.bytes.slice(start, end);
      const out = new Uint8Array(end - start); // zeros, except where the header is
      const h = f.header!;
      if (start < h.length) out.set(h.subarray(start, Math.min(end, h.length)));
      return out;
    } finally {
      this.inFlight--;
    }
  }
}

/** Sinks that record every write and check rows arrive in order, whole, exactly once. */
function sinks(table: Map<string, TensorInfo>, keep: boolean) {
  const got = new Map<string, { next: number; bytes: number; parts: Uint8Array[] }>();
  const targets: StreamTarget[] = [...table.values()].map((t) => {
    const rows = t.shape.length >= 2 ? t.shape[0]! : 1;
    const rowBytes = (t.end - t.start) / rows;
    const rec = { next: 0, bytes: 0, parts: [] as Uint8Array[] };
    got.set(t.name, rec);
    return {
      tensor: t,
      write(row0: number, bytes: Uint8Array) {
        expect(row0, `${t.name} rows in order`).toBe(rec.next);
        expect(bytes.length % rowBytes, `${t.name} whole rows`).toBe(0);
        rec.next += bytes.length / rowBytes;
        rec.bytes += bytes.length;
        if (keep) rec.parts.push(bytes.slice());
      },
    };
  });
  return { targets, got };
}

function shuffled(seed: number) {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) >>> 0) % 7) * 2;
}

describe('planReads', () => {
  it('cuts tensors into whole-row requests of at most chunkBytes, covering the whole file when verifying', () => {
    const file = buildSafetensors([
      { name: 'a', dtype: 'F32', shape: [100, 10] }, // 40 B rows
      { name: 'b', dtype: 'F32', shape: [7] },
      { name: 'c', dtype: 'BF16', shape: [50, 33] }, // 66 B rows
    ]);
    const { tensors } = parseSafetensorsHeader(file, file.length, 'm.safetensors');
    const targets = [...tensors.values()].map((t) => ({ tensor: t, write() {} }));
    const plain = planReads(targets, { chunkBytes: 1000 });
    for (const r of plain) {
      expect(r.end - r.start).toBeLessThanOrEqual(1000);
      for (const p of r.pieces) {
        const t = p.target.tensor;
        const rowBytes = (t.end - t.start) / (t.shape.length >= 2 ? t.shape[0]! : 1);
        expect(p.bytes).toBe(p.rows * rowBytes);
        expect(r.start + p.offset).toBe(t.start + p.row0 * rowBytes);
      }
    }
    // every byte of every tensor exactly once; no header bytes without verification
    const covered = plain.flatMap((r) => r.pieces.map((p) => p.bytes)).reduce((a, b) => a + b, 0);
    expect(covered).toBe([...tensors.values()].reduce((a, t) => a + t.end - t.start, 0));
    expect(plain[0]!.start).toBeGreaterThan(8);

    const whole = planReads(targets, { chunkBytes: 1000, sha256: new Map([['m.safetensors', 'x']]), sizes: new Map([['m.safetensors', file.length]]) });
    expect(whole[0]!.start).toBe(0);
    expect(whole[whole.length - 1]!.end).toBe(file.length);
    for (let i = 1; i < whole.length; i++) expect(whole[i]!.start).toBe(whole[i - 1]!.end); // contiguous, in order
  });
});

describe('streamTensors', () => {
  const file = buildSafetensors([
    { name: 'embed', dtype: 'BF16', shape: [300, 64], data: new Uint8Array(randomBytes(300 * 64 * 2)) },
    { name: 'norm', dtype: 'F32', shape: [64], data: new Uint8Array(randomBytes(256)) },
    { name: 'w', dtype: 'F32', shape: [100, 64], data: new Uint8Array(randomBytes(100 * 64 * 4)) },
  ]);
  const sha = createHash('sha256').update(file).digest('hex');
  const { tensors } = parseSafetensorsHeader(file, file.length, 'model.safetensors');

  it('delivers every tensor byte for byte, in row order, with parallel out-of-order reads, and verifies sha256', async () => {
    const src = new FakeSource(new Map([['model.safetensors', { size: file.length, bytes: file }]]), shuffled(3));
    const { targets, got } = sinks(tensors, true);
    const budget = new HostBudget(64 << 10);
    const progress: number[] = [];
    const r = await streamTensors(src, targets, {
      budget,
      chunkBytes: 8 << 10,
      parallel: 4,
      sha256: new Map([['model.safetensors', sha]]),
      sizes: new Map([['model.safetensors', file.length]]),
      onProgress: (d, t) => {
        expect(t).toBe(file.length);
        progress.push(d);
      },
    });
    expect(r.verified).toEqual(['model.safetensors']);
    expect(r.bytesRead).toBe(file.length);
    expect(progress[progress.length - 1]).toBe(file.length);
    expect(src.maxInFlight).toBeGreaterThan(1);
    expect(src.maxInFlight).toBeLessThanOrEqual(4);
    for (const t of tensors.values()) {
      const rec = got.get(t.name)!;
      const all = Buffer.concat(rec.parts);
      expect(all.equals(Buffer.from(file.subarray(t.start, t.end))), t.name).toBe(true);
    }
    expect(budget.meter.peak).toBeLessThanOrEqual(64 << 10);
    expect(budget.meter.current).toBe(0);
  });

  it('a corrupted byte → NibbleError integrity naming the file, and the budget is released', async () => {
    const bad = file.slice();
    bad[tensors.get('w')!.start + 1234] ^= 1;
    const src = new FakeSource(new Map([['model.safetensors', { size: bad.length, bytes: bad }]]), shuffled(5));
    const budget = new HostBudget(1 << 20);
    const err = await streamTensors(src, sinks(tensors, false).targets, {
      budget,
      chunkBytes: 8 << 10,
      sha256: new Map([['model.safetensors', sha]]),
      sizes: new Map([['model.safetensors', bad.length]]),
    }).catch((e) => e);
    expect(err).toBeInstanceOf(NibbleError);
    expect(err.code).toBe('integrity');
    expect(err.message).toMatch(/model\.safetensors.*sha256/);
    expect(budget.meter.current).toBe(0);
  });

  it('an abort stops the stream with NibbleError aborted', async () => {
    const src = new FakeSource(new Map([['model.safetensors', { size: file.length, bytes: file }]]), () => 20);
    const ctl = new AbortController();
    const budget = new HostBudget(1 << 20);
    const p = streamTensors(src, sinks(tensors, false).targets, { budget, chunkBytes: 4 << 10, parallel: 2, signal: ctl.signal });
    setTimeout(() => ctl.abort(), 30);
    const err = await p.catch((e) => e);
    expect(err.code).toBe('aborted');
    expect(src.ranges.length).toBeLessThan(Math.ceil(file.length / (4 << 10)));
    expect(budget.meter.current).toBe(0);
  });
});

describe('bounded host memory at the llama-3.2-1b shape (2.47 GB bf16, header-only source)', () => {
  const tensors = synthTensors('llama-3.2-1b', 'bf16');
  const layout = safetensorsLayout(tensors);
  const { tensors: table } = parseSafetensorsHeader(layout.header, layout.totalBytes, 'model.safetensors');
  const dataBytes = [...table.values()].reduce((a, t) => a + t.end - t.start, 0);

  for (const [budgetBytes, chunk] of [
    [256 << 20, 16 << 20],
    [40 << 20, 16 << 20],
    [8 << 20, 16 << 20], // budget below one chunk: requests shrink to fit (whole rows of 4 KiB)
  ] as const) {
    it(`peak ≤ ${budgetBytes >> 20} MiB with ${chunk >> 20} MiB reads, 4 in flight`, async () => {
      expect(layout.totalBytes).toBeGreaterThan(2.4e9);
      const src = new FakeSource(new Map([['model.safetensors', { size: layout.totalBytes, header: layout.header }]]), shuffled(11));
      const { targets, got } = sinks(table, false);
      const budget = new HostBudget(budgetBytes);
      const r = await streamTensors(src, targets, { budget, chunkBytes: Math.min(chunk, budgetBytes), parallel: 4 });
      let delivered = 0;
      for (const rec of got.values()) delivered += rec.bytes;
      expect(delivered).toBe(dataBytes);
      expect(budget.meter.peak).toBeLessThanOrEqual(budgetBytes);
      expect(budget.meter.peak).toBeGreaterThan(0);
      expect(r.maxInFlight).toBeLessThanOrEqual(4);
      expect(Math.max(...src.ranges.map(([, s, e]) => e - s))).toBeLessThanOrEqual(Math.min(chunk, budgetBytes));
      console.log(
        `1B shape: budget ${budgetBytes >> 20} MiB → peak ${(budget.meter.peak / 2 ** 20).toFixed(1)} MiB, ${r.requests} requests, ${r.maxInFlight} in flight`,
      );
    }, 120_000);
  }
});
