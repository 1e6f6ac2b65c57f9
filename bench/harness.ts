import { RuntimeHost } from '../src/node/host.ts';
import type { GpuMode } from '../src/node/browser.ts';
import type { EngineInfo, GenerateResult } from '../src/api/engine.ts';

/**
 * The benchmark harness: loads a model in the CLI's runtime (headless Chromium on WebGPU) once per
 * weight format, then times prefill and decode on a fixed pseudo-random prompt (so every format
 * and every run sees the same tokens), after one warm-up generation. Reports medians.
 */
export interface BenchOptions {
  model: string; // URL or Hub id or local folder
  quants: string[];
  promptTokens: number;
  newTokens: number;
  runs: number;
  gpu?: GpuMode;
  contextLength?: number;
  hubEndpoint?: string;
  token?: string;
  log?: (s: string) => void;
}

export interface BenchRow {
  model: string;
  quant: string;
  adapter: string;
  loadMs: number;
  weightBytes: number;
  bitsPerWeight: number;
  dispatchesPerToken: number;
  promptTokens: number;
  newTokens: number;
  prefillMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  msPerToken: number;
  /** weightBytes × decode tok/s: the weight bandwidth decode achieves (GB/s). */
  effectiveGBps: number;
}

const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export function benchPrompt(n: number, vocab: number, seed = 1234): number[] {
  let a = seed >>> 0;
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    ids.push(3 + (a % Math.max(1, Math.min(vocab, 32000) - 3))); // skip the usual special ids 0..2
  }
  return ids;
}

export async function runBench(o: BenchOptions): Promise<BenchRow[]> {
  const host = await RuntimeHost.start({ gpu: o.gpu });
  const rows: BenchRow[] = [];
  try {
    const url = host.modelUrl(o.model);
    for (const quant of o.quants) {
      o.log?.(`bench: loading ${o.model} as ${quant}`);
      const info = await host.run<EngineInfo>({
        kind: 'load',
        model: url,
        load: { quant, contextLength: o.contextLength ?? Math.max(256, o.promptTokens + o.newTokens + 8), hubEndpoint: o.hubEndpoint, token: o.token },
      });
      const promptIds = benchPrompt(o.promptTokens, info.config.vocabSize);
      const gen = () =>
        host.run<GenerateResult>({ kind: 'generate', prompt: '', promptIds, maxNewTokens: o.newTokens, stream: false, ignoreEos: true });
      await gen(); // warm-up: pipelines, caches
      const results: GenerateResult[] = [];
      for (let i = 0; i < o.runs; i++) results.push(await gen());
      const decode = median(results.map((r) => r.timings.decodeTokensPerSecond));
      const prefillMs = median(results.map((r) => r.timings.prefillMs));
      rows.push({
        model: o.model,
        quant,
        adapter: info.adapter.summary,
        loadMs: info.loadMs,
        weightBytes: info.weightBytes,
        bitsPerWeight: info.bitsPerWeight,
        dispatchesPerToken: info.dispatchesPerToken,
        promptTokens: o.promptTokens,
        newTokens: o.newTokens,
        prefillMs,
        prefillTokensPerSecond: (o.promptTokens * 1000) / prefillMs,
        decodeTokensPerSecond: decode,
        msPerToken: 1000 / decode,
        effectiveGBps: (info.weightBytes * decode) / 1e9,
      });
      o.log?.(`bench: ${quant}: decode ${decode.toFixed(2)} tok/s, prefill ${((o.promptTokens * 1000) / prefillMs).toFixed(1)} tok/s`);
    }
  } finally {
    await host.close();
  }
  return rows;
}

export function benchTable(rows: BenchRow[]): string {
  const head = '| model | quant | bits/w | weights MiB | load s | prefill tok/s | decode tok/s | ms/token | GB/s | dispatches/token |';
  const sep = '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|';
  const body = rows.map(
    (r) =>
      `| ${r.model} | ${r.quant} | ${r.bitsPerWeight.toFixed(2)} | ${(r.weightBytes / 2 ** 20).toFixed(1)} | ${(r.loadMs / 1000).toFixed(1)} | ${r.prefillTokensPerSecond.toFixed(1)} | ${r.decodeTokensPerSecond.toFixed(2)} | ${r.msPerToken.toFixed(1)} | ${r.effectiveGBps.toFixed(2)} | ${r.dispatchesPerToken} |`,
  );
  return [head, sep, ...body].join('\n');
}
