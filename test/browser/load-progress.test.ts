import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHarness, type Caller } from './page.ts';

/**
 * onProgress covers every phase of Engine.load — download, GPU quantization, pipeline compilation
 * — with a `fraction` that never decreases and reaches 1 with the 'done' event, which comes after
 * the last compute pipeline is compiled; Engine.load resolves after it, ready to generate.
 * (The page is this file's own, so the first load compiles every pipeline.)
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const MODEL = '/models/stories260K';
type Run = Awaited<ReturnType<Caller>> & {
  events: Array<{ phase: string; t: number; fraction?: number; bytesDone: number; bytesTotal: number; tensorsDone: number; tensorsTotal: number; pipelinesDone?: number; pipelinesTotal?: number }>;
  pipelinesReady: number[];
  resolvedAt: number;
  firstGenerateMs: number | null;
};

/** What every load's events satisfy. */
function checkEvents(r: Run) {
  const ev = r.events;
  expect(ev.length).toBeGreaterThan(2);
  for (const e of ev) {
    // the fields progress events always had are still there
    for (const k of ['bytesDone', 'bytesTotal', 'tensorsDone', 'tensorsTotal'] as const) expect(typeof e[k], `${e.phase}.${k}`).toBe('number');
    expect(typeof e.fraction, e.phase).toBe('number');
  }
  const fractions = ev.map((e) => e.fraction!);
  for (let i = 1; i < fractions.length; i++) expect(fractions[i], `event ${i} (${ev[i]!.phase}) after ${ev[i - 1]!.phase}`).toBeGreaterThanOrEqual(fractions[i - 1]!);
  expect(fractions[0]).toBeGreaterThanOrEqual(0);
  // exactly one 'done', the last event, the only one at 1
  expect(ev.filter((e) => e.phase === 'done')).toHaveLength(1);
  expect(ev.at(-1)!.phase).toBe('done');
  expect(ev.at(-1)!.fraction).toBe(1);
  expect(fractions.slice(0, -1).every((f) => f < 1)).toBe(true);
  // 'done' comes after the last pipeline of the load is compiled, and load resolves after it
  const lastPipeline = Math.max(...r.pipelinesReady);
  expect(ev.at(-1)!.t).toBeGreaterThanOrEqual(lastPipeline);
  expect(r.resolvedAt).toBeGreaterThanOrEqual(ev.at(-1)!.t);
  // the download and quantize phases end before compilation is reported
  const firstCompile = ev.findIndex((e) => e.phase === 'compile');
  if (firstCompile >= 0) expect(ev.slice(firstCompile).every((e) => e.phase === 'compile' || e.phase === 'done')).toBe(true);
}

describe('load progress', () => {
  it('a cold int8 load reports download, quantize and compile, and ends when the last pipeline is ready', async () => {
    const r = (await call('progressLoad', { model: MODEL, load: { quant: 'int8', cache: false }, generate: true })) as Run;
    checkEvents(r);
    const phases = [...new Set(r.events.map((e) => e.phase))];
    expect(phases).toEqual(['metadata', 'weights', 'quantize', 'compile', 'done']);
    // quantize: bytes of the built weights, up to all of them
    const q = r.events.filter((e) => e.phase === 'quantize');
    expect(q.at(-1)!.bytesDone).toBe(q.at(-1)!.bytesTotal);
    expect(q.at(-1)!.bytesTotal).toBeGreaterThan(0);
    // compile: a fixed total, counted up to it while the pipelines compile
    const c = r.events.filter((e) => e.phase === 'compile');
    const total = c[0]!.pipelinesTotal!;
    expect(total).toBeGreaterThan(5);
    expect(c.every((e) => e.pipelinesTotal === total)).toBe(true);
    for (let i = 1; i < c.length; i++) expect(c[i]!.pipelinesDone!).toBeGreaterThanOrEqual(c[i - 1]!.pipelinesDone!);
    expect(c.at(-1)!.pipelinesDone).toBe(total);
    expect(c.length).toBeGreaterThan(total / 2);
    // compile progress is reported while compiling, not after: the first compile event comes
    // before the last pipeline is ready, and compile covers a real share of the bar
    expect(c[0]!.t).toBeLessThan(Math.max(...r.pipelinesReady));
    expect(c.at(-1)!.fraction! - c[0]!.fraction!).toBeGreaterThan(0.1);
    // ready means ready: the first token costs a fraction of the load (no compilation left)
    expect(r.firstGenerateMs!).toBeLessThan(r.resolvedAt / 2);
  });

  it('a reload (pipelines cached on the device) and a self-draft load stay monotonic and end with done', async () => {
    const again = (await call('progressLoad', { model: MODEL, load: { quant: 'int8', cache: false } })) as Run;
    checkEvents(again);
    expect(again.events.filter((e) => e.phase === 'compile' && (e.pipelinesTotal ?? 0) > 0)).toHaveLength(0);
    const draft = (await call('progressLoad', { model: MODEL, load: { quant: 'int8', cache: false, draft: { quant: 'nf4', tokens: 2 } } })) as Run;
    checkEvents(draft);
    const phases = new Set(draft.events.map((e) => e.phase));
    for (const p of ['weights', 'quantize', 'compile', 'done']) expect(phases.has(p), p).toBe(true);
  });
});
