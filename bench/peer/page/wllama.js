// The peer benchmark's page (bench/peer/wllama.ts drives it through puppeteer): llama.cpp compiled
// to WebAssembly by @wllama/wllama, served from node_modules by the runtime host under
// /peer/wllama/, the GGUF files under /peer/gguf/. The host sends COOP / COEP, so the page is
// crossOriginIsolated and wllama runs its multi-threaded build. Plain JS: served as is, not built.
import { Wllama } from '/peer/wllama/index.js';

let wllama = null;
let log = [];

const line = (...a) => a.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(' ');
const logger = {
  debug: (...a) => log.push(line(...a)),
  log: (...a) => log.push(line(...a)),
  warn: (...a) => log.push('warn: ' + line(...a)),
  error: (...a) => log.push('error: ' + line(...a)),
};

/** Which backend holds the weights, from llama.cpp's load log ("<name> model buffer size = ..."). */
function buffers() {
  const names = [];
  for (const l of log) {
    const m = /load_tensors:\s+(\S+) model buffer size/.exec(l);
    if (m) names.push(m[1]);
  }
  return names;
}

async function gpuAdapter() {
  try {
    const a = await navigator.gpu?.requestAdapter();
    if (!a) return { available: false, features: [] };
    const i = a.info ?? {};
    return { available: true, summary: [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' / '), features: [...a.features] };
  } catch (e) {
    return { available: false, features: [], error: String(e) };
  }
}

const peer = {
  async info() {
    return {
      crossOriginIsolated: globalThis.crossOriginIsolated === true,
      hardwareConcurrency: navigator.hardwareConcurrency,
      webgpu: await gpuAdapter(),
    };
  },
  /** Loads a GGUF; backend 'wasm' (n_gpu_layers 0: the CPU build only) or 'webgpu' (every layer offloaded). */
  async load({ url, backend, nCtx, nThreads }) {
    await peer.unload();
    log = [];
    wllama = new Wllama({ default: '/peer/wllama/wasm/wllama.wasm' }, { logger, suppressNativeLog: false, allowOffline: false });
    const t0 = performance.now();
    const blob = await (await fetch(url)).blob();
    await wllama.loadModel([blob], {
      n_ctx: nCtx,
      n_batch: Math.min(nCtx, 512),
      n_ubatch: Math.min(nCtx, 512),
      n_threads: nThreads,
      n_gpu_layers: backend === 'webgpu' ? 999 : 0,
      n_parallel: 1,
      // nibble's KV cache is f32: the same here, so both do the same work and the greedy output can match
      cache_type_k: 'f32',
      cache_type_v: 'f32',
      warmup: true,
    });
    const loadMs = performance.now() - t0;
    const ctx = wllama.getLoadedContextInfo();
    const bufs = buffers();
    return {
      loadMs,
      multithread: wllama.isMultithread(),
      threads: wllama.getNumThreads(),
      nCtx: ctx.n_ctx,
      nVocab: ctx.n_vocab,
      addBos: ctx.add_bos_token,
      buffers: bufs,
      // the weights are on the GPU only if llama.cpp put them in a buffer other than the CPU's
      offloaded: bufs.some((b) => !/^CPU/i.test(b)),
      log: log.filter((l) => /webgpu|offload|model buffer|error|warn/i.test(l)).slice(0, 40),
    };
  },
  /** One greedy completion of `prompt` (text); `nProbs` > 0 returns each generated token's id and top logprobs. */
  async complete({ prompt, maxTokens, nProbs = 0, ignoreEos = true }) {
    if (!wllama) throw new Error('no model loaded');
    const r = await wllama.createCompletion({
      prompt,
      max_tokens: maxTokens,
      temperature: 0,
      ignore_eos: ignoreEos,
      cache_prompt: false,
      ...(nProbs > 0 ? { logprobs: nProbs, n_probs: nProbs } : {}),
    });
    const c = r.choices[0];
    const content = c.logprobs && Array.isArray(c.logprobs.content) ? c.logprobs.content : null;
    return {
      text: c.text,
      finishReason: c.finish_reason,
      usage: r.usage,
      timings: r.timings,
      tokens: content ? content.map((t) => ({ id: t.id, logprob: t.logprob, top: (t.top_logprobs ?? []).map((x) => ({ id: x.id, logprob: x.logprob })) })) : null,
    };
  },
  async unload() {
    if (wllama) {
      const w = wllama;
      wllama = null;
      await w.exit().catch(() => {});
    }
  },
};

/** Runs a method; errors come back as data so Node can report them. */
globalThis.nibblePeer = {
  async run(method, args) {
    try {
      return { ok: await peer[method](args ?? {}) };
    } catch (e) {
      return { error: e instanceof Error ? `${e.name}: ${e.message}` : String(e), log: log.slice(-20) };
    }
  },
};
