import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { Page } from 'puppeteer-core';
import type { RuntimeHost } from '../../src/node/host.ts';
import { repoRoot } from '../../src/node/paths.ts';
import { NibbleError } from '../../src/errors.ts';
import { convertToGguf, ggufIsFresh, planGguf, type GgufTensorType } from '../gguf.ts';
import { fmt, median, type EngineRowFields } from '../harness.ts';

/**
 * The peer in the same run (`nibble bench --peer wllama`): llama.cpp compiled to WebAssembly
 * (`@wllama/wllama`, a dev dependency) runs the same weights, converted to GGUF (bench/gguf.ts),
 * in a second page of the same headless Chromium as nibble, on the same prompt lengths.
 *
 * - Files: the runtime host serves `bench/peer/page/` under `/peer/page/`, wllama's `esm/` folder
 *   (its JS and `wasm/wllama.wasm`) under `/peer/wllama/` and the GGUF cache under `/peer/gguf/`,
 *   all through `serveDir` (path-containment checks), with COOP / COEP headers so the page is
 *   crossOriginIsolated and wllama uses its threaded build (`n_threads` = the page's
 *   `navigator.hardwareConcurrency`, the machine's cores).
 * - Backends: `wllama-wasm` loads with `n_gpu_layers: 0` (wllama then hides WebGPU from its
 *   worker); `wllama-webgpu` offloads every layer to llama.cpp's WebGPU backend. Whether it ran is
 *   read from llama.cpp's load log: the weights' buffer is a WebGPU one, not `CPU`. ggml-webgpu
 *   needs `shader-f16`; SwiftShader has none, so there it reports a skip with the reason.
 * - Formats: nibble f32 ↔ GGUF F32, int8 ↔ Q8_0, nf4 ↔ Q4_0 (both 32-weight blocks with an f16
 *   scale: 8.5 and 4.5 bits/weight, as int8-g64's 8.5 and nf4's 4.5).
 * - Prompts: wllama takes text, not ids: each prompt is N − 1 words that are each one token of the
 *   vocabulary (after BOS), drawn pseudo-randomly per prompt; llama.cpp's own count of the prompt
 *   (`prompt_n`) is checked against N. Both sides use an f32 KV cache, greedy decoding, EOS ignored,
 *   and no prompt cache (`cache_prompt: false`).
 * - Speeds come from llama.cpp's server timings: prefill = prompt_n / prompt_ms; decode =
 *   (predicted_n − 1) / predicted_ms (the first generated token needs no decode pass, as in
 *   nibble's figure of "decoded tokens after the first").
 */

export type PeerEngine = 'wllama-wasm' | 'wllama-webgpu';
export type PeerBackend = 'wasm' | 'webgpu';

/** nibble format → the GGUF type it is matched with. */
export const PEER_FORMATS: Readonly<Record<string, GgufTensorType>> = { f32: 'F32', int8: 'Q8_0', nf4: 'Q4_0' };

/** A peer measurement, printed and emitted like nibble's rows (`type: 'row'`, told apart by `engine`). */
export interface BenchPeerRow extends EngineRowFields {
  engine: PeerEngine;
  peer: 'wllama';
  peerVersion: string;
  /** The GGUF type (F32, Q8_0, Q4_0). */
  format: GgufTensorType;
  /** The nibble format it is matched with. */
  matches: string;
  /**
   * The CPU backend's threads. Here `adapter` is `WebAssembly (N threads)` or the WebGPU adapter,
   * `weightBytes` the GGUF file's size, and `bitsPerWeight` that of its matrices (F16 fallbacks of
   * rows that are not whole blocks included).
   */
  threads: number;
  /** Tensors written as F16 because their rows are not whole 32-weight blocks. */
  f16Fallbacks: number;
  /** nibble ÷ this row, for the matched nibble row of the same run (null when there is none). */
  nibbleRatio: { prefill64: number | null; prefill512: number | null; decode: number | null } | null;
}

/** A backend or format that did not run, and why. */
export interface BenchPeerSkip {
  type: 'peer-skip';
  engine: PeerEngine;
  format: GgufTensorType | null;
  reason: string;
}

/** The matched nibble row's speeds (a subset of harness.ts's BenchRow). */
export interface NibbleSpeeds {
  format: string;
  adapter?: string;
  prefill64TokensPerSecond: number | null;
  prefill512TokensPerSecond: number | null;
  decodeTokensPerSecond: number;
}

/** The installed @wllama/wllama folder. */
export function wllamaDir(): string {
  const d = resolve(repoRoot(), 'node_modules', '@wllama', 'wllama');
  if (!existsSync(join(d, 'esm', 'wasm', 'wllama.wasm'))) {
    throw new NibbleError('not-found', `@wllama/wllama is not installed (${d}): run \`npm install\` (it is a dev dependency of the benchmark)`);
  }
  return d;
}

export function wllamaVersion(): string {
  return (JSON.parse(readFileSync(join(wllamaDir(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** Where GGUF conversions are kept: .cache/gguf in the package. */
export function defaultGgufDir(): string {
  return resolve(repoRoot(), '.cache', 'gguf');
}

/** The runtime host's extra folders for the peer page. */
export function peerMounts(ggufDir = defaultGgufDir()): Record<string, string> {
  const page = resolve(repoRoot(), 'bench', 'peer', 'page');
  if (!existsSync(join(page, 'wllama.html'))) throw new NibbleError('not-found', `the peer page is missing (${page}): --peer runs from a checkout of nibble`);
  return { page, wllama: join(wllamaDir(), 'esm'), gguf: ggufDir };
}

/** The GGUF of `modelDir` in `type` under `ggufDir`, converted when missing or older than the folder. Returns its file name. */
export async function ensureGguf(modelDir: string, type: GgufTensorType, ggufDir = defaultGgufDir(), log?: (s: string) => void): Promise<string> {
  const abs = resolve(modelDir);
  const tag = createHash('sha256').update(abs).digest('hex').slice(0, 10);
  const name = `${basename(abs).replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^\.+/, '')}-${tag}-${type}.gguf`;
  const out = join(ggufDir, name);
  if (!ggufIsFresh(out, abs)) {
    log?.(`bench: peer: converting ${modelDir} to GGUF ${type}`);
    const r = await convertToGguf({ dir: abs, out, type, log });
    log?.(`bench: peer: wrote ${out} (${(r.bytes / 2 ** 20).toFixed(1)} MiB${r.fallbacks.length ? `; ${r.fallbacks.length} tensors as F16: rows not whole blocks` : ''})`);
  }
  return name;
}

/** Words that are one token each in the model's vocabulary (without the ▁ / Ġ marker), for text prompts of a known length. */
export function promptWords(modelDir: string): { words: string[]; leadingSpace: boolean } {
  const tok = JSON.parse(readFileSync(join(modelDir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
  const spm = Object.keys(tok.model.vocab).some((t) => t.startsWith('▁'));
  const marker = spm ? '▁' : 'Ġ';
  const words = Object.keys(tok.model.vocab)
    .filter((t) => t.startsWith(marker) && /^[a-z]{2,}$/.test(t.slice(1)))
    .map((t) => t.slice(1))
    .sort();
  if (words.length < 8) throw new NibbleError('bad-argument', `bench --peer: the tokenizer of ${modelDir} has too few whole-word tokens to build text prompts`);
  return { words, leadingSpace: !spm };
}

/** The i-th prompt of a load: n − 1 words after BOS (n with add_bos false), a different draw per prompt. */
export function peerPrompt(i: number, n: number, w: { words: string[]; leadingSpace: boolean }, addBos: boolean): string {
  let a = (1234 + Math.imul(i, 7919)) >>> 0;
  const out: string[] = [];
  for (let k = 0; k < n - (addBos ? 1 : 0); k++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out.push(w.words[a % w.words.length]!);
  }
  return (w.leadingSpace ? ' ' : '') + out.join(' ');
}

interface LoadResult {
  loadMs: number;
  multithread: boolean;
  threads: number;
  nCtx: number;
  nVocab: number;
  addBos: boolean;
  buffers: string[];
  offloaded: boolean;
  log: string[];
}

export interface CompleteResult {
  text: string;
  finishReason: string | null;
  usage: { prompt_tokens: number; completion_tokens: number };
  timings: { prompt_n: number; prompt_ms: number; prompt_per_second: number; predicted_n: number; predicted_ms: number; predicted_per_second: number };
  tokens: { id: number; logprob: number; top: { id: number; logprob: number }[] }[] | null;
}

export interface PageInfo {
  crossOriginIsolated: boolean;
  hardwareConcurrency: number;
  webgpu: { available: boolean; summary?: string; features: string[]; error?: string };
}

/** The wllama page of a runtime host (a second page in its Chromium). */
export class WllamaPeer {
  private readonly page: Page;

  private constructor(page: Page) {
    this.page = page;
  }

  static async open(host: RuntimeHost): Promise<WllamaPeer> {
    const page = await host.openPage('/peer/page/wllama.html');
    await page.waitForFunction(() => (globalThis as { nibblePeer?: unknown }).nibblePeer !== undefined, { timeout: 60_000 });
    return new WllamaPeer(page);
  }

  private async call<T>(method: string, args: unknown = {}): Promise<T> {
    const r = (await this.page.evaluate(
      (m, a) => (globalThis as unknown as { nibblePeer: { run: (m: string, a: unknown) => unknown } }).nibblePeer.run(m, a),
      method,
      args as never,
    )) as { ok: T } | { error: string; log?: string[] };
    if ('error' in r) throw new Error(`wllama ${method}: ${r.error}${r.log?.length ? `\n  ${r.log.join('\n  ')}` : ''}`);
    return r.ok;
  }

  info(): Promise<PageInfo> {
    return this.call('info');
  }

  load(o: { url: string; backend: PeerBackend; nCtx: number; nThreads: number }): Promise<LoadResult> {
    return this.call('load', o);
  }

  complete(o: { prompt: string; maxTokens: number; nProbs?: number; ignoreEos?: boolean }): Promise<CompleteResult> {
    return this.call('complete', o);
  }

  async close(): Promise<void> {
    await this.call('unload').catch(() => {});
    await this.page.close().catch(() => {});
  }
}

export interface PeerRunOptions {
  /** A local model folder. */
  modelDir: string;
  label: string;
  /** nibble formats to match (those without a GGUF peer type are skipped). */
  formats: readonly string[];
  backends?: readonly PeerBackend[];
  /** wllama-wasm's thread counts, one set of rows each (default: the page's hardwareConcurrency, the machine's cores). */
  threads?: readonly number[];
  promptTokens: number;
  newTokens: number;
  runs: number;
  prefillLengths: readonly number[];
  contextLength?: number;
  /** nibble's rows of the same run, for the ratios. */
  nibble: readonly NibbleSpeeds[];
  ggufDir?: string;
  progress?: (line: string) => void;
  onRecord?: (r: BenchPeerRow | BenchPeerSkip) => void;
}


/** Bytes and elements of a GGUF conversion's matrices, and its F16 fallbacks (planned once per type: it reads config, tokenizer and headers). */
function matrixSize(modelDir: string, type: GgufTensorType): { bytes: number; elems: number; fallbacks: number } {
  let bytes = 0;
  let elems = 0;
  const plan = planGguf(resolve(modelDir), type);
  for (const t of plan.tensors) {
    if (t.info.ne.length < 2) continue;
    bytes += t.info.bytes;
    elems += t.info.ne.reduce((a, b) => a * b, 1);
  }
  return { bytes, elems, fallbacks: plan.fallbacks.length };
}

/** Runs the peer rows in `host`'s browser (a host started with `peerMounts()` and crossOriginIsolated). */
export async function runWllamaPeer(host: RuntimeHost, o: PeerRunOptions): Promise<(BenchPeerRow | BenchPeerSkip)[]> {
  const say = o.progress ?? (() => {});
  const out: (BenchPeerRow | BenchPeerSkip)[] = [];
  const emit = (r: BenchPeerRow | BenchPeerSkip) => {
    out.push(r);
    o.onRecord?.(r);
  };
  const version = wllamaVersion();
  const words = promptWords(o.modelDir);
  const formats = o.formats.filter((f) => f in PEER_FORMATS);
  for (const f of o.formats) if (!(f in PEER_FORMATS)) say(`bench: peer: nibble format ${f} has no GGUF match (f32 ↔ F32, int8 ↔ Q8_0, nf4 ↔ Q4_0): skipped`);
  const types = formats.map((f) => PEER_FORMATS[f]!);
  const files = new Map<GgufTensorType, string>();
  const matrices = new Map<GgufTensorType, ReturnType<typeof matrixSize>>();
  for (const t of types) {
    files.set(t, await ensureGguf(o.modelDir, t, o.ggufDir, say));
    matrices.set(t, matrixSize(o.modelDir, t));
  }
  const peer = await WllamaPeer.open(host);
  try {
    const info = await peer.info();
    if (!info.crossOriginIsolated) say('bench: peer: the page is not crossOriginIsolated: wllama runs single-threaded');
    say(`bench: peer: wllama ${version}, ${info.hardwareConcurrency} cores, WebGPU adapter: ${info.webgpu.available ? info.webgpu.summary || 'yes' : 'none'}`);
    const wantCtx = o.contextLength ?? Math.max(...o.prefillLengths, o.promptTokens + o.newTokens + 8);
    for (const backend of o.backends ?? (['wasm', 'webgpu'] as const)) {
      const engine: PeerEngine = backend === 'wasm' ? 'wllama-wasm' : 'wllama-webgpu';
      if (backend === 'webgpu' && !info.webgpu.available) {
        emit({ type: 'peer-skip', engine, format: null, reason: 'the page has no WebGPU adapter' });
        say(`bench: peer: ${engine}: skipped (no WebGPU adapter)`);
        continue;
      }
      const threadCounts = backend === 'wasm' && o.threads?.length ? o.threads : [info.hardwareConcurrency];
      for (const nThreads of threadCounts) {
        for (let fi = 0; fi < formats.length; fi++) {
          const nibbleFormat = formats[fi]!;
          const type = types[fi]!;
          const tag = `${o.label} ${engine} ${type}${threadCounts.length > 1 ? ` ×${nThreads} threads` : ''}`;
          say(`bench: peer: ${tag}: loading`);
          const ld = await peer.load({ url: `/peer/gguf/${encodeURIComponent(files.get(type)!)}`, backend, nCtx: wantCtx, nThreads });
          if (backend === 'webgpu' && !ld.offloaded) {
            const f16 = info.webgpu.features.includes('shader-f16');
            const reason =
              `llama.cpp kept the weights on the CPU (model buffers: ${ld.buffers.join(', ') || 'none'}) on the adapter ${info.webgpu.summary ?? ''}` +
              (f16 ? '' : ": it lacks shader-f16, which llama.cpp's WebGPU backend requires");
            say(`bench: peer: ${engine}: did not run: ${reason}`);
            emit({ type: 'peer-skip', engine, format: null, reason });
            break; // the same for every format
          }
          if (ld.nCtx < o.promptTokens + o.newTokens) throw new NibbleError('bad-argument', `bench --peer: wllama's context ${ld.nCtx} is shorter than the decode run`);
          const fewer = ld.threads < nThreads ? ` of ${nThreads} asked: the page is not crossOriginIsolated` : '';
          const adapter = backend === 'wasm' ? `WebAssembly (${ld.threads} thread${ld.threads === 1 ? '' : 's'}${fewer})` : `WebGPU: ${info.webgpu.summary ?? ''}`;
          say(`bench: peer: ${tag}: loaded in ${(ld.loadMs / 1000).toFixed(1)} s (${adapter}; buffers ${ld.buffers.join(', ')})`);
          let promptNo = 0;
          const gen = async (n: number, maxTokens: number) => {
            const r = await peer.complete({ prompt: peerPrompt(promptNo++, n, words, ld.addBos), maxTokens });
            if (r.timings.prompt_n !== n) {
              throw new Error(`bench --peer: wllama counted ${r.timings.prompt_n} prompt tokens where ${n} were meant (the GGUF tokenizer disagrees with tokenizer.json)`);
            }
            return r;
          };
          say(`bench: peer: ${tag}: warm-up (${o.promptTokens} + ${o.newTokens} tokens)`);
          await gen(o.promptTokens, o.newTokens);
          const prefill = new Map<number, number | null>();
          for (const n of o.prefillLengths) {
            if (n >= ld.nCtx) {
              // llama.cpp's server refuses a prompt that fills the context (no room for the token)
              say(`bench: peer: ${tag}: prefill ${n}: skipped (context ${ld.nCtx})`);
              prefill.set(n, null);
              continue;
            }
            const tps: number[] = [];
            for (let i = 0; i < o.runs; i++) {
              const r = await gen(n, 1);
              tps.push(r.timings.prompt_per_second);
              say(`bench: peer: ${tag}: prefill ${n} run ${i + 1}/${o.runs}: ${r.timings.prompt_per_second.toFixed(1)} tok/s`);
            }
            prefill.set(n, median(tps));
          }
          const decode: number[] = [];
          for (let i = 0; i < o.runs; i++) {
            const r = await gen(o.promptTokens, o.newTokens);
            const t = r.timings;
            const tps = t.predicted_n > 1 && t.predicted_ms > 0 ? ((t.predicted_n - 1) * 1000) / t.predicted_ms : 0;
            decode.push(tps);
            say(`bench: peer: ${tag}: decode run ${i + 1}/${o.runs}: ${t.predicted_n} tokens, ${tps.toFixed(2)} tok/s`);
          }
          const decodeTps = median(decode);
          const { bytes: wBytes, elems: wElems, fallbacks } = matrices.get(type)!;
          const p64 = prefill.get(64) ?? null;
          const p512 = prefill.get(512) ?? null;
          const nib = o.nibble.find((r) => r.format === nibbleFormat);
          const ratio = (a: number | null | undefined, b: number | null) => (a != null && b != null && b > 0 ? a / b : null);
          const row: BenchPeerRow = {
            type: 'row',
            engine,
            peer: 'wllama',
            peerVersion: version,
            model: o.label,
            format: type,
            matches: nibbleFormat,
            adapter,
            threads: ld.threads,
            loadMs: ld.loadMs,
            weightBytes: statSync(join(o.ggufDir ?? defaultGgufDir(), files.get(type)!)).size,
            bitsPerWeight: wElems ? (8 * wBytes) / wElems : 0,
            contextLength: ld.nCtx,
            promptTokens: o.promptTokens,
            newTokens: o.newTokens,
            prefillTokensPerSecond: p64 ?? (o.prefillLengths.length ? (prefill.get(o.prefillLengths[0]!) ?? null) : null),
            prefill64TokensPerSecond: p64,
            prefill512TokensPerSecond: p512,
            decodeTokensPerSecond: decodeTps,
            msPerToken: decodeTps > 0 ? 1000 / decodeTps : Infinity,
            f16Fallbacks: fallbacks,
            nibbleRatio: nib
              ? { prefill64: ratio(nib.prefill64TokensPerSecond, p64), prefill512: ratio(nib.prefill512TokensPerSecond, p512), decode: ratio(nib.decodeTokensPerSecond, decodeTps) }
              : null,
          };
          say(`bench: peer: ${tag}: decode ${decodeTps.toFixed(2)} tok/s, prefill ${fmt(p64, 1)} / ${fmt(p512, 1)} tok/s`);
          emit(row);
        }
      }
    }
  } finally {
    await peer.close();
  }
  return out;
}

const ratioCell = (x: number | null | undefined) => (x == null || !Number.isFinite(x) ? '–' : x >= 0.995 ? `${x.toFixed(2)}×` : `${x.toFixed(3)}×`);

/**
 * nibble's rows and the peer's side by side, one line per (format, engine): prefill and decode
 * tokens/s, and nibble ÷ peer per matched format (> 1: nibble is faster).
 */
export function peerTable(nibble: readonly (NibbleSpeeds & { model: string })[], peers: readonly (BenchPeerRow | BenchPeerSkip)[]): string {
  const rows = peers.filter((p): p is BenchPeerRow => p.type === 'row');
  const head = '| model | format | engine | adapter | prefill 64 tok/s | prefill 512 tok/s | decode tok/s | nibble ÷ peer, prefill 64 | nibble ÷ peer, decode |';
  const sep = '|---|---|---|---|---:|---:|---:|---:|---:|';
  const lines = [head, sep];
  const formats = [...new Set([...nibble.map((r) => r.format), ...rows.map((r) => r.matches)])];
  for (const f of formats) {
    for (const n of nibble.filter((r) => r.format === f)) {
      lines.push(`| ${n.model} | ${f} | nibble | WebGPU${n.adapter ? `: ${n.adapter}` : ''} | ${fmt(n.prefill64TokensPerSecond, 1)} | ${fmt(n.prefill512TokensPerSecond, 1)} | ${fmt(n.decodeTokensPerSecond, 2)} | | |`);
    }
    for (const p of rows.filter((r) => r.matches === f)) {
      lines.push(
        `| ${p.model} | ${p.format} | ${p.engine} | ${p.adapter} | ${fmt(p.prefill64TokensPerSecond, 1)} | ${fmt(p.prefill512TokensPerSecond, 1)} | ${fmt(p.decodeTokensPerSecond, 2)} | ${ratioCell(p.nibbleRatio?.prefill64)} | ${ratioCell(p.nibbleRatio?.decode)} |`,
      );
    }
  }
  const ran = [...new Set(rows.map((r) => r.engine))];
  const notes = peers.filter((p): p is BenchPeerSkip => p.type === 'peer-skip').map((s) => `- ${s.engine}${s.format ? ` ${s.format}` : ''} did not run: ${s.reason}`);
  return [lines.join('\n'), '', `peer backends that ran: ${ran.length ? ran.join(', ') : 'none'}`, ...notes].join('\n');
}
