/** The demo page: load a model (URL, Hub id or a picked folder), generate with streaming text. */
import { BlobSource, Engine, type ModelSource } from '../src/index.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $<HTMLParagraphElement>('status');
const out = $<HTMLDivElement>('out');
const stats = $<HTMLParagraphElement>('stats');
const progress = $<HTMLProgressElement>('progress');
const goBtn = $<HTMLButtonElement>('go');
const stopBtn = $<HTMLButtonElement>('stop');
let engine: Engine | null = null;
let abort: AbortController | null = null;

status.textContent = 'gpu' in navigator ? 'WebGPU available. Load a model.' : 'This browser has no WebGPU (navigator.gpu is missing).';

function fail(e: unknown) {
  status.innerHTML = '';
  const span = document.createElement('span');
  span.className = 'err';
  span.textContent = String((e as Error).message ?? e);
  status.append(span);
}

async function load(model: string | ModelSource, label: string) {
  engine?.dispose();
  engine = null;
  goBtn.disabled = true;
  progress.hidden = false;
  progress.value = 0;
  status.textContent = `Loading ${label}…`;
  try {
    engine = await Engine.load(model, {
      quant: $<HTMLSelectElement>('quant').value,
      onProgress: (p) => (progress.value = p.bytesTotal ? p.bytesDone / p.bytesTotal : 1),
    });
    const i = engine.info;
    status.textContent = `${label}: ${i.config.numLayers} layers, ${i.quantKey} (${i.bitsPerWeight.toFixed(2)} bits/weight, ${(i.weightBytes / 2 ** 20).toFixed(1)} MiB) on ${i.adapter.summary}, loaded in ${(i.loadMs / 1000).toFixed(1)} s`;
    goBtn.disabled = false;
  } catch (e) {
    fail(e);
  } finally {
    progress.hidden = true;
  }
}

$<HTMLButtonElement>('load').onclick = () => {
  const m = $<HTMLInputElement>('model').value.trim();
  void load(m, m);
};
$<HTMLInputElement>('folder').onchange = (ev) => {
  const files = (ev.target as HTMLInputElement).files;
  if (files?.length) void load(new BlobSource(files), files[0].webkitRelativePath.split('/')[0] || 'folder');
};

goBtn.onclick = async () => {
  if (!engine) return;
  out.textContent = '';
  stats.textContent = '';
  abort = new AbortController();
  goBtn.disabled = true;
  stopBtn.disabled = false;
  try {
    const gen = engine.generate($<HTMLTextAreaElement>('prompt').value, {
      maxNewTokens: Number($<HTMLInputElement>('max').value) || 128,
      signal: abort.signal,
    });
    for await (const t of gen) out.textContent += t;
    const r = await gen.result;
    const t = r.timings;
    stats.textContent = `${r.tokenIds.length} tokens (${r.finishReason}) · prefill ${t.prefillMs.toFixed(0)} ms for ${r.promptTokenIds.length} tokens · decode ${t.decodeTokensPerSecond.toFixed(1)} tok/s`;
  } catch (e) {
    fail(e);
  } finally {
    goBtn.disabled = false;
    stopBtn.disabled = true;
  }
};
stopBtn.onclick = () => abort?.abort();
