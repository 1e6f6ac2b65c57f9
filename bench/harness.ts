import type { FormatName } from '../src/quant/plan.ts';
import { RuntimeHost, type HostEvent, type HostOptions, type RuntimeName } from '../src/node/host.ts';
import type { BenchPeerRow, BenchPeerSkip } from './peer/wllama.ts';
import type { GpuMode } from '../src/node/browser.ts';
import type { EngineInfo, GenerateResult } from '../src/api/engine.ts';
import type { LoadProgress } from '../src/model/llama.ts';
import type { JobLoadOptions } from '../src/runner.ts';
import type { KernelProfile, RooflineVariant } from '../src/kernels/probe.ts';
import { NibbleError } from '../src/errors.ts';

/**
 * The benchmark harness: in the CLI's runtime (headless Chromium on WebGPU, one page, one device)
 * it first measures the adapter's streaming-read bandwidth (the roofline probe,
 * src/kernels/probe.ts), then loads the model once per weight format (and once more per format
 * with a self-draft when asked) and times, after one warm-up generation:
 *
 * - prefill of a 64-token and a 512-token prompt (greedy, one new token; `runs` times for prompts
 *   of up to LONG_PROMPT tokens, `prefillRuns` (default 1) times for longer ones);
 * - decode of `newTokens` tokens after a `promptTokens`-token prompt.
 *
 * A speculative row (`draftQuant`) times no prefill (its prompt pass is the plain row's plus the
 * draft's); its decode runs alternate with plain-decoding runs on the same engine (the draft
 * loaded, `speculative: false`), and `speedupVsPlain` is the ratio of the two medians: on a machine
 * whose speed drifts between the plain row's load and the speculative one's, both figures then
 * come from the same minutes. `speedupVsPlainRow` is the ratio against the plain row.
 *
 * Every timed generation gets a prompt that shares no prefix with the ones before it (its first
 * token differs), so the engine's prefix reuse never skips any of it: `cachedPromptTokens` is 0.
 * Prompts are pseudo-random ids, the same sequence of prompts for every format. Reports medians
 * over `runs`.
 */
export interface BenchOptions {
  /** A local folder, URL or Hub id. */
  model: string;
  /** The name rows carry (default `model`). */
  label?: string;
  quants: FormatName[];
  /** Prompt length before decoding (default 64). */
  promptTokens: number;
  newTokens: number;
  runs: number;
  /** Prompt lengths of the prefill measurements (default [64, 512]; a length the context cannot hold gives null). */
  prefillLengths?: readonly number[];
  /** Timed runs of each prompt longer than LONG_PROMPT tokens (default 1; shorter ones: `runs`). */
  prefillRuns?: number;
  gpu?: GpuMode;
  /** The runtime hosting the engine (default chromium). */
  runtime?: RuntimeName;
  /** Force a matmul kernel variant (LoadOptions.matmul; default: chosen for the adapter). */
  matmul?: 'auto' | 'subgroup' | 'workgroup' | 'row';
  /** KV cache storage (LoadOptions.kvCache; default f32). */
  kvCache?: 'f32' | 'f16';
  contextLength?: number;
  hubEndpoint?: string;
  token?: string;
  /** Add a speculative row per format: the same checkpoint as a draft in this format. */
  draftQuant?: FormatName;
  /** Draft tokens per round (default 4). */
  draftTokens?: number;
  /** DraftOptions.pipeline for the speculative rows (default: the engine's, off on CPU adapters). */
  draftPipeline?: boolean;
  /** Per-kernel GPU time of decode steps (timestamp-query) for each plain row. */
  profile?: boolean;
  /** Roofline probe buffer size in bytes (default 256 MiB, capped by the adapter's limits). */
  probeBytes?: number;
  /** Progress lines (stderr). */
  progress?: (line: string) => void;
  /** Each record as soon as it is measured (probe, row, profile). */
  onRecord?: (r: BenchRecord) => void;
  /**
   * A peer engine in the same runtime (`--peer wllama`, bench/peer/wllama.ts): the host gets its
   * extra folders and cross-origin isolation, and `run` measures it after nibble's rows, before the
   * host closes. Its records go to `onRecord` and the report's `peers`.
   */
  peer?: {
    host: Pick<HostOptions, 'mounts' | 'crossOriginIsolated'>;
    run: (host: RuntimeHost, nibble: readonly BenchRow[], emit: (r: BenchPeerRow | BenchPeerSkip) => void) => Promise<void>;
  };
}

export interface BenchProbe {
  type: 'probe';
  adapter: string;
  rooflineGBps: number;
  /** Bytes one probe dispatch streams. */
  bytes: number;
  timer: 'timestamp-query' | 'queue';
  variants: RooflineVariant[];
}

/** What every engine's row carries (nibble's BenchRow, the peers' rows in bench/peer/). */
export interface EngineRowFields {
  type: 'row';
  model: string;
  format: string;
  adapter: string;
  loadMs: number;
  /** Bytes of the weights (GPU bytes for nibble, the GGUF file for a peer). */
  weightBytes: number;
  bitsPerWeight: number;
  contextLength: number;
  /** Prompt length before the decode runs. */
  promptTokens: number;
  newTokens: number;
  /** = prefill64TokensPerSecond. */
  prefillTokensPerSecond: number | null;
  prefill64TokensPerSecond: number | null;
  prefill512TokensPerSecond: number | null;
  decodeTokensPerSecond: number;
  msPerToken: number;
}

export interface BenchRow extends EngineRowFields {
  /** The engine that ran (peer rows, bench/peer/, carry theirs). */
  engine: 'nibble';
  /** ms from the load's end until engine.optimized (the kernels compiled after the load, waited for before timing). */
  optimizeMs: number;
  /** Dispatches per decode step (engine.info.dispatchesPerToken). */
  dispatchesPerStep: number;
  /** Most prompt tokens any timed run found cached (0: every timed prompt was prefilled whole). */
  cachedPromptTokens: number;
  /** KV cache bytes a decode step reads at the mean decode position (layers × 2 × kv heads × head dim × 4 × positions). */
  kvBytes: number;
  /** (weightBytes + kvBytes) × decode tok/s, GB/s (1e9). With a draft: the plain-decoding bytes per token at that speed. */
  decodeGBps: number;
  rooflineGBps: number;
  /** decodeGBps / rooflineGBps × 100. */
  rooflinePercent: number;
  /** Speculative rows only: the draft's format, tokens per round, acceptance, speed-up over the plain row. */
  draft?: string;
  draftTokens?: number;
  /** Whether its rounds queued the next draft pass before the verify's readback (DraftOptions.pipeline). */
  draftPipeline?: boolean;
  acceptanceRate?: number;
  tokensPerTargetPass?: number;
  /** Speculative rows: median tok/s of the plain-decoding runs interleaved with the speculative ones (same engine). */
  plainDecodeTokensPerSecond?: number;
  /** decodeTokensPerSecond / plainDecodeTokensPerSecond (the interleaved plain runs). */
  speedupVsPlain?: number | null;
  /** decodeTokensPerSecond / the plain row's decodeTokensPerSecond (loaded and timed minutes earlier). */
  speedupVsPlainRow?: number | null;
}

/** Prompts longer than this are prefilled `prefillRuns` times (default 1): a 512-token prompt takes 30–65 s on SwiftShader. */
export const LONG_PROMPT = 128;

export interface BenchProfile {
  type: 'profile';
  model: string;
  format: string;
  adapter: string;
  /** The draft's format when the profiled decoding was speculative (then a step is one pass). */
  draft?: string;
  available: boolean;
  /** Why there is no profile (available false). */
  reason?: string;
  steps?: number;
  /** Σ kernel GPU time per decode step (ms). */
  gpuMsPerStep?: number;
  /** First kernel's start to the last one's end per step (ms). */
  spanMsPerStep?: number;
  /** Wall-clock ms per decode step of the profiled run (one pass per op: slower than unprofiled). */
  wallMsPerStep?: number;
  kernels?: KernelProfile[];
}

export type BenchRecord = BenchProbe | BenchRow | BenchProfile | BenchPeerRow | BenchPeerSkip;

export interface BenchReport {
  date: string;
  probe: BenchProbe;
  rows: BenchRow[];
  profiles: BenchProfile[];
  /** With a peer (`--peer`): its rows and skipped backends. */
  peers?: (BenchPeerRow | BenchPeerSkip)[];
}

export const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** n pseudo-random token ids (an LCG from `seed`), skipping the usual special ids 0..2. */
export function benchPrompt(n: number, vocab: number, seed = 1234): number[] {
  let a = seed >>> 0;
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    ids.push(3 + (a % Math.max(1, Math.min(vocab, 32000) - 3)));
  }
  return ids;
}

/**
 * The i-th prompt of a load: a different seed per prompt, and a first token that differs from the
 * (i−1)-th prompt's, so no prompt shares a prefix with the previous one (the KV cache holds only
 * the last generation's tokens).
 */
export function uncachedPrompt(i: number, n: number, vocab: number): number[] {
  const ids = benchPrompt(n, vocab, 1234 + Math.imul(i, 7919));
  const range = Math.max(2, Math.min(vocab, 32000) - 3);
  if (ids.length) ids[0] = 3 + (i % range);
  return ids;
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const say = o.progress ?? (() => {});
  const emit = (r: BenchRecord) => o.onRecord?.(r);
  const label = o.label ?? o.model;
  const prefillLengths = o.prefillLengths ?? [64, 512];
  const host = await RuntimeHost.start({ gpu: o.gpu, runtime: o.runtime, ...o.peer?.host });
  const rows: BenchRow[] = [];
  const profiles: BenchProfile[] = [];
  try {
    const url = host.modelUrl(o.model);
    say(`bench: roofline probe (streaming read of ${(Math.min(o.probeBytes ?? 256 * 2 ** 20, 2 ** 40) / 2 ** 20).toFixed(0)} MiB)`);
    const p = await host.run({ kind: 'probe', bytes: o.probeBytes });
    const probe: BenchProbe = { type: 'probe', adapter: p.adapter, rooflineGBps: p.gbps, bytes: p.bytes, timer: p.timer, variants: p.variants };
    say(`bench: roofline ${p.gbps.toFixed(2)} GB/s on ${p.adapter} (${p.timer})`);
    emit(probe);

    /** Loads one (format, draft) configuration and measures it. */
    const measure = async (quant: FormatName, draft: { quant: FormatName; tokens: number } | null): Promise<BenchRow> => {
      const tag = `${label} ${quant}${draft ? ` +draft ${draft.quant}×${draft.tokens}` : ''}`;
      say(`bench: ${tag}: loading`);
      let last = 0;
      const off = host.on((ev: HostEvent) => {
        if (ev.type !== 'progress') return;
        const pr = ev as unknown as LoadProgress;
        const now = Date.now();
        if (now - last < 2000 && pr.phase !== 'done') return;
        last = now;
        const pct = pr.bytesTotal ? Math.floor((100 * pr.bytesDone) / pr.bytesTotal) : 100;
        say(`bench: ${tag}: loading ${pr.phase} ${pct}% (${pr.tensorsDone}/${pr.tensorsTotal} tensors)`);
      });
      // an n-token prompt needs n + 1 positions (the generated token's), or the engine generates none
      const wantCtx = o.contextLength ?? Math.max(...prefillLengths.map((n) => n + 1), o.promptTokens + o.newTokens + 8);
      const load: JobLoadOptions = {
        quant,
        contextLength: wantCtx,
        hubEndpoint: o.hubEndpoint,
        token: o.token,
        cache: false, // the runtime's browser profile is temporary: a stored cache entry would be thrown away
        ...(o.matmul ? { matmul: o.matmul } : {}),
        ...(o.kvCache ? { kvCache: o.kvCache } : {}),
        ...(draft ? { draft: { quant: draft.quant, tokens: draft.tokens, ...(o.draftPipeline === undefined ? {} : { pipeline: o.draftPipeline }) } } : {}),
      };
      let info: EngineInfo;
      try {
        info = await host.run({ kind: 'load', model: url, load });
      } finally {
        off();
      }
      say(`bench: ${tag}: loaded in ${(info.loadMs / 1000).toFixed(1)} s (${(info.weightBytes / 2 ** 20).toFixed(1)} MiB of weights)`);
      // the kernels the engine compiles after its load (CPU adapters: the large prefill tile), waited
      // for so that no timed run shares the CPU with that compile
      const optimizeMs = (await host.run({ kind: 'optimized' })).waitedMs;
      if (optimizeMs >= 1) say(`bench: ${tag}: background kernel compile done ${(optimizeMs / 1000).toFixed(1)} s after the load`);
      const cfg = info.config;
      if (info.contextLength < o.promptTokens + o.newTokens) {
        throw new NibbleError(
          'bad-argument',
          `--prompt-tokens ${o.promptTokens} + --new-tokens ${o.newTokens} exceed the context of ${info.contextLength} tokens (${label})`,
        );
      }
      let promptNo = 0;
      let cachedMax = 0;
      const gen = async (n: number, maxNewTokens: number, speculative?: boolean): Promise<GenerateResult> => {
        const promptIds = uncachedPrompt(promptNo++, n, cfg.vocabSize);
        const r = await host.run({ kind: 'generate', prompt: '', promptIds, maxNewTokens, stream: false, ignoreEos: true, ...(speculative === undefined ? {} : { speculative }) });
        return r;
      };
      say(`bench: ${tag}: warm-up (${o.promptTokens} + ${o.newTokens} tokens)`);
      await gen(o.promptTokens, o.newTokens);

      const prefill = new Map<number, number | null>();
      for (const n of draft ? [] : prefillLengths) {
        if (n >= info.contextLength) {
          // a prompt that fills the context leaves no room for the token: the engine generates none
          say(`bench: ${tag}: prefill ${n}: skipped (context ${info.contextLength})`);
          prefill.set(n, null);
          continue;
        }
        const tps: number[] = [];
        const runs = n > LONG_PROMPT ? (o.prefillRuns ?? 1) : o.runs;
        for (let i = 0; i < runs; i++) {
          const r = await gen(n, 1);
          cachedMax = Math.max(cachedMax, r.cachedPromptTokens);
          tps.push(r.timings.prefillTokensPerSecond);
          say(`bench: ${tag}: prefill ${n} run ${i + 1}/${runs}: ${n - r.cachedPromptTokens} tokens, ${r.timings.prefillTokensPerSecond.toFixed(1)} tok/s`);
        }
        prefill.set(n, median(tps));
      }

      const decode: number[] = [];
      const plainDecode: number[] = [];
      const accept: number[] = [];
      const perPass: number[] = [];
      for (let i = 0; i < o.runs; i++) {
        if (draft) {
          // the same engine decoding plainly, just before each speculative run
          const p = await gen(o.promptTokens, o.newTokens, false);
          plainDecode.push(p.timings.decodeTokensPerSecond);
          say(`bench: ${tag}: plain decode run ${i + 1}/${o.runs}: ${p.tokenIds.length} tokens, ${p.timings.decodeTokensPerSecond.toFixed(2)} tok/s`);
        }
        const r = await gen(o.promptTokens, o.newTokens);
        cachedMax = Math.max(cachedMax, r.cachedPromptTokens);
        decode.push(r.timings.decodeTokensPerSecond);
        if (r.speculative) {
          accept.push(r.speculative.acceptanceRate);
          perPass.push(r.speculative.tokensPerTargetPass);
        }
        const spec = r.speculative ? `, acceptance ${(100 * r.speculative.acceptanceRate).toFixed(0)}%` : '';
        say(`bench: ${tag}: decode run ${i + 1}/${o.runs}: ${r.tokenIds.length} tokens, ${r.timings.decodeTokensPerSecond.toFixed(2)} tok/s${spec}`);
      }
      const decodeTps = median(decode);
      // decode steps run at positions P .. P+n−2, each reading pos+1 keys and values: mean P + n/2
      const positions = o.promptTokens + o.newTokens / 2;
      const kvBytes = cfg.numLayers * 2 * cfg.numKvHeads * cfg.headDim * (info.kvCache === 'f16' ? 2 : 4) * positions;
      const decodeGBps = ((info.weightBytes + kvBytes) * decodeTps) / 1e9;
      const p64 = prefill.get(64) ?? null;
      const row: BenchRow = {
        type: 'row',
        engine: 'nibble',
        model: label,
        format: quant,
        adapter: info.adapter.summary,
        loadMs: info.loadMs,
        optimizeMs,
        weightBytes: info.weightBytes,
        bitsPerWeight: info.bitsPerWeight,
        dispatchesPerStep: info.dispatchesPerToken,
        contextLength: info.contextLength,
        promptTokens: o.promptTokens,
        newTokens: o.newTokens,
        prefillTokensPerSecond: p64 ?? (prefillLengths.length ? (prefill.get(prefillLengths[0]) ?? null) : null),
        prefill64TokensPerSecond: p64,
        prefill512TokensPerSecond: prefill.get(512) ?? null,
        cachedPromptTokens: cachedMax,
        decodeTokensPerSecond: decodeTps,
        msPerToken: decodeTps > 0 ? 1000 / decodeTps : Infinity,
        kvBytes,
        decodeGBps,
        rooflineGBps: probe.rooflineGBps,
        rooflinePercent: probe.rooflineGBps > 0 ? (100 * decodeGBps) / probe.rooflineGBps : 0,
      };
      if (draft) {
        row.draft = draft.quant;
        row.draftTokens = draft.tokens;
        row.draftPipeline = info.draft?.pipeline ?? false;
        row.acceptanceRate = accept.length ? accept.reduce((a, b) => a + b, 0) / accept.length : 0;
        row.tokensPerTargetPass = perPass.length ? perPass.reduce((a, b) => a + b, 0) / perPass.length : 0;
        row.plainDecodeTokensPerSecond = median(plainDecode);
        row.speedupVsPlain = row.plainDecodeTokensPerSecond > 0 ? decodeTps / row.plainDecodeTokensPerSecond : null;
      }
      say(
        `bench: ${tag}: decode ${decodeTps.toFixed(2)} tok/s (${decodeGBps.toFixed(2)} GB/s, ${row.rooflinePercent.toFixed(0)}% of roofline), prefill ${fmt(row.prefill64TokensPerSecond, 1)} / ${fmt(row.prefill512TokensPerSecond, 1)} tok/s`,
      );

      if (o.profile) {
        say(`bench: ${tag}: profile (${o.newTokens} decode steps, one timed pass per op${draft ? '; speculative: per pass, draft and verify' : ''})`);
        const pr = await host.run({ kind: 'profile', promptIds: uncachedPrompt(promptNo++, o.promptTokens, cfg.vocabSize), maxNewTokens: o.newTokens, speculative: draft !== null });
        const prof: BenchProfile = pr.available
          ? {
              type: 'profile',
              model: label,
              format: quant,
              adapter: info.adapter.summary,
              ...(draft ? { draft: draft.quant } : {}),
              available: true,
              steps: pr.steps,
              gpuMsPerStep: pr.gpuMsPerStep,
              spanMsPerStep: pr.spanMsPerStep,
              wallMsPerStep: pr.decodeTokensPerSecond > 0 ? 1000 / pr.decodeTokensPerSecond : 0,
              kernels: pr.kernels,
            }
          : { type: 'profile', model: label, format: quant, adapter: info.adapter.summary, available: false, reason: pr.reason };
        if (!pr.available) say(`bench: ${tag}: no profile: ${pr.reason}`);
        profiles.push(prof);
        emit(prof);
      }
      return row;
    };

    const k = o.draftTokens ?? 4;
    for (const quant of o.quants) {
      const plain = await measure(quant, null);
      rows.push(plain);
      emit(plain);
      if (o.draftQuant) {
        const spec = await measure(quant, { quant: o.draftQuant, tokens: k });
        spec.speedupVsPlainRow = plain.decodeTokensPerSecond > 0 ? spec.decodeTokensPerSecond / plain.decodeTokensPerSecond : null;
        say(
          `bench: ${label} ${quant} +draft ${o.draftQuant}×${k}: ${fmt(spec.speedupVsPlain, 2)}× plain decoding on the same engine ` +
            `(interleaved runs, ${fmt(spec.plainDecodeTokensPerSecond, 2)} tok/s plain), ${fmt(spec.speedupVsPlainRow, 2)}× the plain row`,
        );
        rows.push(spec);
        emit(spec);
      }
    }
    const peers: (BenchPeerRow | BenchPeerSkip)[] = [];
    if (o.peer) {
      await o.peer.run(host, rows, (r) => {
        peers.push(r);
        emit(r);
      });
    }
    return { date: new Date().toISOString(), probe, rows, profiles, ...(o.peer ? { peers } : {}) };
  } finally {
    await host.close();
  }
}

export const fmt = (x: number | null | undefined, digits: number) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits));

/** The rows as a markdown table (draft columns only when there are speculative rows). */
export function benchTable(rows: BenchRow[]): string {
  const spec = rows.some((r) => r.draft !== undefined);
  const cols = [
    'model',
    'format',
    'bits/w',
    'weights MiB',
    'load s',
    'prefill 64 tok/s',
    'prefill 512 tok/s',
    'decode tok/s',
    'ms/token',
    'decode GB/s',
    '% roofline',
    'dispatches/step',
    ...(spec ? ['draft', 'accept %', 'speed-up'] : []),
  ];
  const right = (c: string) => !['model', 'format', 'draft'].includes(c);
  const head = `| ${cols.join(' | ')} |`;
  const sep = `|${cols.map((c) => (right(c) ? '---:' : '---')).join('|')}|`;
  const body = rows.map((r) => {
    const cells = [
      r.model,
      r.format,
      r.bitsPerWeight.toFixed(2),
      (r.weightBytes / 2 ** 20).toFixed(1),
      (r.loadMs / 1000).toFixed(1),
      fmt(r.prefill64TokensPerSecond, 1),
      fmt(r.prefill512TokensPerSecond, 1),
      r.decodeTokensPerSecond.toFixed(2),
      fmt(r.msPerToken, 1),
      r.decodeGBps.toFixed(2),
      r.rooflinePercent.toFixed(1),
      String(r.dispatchesPerStep),
      ...(spec
        ? r.draft !== undefined
          ? [`${r.draft} ×${r.draftTokens}`, fmt(100 * (r.acceptanceRate ?? NaN), 0), r.speedupVsPlain == null ? '–' : `${r.speedupVsPlain.toFixed(2)}×`]
          : ['–', '–', '–']
        : []),
    ];
    return `| ${cells.join(' | ')} |`;
  });
  return [head, sep, ...body].join('\n');
}

/** The probe as one line of text. */
export function probeLine(p: BenchProbe): string {
  const best = p.variants.reduce((a, b) => (b.gbps > a.gbps ? b : a), p.variants[0]);
  const how = best ? `best: ${best.mode}, workgroup ${best.workgroup} × ${best.workgroups}` : '';
  return `roofline: ${p.rooflineGBps.toFixed(2)} GB/s streaming read of ${(p.bytes / 2 ** 20).toFixed(0)} MiB on ${p.adapter} (${p.timer}; ${how})`;
}

/** A profile as a heading line and a markdown table. */
export function profileTable(p: BenchProfile): string {
  if (!p.available) return `profile ${p.model} ${p.format}: not available (${p.reason})`;
  const head =
    `profile ${p.model} ${p.format}: ${p.steps} decode steps; per step ${fmt(p.gpuMsPerStep, 3)} ms of kernels, ` +
    `${fmt(p.spanMsPerStep, 3)} ms first to last kernel, ${fmt(p.wallMsPerStep, 3)} ms wall (one pass per op while profiling)`;
  const lines = ['| kernel | shader | calls/step | ms/step | % of step |', '|---|---|---:|---:|---:|'];
  for (const k of p.kernels ?? []) {
    lines.push(`| ${k.kernel} | ${k.shader} | ${fmt(k.callsPerStep, 1)} | ${k.msPerStep.toFixed(4)} | ${k.percent.toFixed(1)} |`);
  }
  return [head, '', ...lines].join('\n');
}
