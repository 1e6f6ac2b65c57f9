/**
 * nibble's chat demo. The engine runs in a dedicated worker (WorkerEngine): this page only posts
 * messages and renders. Model text is only ever put into the page with textContent.
 *
 *   ?hub=http://127.0.0.1:PORT   load Hub ids from a local Hub mirror (`nibble hub-serve`) instead of huggingface.co
 */
import type { FormatName } from '../src/quant/plan.ts';
import { WorkerEngine, isNibbleError, type ChatCompletionChunk, type ChatMessage, type GenerateResult, type Timings, type LoadProgress } from '../src/worker.ts';
import { deleteCachedModel, listCachedModels } from '../src/cache/index.ts';
import { FORMATS, bytes, entries, paramCount, roughGpuBytes, type CatalogueEntry, type Format } from './catalogue.ts';

const $ = <T extends HTMLElement>(id: string) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`demo/index.html has no #${id}`);
  return el as T;
};
const ui = {
  gpuInfo: $<HTMLParagraphElement>('gpu-info'),
  noWebgpu: $<HTMLDivElement>('no-webgpu'),
  catalogue: $<HTMLSelectElement>('catalogue'),
  catalogueNotes: $<HTMLParagraphElement>('catalogue-notes'),
  srcHub: $<HTMLInputElement>('src-hub'),
  srcUrl: $<HTMLInputElement>('src-url'),
  srcFolder: $<HTMLInputElement>('src-folder'),
  hubId: $<HTMLInputElement>('hub-id'),
  url: $<HTMLInputElement>('url'),
  folder: $<HTMLInputElement>('folder'),
  hubEndpoint: $<HTMLParagraphElement>('hub-endpoint'),
  format: $<HTMLSelectElement>('format'),
  formatInfo: $<HTMLParagraphElement>('format-info'),
  load: $<HTMLButtonElement>('load'),
  cancelLoad: $<HTMLButtonElement>('cancel-load'),
  loadProgress: $<HTMLDivElement>('load-progress'),
  progress: $<HTMLProgressElement>('progress'),
  progressText: $<HTMLParagraphElement>('progress-text'),
  modelInfo: $<HTMLParagraphElement>('model-info'),
  temperature: $<HTMLInputElement>('temperature'),
  topP: $<HTMLInputElement>('top-p'),
  maxTokens: $<HTMLInputElement>('max-tokens'),
  seed: $<HTMLInputElement>('seed'),
  speculative: $<HTMLInputElement>('speculative'),
  cacheList: $<HTMLUListElement>('cache-list'),
  cacheTotal: $<HTMLParagraphElement>('cache-total'),
  cacheRefresh: $<HTMLButtonElement>('cache-refresh'),
  cacheClear: $<HTMLButtonElement>('cache-clear'),
  mode: $<HTMLSelectElement>('mode'),
  newChat: $<HTMLButtonElement>('new-chat'),
  systemRow: $<HTMLDivElement>('system-row'),
  system: $<HTMLTextAreaElement>('system'),
  messages: $<HTMLOListElement>('messages'),
  status: $<HTMLParagraphElement>('status'),
  composer: $<HTMLFormElement>('composer'),
  input: $<HTMLTextAreaElement>('input'),
  send: $<HTMLButtonElement>('send'),
  stop: $<HTMLButtonElement>('stop'),
};

const query = new URLSearchParams(location.search);
/** The Hub to load Hub ids from: huggingface.co unless ?hub= names a mirror. */
const hubEndpoint = query.get('hub') || undefined;

interface Turn {
  role: 'user' | 'assistant';
  content: string;
}

let gpuOk = false;
let engine: WorkerEngine | null = null;
let loadAbort: AbortController | null = null;
let replyAbort: AbortController | null = null;
let busy = false;
/** Whether the loaded model has a chat template: from models.json, or learned on the first chat. */
let hasTemplate: boolean | undefined;
let draftLoaded = false;
let turns: Turn[] = [];
/** Bumped by New chat and by loads: a reply of an older conversation no longer writes into it. */
let conversation = 0;

// ---------------------------------------------------------------------------------------------
// small DOM helpers (text only: nothing here parses HTML)

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setStatus(text: string, error = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle('err', error);
}

function errorText(e: unknown): string {
  if (isNibbleError(e)) return `${e.code}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------
// WebGPU check and adapter info (the worker requests its own adapter and device)

function showNoWebGpu(title: string, steps: string[]): void {
  ui.noWebgpu.replaceChildren();
  ui.noWebgpu.append(el('strong', undefined, title));
  const ul = el('ul');
  for (const s of steps) ul.append(el('li', undefined, s));
  ui.noWebgpu.append(ul);
  ui.noWebgpu.hidden = false;
  ui.gpuInfo.textContent = 'No WebGPU';
}

async function checkWebGpu(): Promise<boolean> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) {
    const steps = [
      'Use a browser with WebGPU: Chrome or Edge 113 or later on Windows, macOS or ChromeOS (Chrome 121+ on Android), Safari 26+, or Firefox 141+ on Windows.',
      'On Linux, Chrome needs chrome://flags/#enable-unsafe-webgpu and #enable-vulkan turned on (or start it with --enable-unsafe-webgpu --enable-features=Vulkan).',
      'Check chrome://gpu: "WebGPU" should say "Hardware accelerated"; turn hardware acceleration on in the browser settings if it is off.',
    ];
    if (!window.isSecureContext) steps.unshift('WebGPU needs a secure context: open this page over https://, or from http://localhost or http://127.0.0.1.');
    showNoWebGpu('WebGPU is not available in this browser, so nibble cannot run models here.', steps);
    return false;
  }
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpu.requestAdapter();
  } catch {
    adapter = null;
  }
  if (!adapter) {
    showNoWebGpu('This browser has WebGPU, but it found no GPU adapter.', [
      'Turn hardware acceleration on in the browser settings and restart the browser.',
      'Check chrome://gpu for a blocklisted GPU or driver; updating the GPU driver often helps.',
      'On Linux, start Chrome with --enable-unsafe-webgpu --enable-features=Vulkan.',
    ]);
    return false;
  }
  const i = adapter.info;
  const name = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ') || 'unnamed adapter';
  ui.gpuInfo.textContent = `WebGPU adapter: ${name}${adapter.features.has('shader-f16') ? ' · shader-f16' : ''}${adapter.features.has('subgroups') ? ' · subgroups' : ''}`;
  return true;
}

// ---------------------------------------------------------------------------------------------
// model picker, sources, formats

function selectedEntry(): CatalogueEntry | undefined {
  const i = Number(ui.catalogue.value);
  return Number.isInteger(i) && i >= 0 ? entries[i] : undefined;
}

function fillCatalogue(): void {
  entries.forEach((e, i) => {
    const o = el('option', undefined, e.params ? `${e.label} · ${e.params}` : e.label);
    o.value = String(i);
    ui.catalogue.append(o);
  });
  const custom = el('option', undefined, 'Other…');
  custom.value = '-1';
  ui.catalogue.append(custom);
}

function applyEntry(): void {
  const e = selectedEntry();
  ui.catalogueNotes.textContent = e
    ? [
        e.family,
        e.params && `${e.params} parameters`,
        e.contextLength && `context ${e.contextLength}`,
        e.chatTemplate === undefined ? '' : e.chatTemplate ? 'chat template' : 'no chat template (base model)',
        e.draft && `suggested draft: ${e.draft}`,
        e.notes,
      ]
        .filter(Boolean)
        .join(' · ')
    : 'Other: any Hugging Face model of a supported family (llama, mistral, qwen2) with safetensors weights, by Hub id, URL or folder.';
  if (e) {
    if (e.source.kind === 'hub') {
      ui.hubId.value = e.source.value;
      ui.srcHub.checked = true;
    } else {
      ui.url.value = e.source.value;
      ui.srcUrl.checked = true;
    }
    if (e.defaultFormat && (FORMATS as readonly string[]).includes(e.defaultFormat)) ui.format.value = e.defaultFormat;
  }
  describeFormats();
}

/** Typing a Hub id or URL selects its catalogue entry, or "Other". */
function matchCatalogue(value: string): void {
  const i = entries.findIndex((e) => e.source.value === value.trim());
  if (String(i) === ui.catalogue.value) return;
  ui.catalogue.value = String(i);
  if (i >= 0) applyEntry();
  else {
    ui.catalogueNotes.textContent = 'Other: any Hugging Face model of a supported family (llama, mistral, qwen2) with safetensors weights, by Hub id, URL or folder.';
    describeFormats();
  }
}

/** The format options' labels: each format's estimated GPU memory (models.json, else a rough one from the parameter count). */
function describeFormats(): void {
  const e = ui.catalogue.value === '-1' ? undefined : selectedEntry();
  const n = paramCount(e?.params);
  for (const o of Array.from(ui.format.options)) {
    const f = o.value as Format;
    const exact = e?.gpuBytes[f];
    const est = exact ?? (n ? roughGpuBytes(n, f) : undefined);
    o.textContent = est === undefined ? f : `${f} — GPU ${exact !== undefined ? '' : '≈'}${bytes(est)}`;
  }
  const f = ui.format.value as Format;
  const parts: string[] = [];
  if (e?.downloadBytes !== undefined) parts.push(`Download ≈ ${bytes(e.downloadBytes)}: the checkpoint, whatever the format (nothing once cached).`);
  else parts.push('Download: the checkpoint as published, whatever the format (nothing once cached).');
  const total = e?.gpuBytes[f];
  if (total !== undefined) {
    const w = e?.weightBytes[f];
    parts.push(`GPU ≈ ${bytes(total)} at ${f}${w !== undefined ? ` (weights ${bytes(w)})` : ''}${e?.gpuContextLength ? `, context ${e.gpuContextLength}` : ''} (models.json).`);
  } else if (n) parts.push(`GPU ≈ ${bytes(roughGpuBytes(n, f))} for the weights at ${f} (rough: parameters × bits per weight; the exact estimate is shown once loaded).`);
  ui.formatInfo.textContent = parts.join(' ');
}

type Source = { model: string | FileList; label: string };

function selectedSource(): Source | string {
  if (ui.srcFolder.checked) {
    const files = ui.folder.files;
    if (!files?.length) return 'Pick a model folder first.';
    return { model: files, label: files[0].webkitRelativePath.split('/')[0] || 'picked folder' };
  }
  if (ui.srcUrl.checked) {
    const u = ui.url.value.trim();
    return u ? { model: u, label: u } : 'Type the URL of a model folder first.';
  }
  const id = ui.hubId.value.trim();
  if (!id) return 'Type a Hub id (org/name) first.';
  return { model: id, label: id };
}

// ---------------------------------------------------------------------------------------------
// loading

const PHASES: Record<LoadProgress['phase'], string> = {
  metadata: 'Reading config, tokenizer and safetensors headers',
  cache: 'Reading weights from the browser cache',
  weights: 'Downloading weights from the network',
  quantize: 'Quantizing on the GPU',
  compile: 'Compiling GPU pipelines',
  done: 'Ready',
};

function showProgress(p: LoadProgress, seen: Set<string>): void {
  seen.add(p.phase);
  ui.loadProgress.dataset.phases = [...seen].join(' ');
  ui.progress.value = p.fraction ?? (p.bytesTotal ? p.bytesDone / p.bytesTotal : 0);
  let detail = '';
  if (p.phase === 'cache' || p.phase === 'weights' || p.phase === 'quantize') {
    detail = `: ${bytes(p.bytesDone)} of ${bytes(p.bytesTotal)} · ${p.tensorsDone}/${p.tensorsTotal} tensors`;
  } else if (p.phase === 'compile' && p.pipelinesTotal) {
    detail = `: ${p.pipelinesDone ?? 0}/${p.pipelinesTotal} pipelines`;
  }
  ui.progressText.textContent = `${PHASES[p.phase] ?? p.phase}${detail} (${Math.round(100 * ui.progress.value)}%)`;
}

function setLoading(on: boolean): void {
  ui.load.disabled = on || !gpuOk;
  ui.cancelLoad.hidden = !on;
  updateComposer();
}

async function load(): Promise<void> {
  const src = selectedSource();
  if (typeof src === 'string') {
    setStatus(src, true);
    return;
  }
  if (loadAbort) return; // one load at a time (Cancel first)
  const abort = (loadAbort = new AbortController());
  const entry = ui.catalogue.value !== '-1' && selectedEntry()?.source.value === (typeof src.model === 'string' ? src.model : '') ? selectedEntry() : undefined;
  const quant = ui.format.value as FormatName; // the selector's options are format names
  const spec = ui.speculative.checked;
  const seen = new Set<string>();
  ui.loadProgress.hidden = false;
  ui.loadProgress.dataset.state = 'loading';
  ui.loadProgress.dataset.phases = '';
  delete ui.loadProgress.dataset.from;
  ui.progress.value = 0;
  ui.progressText.textContent = 'Starting the worker…';
  ui.modelInfo.textContent = '';
  setStatus(`Loading ${src.label} at ${quant}${spec ? ' with a self-draft for speculative decoding' : ''}…`);
  setLoading(true);
  // the previous model's worker goes first (its GPU memory is freed before the next load)
  replyAbort?.abort();
  const old = engine;
  engine = null;
  draftLoaded = false;
  hasTemplate = undefined;
  conversation++;
  await old?.dispose();
  try {
    engine = await WorkerEngine.load(src.model, {
      quant,
      ...(hubEndpoint ? { hubEndpoint } : {}),
      ...(spec ? { draft: { quant: 'nf4', tokens: 4 } } : {}),
      onProgress: (p) => showProgress(p, seen),
      signal: abort.signal,
    });
    draftLoaded = !!engine.info.draft;
    hasTemplate = entry?.chatTemplate;
    const i = engine.info;
    const c = i.config;
    const fromCache = i.load?.cache === 'hit' || !seen.has('weights');
    const where = typeof src.model === 'string' ? 'network' : 'local files';
    const from = fromCache ? 'from the browser cache' : seen.has('cache') ? `partly from the cache, partly from the ${where}` : `from the ${where}`;
    ui.loadProgress.dataset.state = 'done';
    ui.loadProgress.dataset.from = fromCache ? 'cache' : typeof src.model === 'string' ? 'network' : 'local';
    ui.progress.value = 1;
    ui.progressText.textContent = `Loaded ${from} in ${(i.loadMs / 1000).toFixed(1)} s${i.load ? ` · ${bytes(i.load.bytesDownloaded)} downloaded, ${bytes(i.load.bytesFromCache)} from cache` : ''}`;
    ui.modelInfo.textContent =
      `${i.model}: ${c.modelType}, ${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads}:${c.numKvHeads} heads, vocab ${c.vocabSize}; ` +
      `${i.quantKey} (${i.bitsPerWeight.toFixed(2)} bits/weight), weights ${bytes(i.weightBytes)}, GPU ≈ ${bytes(i.gpuMemory?.total)}, context ${i.contextLength} tokens` +
      (i.draft ? `; draft ${i.draft.quantKey} (${bytes(i.draft.weightBytes)}), k = ${i.draft.tokens}` : '');
    ui.gpuInfo.textContent = `WebGPU adapter (worker): ${i.adapter.summary}${i.features.f16 ? ' · f16' : ''}${i.features.subgroups ? ' · subgroups' : ''}${i.adapter.cpuBacked ? ' · software (CPU) adapter' : ''}`;
    setStatus(`${src.label} is ready.${hasTemplate === false ? ' It has no chat template: Auto mode uses raw completion.' : ''}`);
    newChat();
  } catch (e) {
    ui.loadProgress.dataset.state = 'error';
    const aborted = isNibbleError(e) && e.code === 'aborted';
    ui.progressText.textContent = aborted ? 'Load cancelled.' : 'Load failed.';
    setStatus(aborted ? 'Load cancelled.' : `Could not load ${src.label}: ${errorText(e)}`, !aborted);
  } finally {
    loadAbort = null;
    setLoading(false);
    void refreshCache();
  }
}

// ---------------------------------------------------------------------------------------------
// conversation

function effectiveMode(): 'chat' | 'raw' | 'auto' {
  const m = ui.mode.value;
  if (m === 'auto') return hasTemplate === false ? 'raw' : hasTemplate === true ? 'chat' : 'auto';
  return m as 'chat' | 'raw';
}

function updateComposer(): void {
  const ready = !!engine && !loadAbort;
  ui.input.disabled = !ready;
  ui.send.disabled = !ready || busy;
  ui.stop.disabled = !busy;
  ui.systemRow.hidden = effectiveMode() === 'raw';
}

interface Bubble {
  li: HTMLLIElement;
  text: HTMLDivElement;
  stats: HTMLDivElement;
}

function addMessage(role: 'user' | 'assistant' | 'note', content: string): Bubble {
  const li = el('li', `msg ${role}`);
  li.dataset.role = role;
  if (role !== 'note') li.append(el('div', 'role', role === 'user' ? 'You' : 'Assistant'));
  const text = el('div', 'text', content);
  const stats = el('div', 'stats');
  li.append(text, stats);
  ui.messages.append(li);
  li.scrollIntoView({ block: 'end' });
  return { li, text, stats };
}

function newChat(): void {
  replyAbort?.abort();
  conversation++;
  turns = [];
  ui.messages.replaceChildren();
  updateComposer();
}

/** Raw mode: the model continues the whole conversation's text (no template; a space where two turns would run together). */
function rawPrompt(): string {
  let s = '';
  for (const t of turns) {
    if (s && t.content && !/\s$/.test(s) && !/^[\s.,;:!?'")\]]/.test(t.content)) s += ' ';
    s += t.content;
  }
  return s;
}

function settings() {
  const num = (i: HTMLInputElement, d: number) => (i.value.trim() === '' || !Number.isFinite(Number(i.value)) ? d : Number(i.value));
  const seed = ui.seed.value.trim() === '' ? undefined : Math.trunc(Number(ui.seed.value));
  return {
    temperature: Math.max(0, num(ui.temperature, 0.7)),
    topP: Math.min(1, Math.max(0.01, num(ui.topP, 1))),
    maxTokens: Math.max(1, Math.trunc(num(ui.maxTokens, 256))),
    seed: Number.isFinite(seed) ? seed : undefined,
    speculative: draftLoaded ? ui.speculative.checked : undefined,
  };
}

function showStats(b: Bubble, s: { promptTokens: number; cached: number; tokens: number; timings?: Timings; finish: string; speculative?: { acceptanceRate: number; tokensPerTargetPass: number } }): void {
  const t = s.timings;
  const parts = [`${s.tokens} tokens`];
  if (t) {
    parts.push(`decode ${t.decodeTokensPerSecond.toFixed(1)} tok/s`);
    parts.push(`prompt ${s.promptTokens} tokens${s.cached ? ` (${s.cached} cached)` : ''}, prefill ${t.prefillTokensPerSecond.toFixed(1)} tok/s in ${t.prefillMs.toFixed(0)} ms`);
  }
  if (s.speculative) parts.push(`draft acceptance ${(100 * s.speculative.acceptanceRate).toFixed(0)}%, ${s.speculative.tokensPerTargetPass.toFixed(2)} tokens/pass`);
  parts.push(s.finish);
  b.stats.textContent = parts.join(' · ');
  b.li.dataset.tokens = String(s.tokens);
  b.li.dataset.finish = s.finish;
  if (t) {
    b.li.dataset.decodeTps = String(t.decodeTokensPerSecond);
    b.li.dataset.prefillTps = String(t.prefillTokensPerSecond);
  }
}

async function replyRaw(b: Bubble, turn: Turn, signal: AbortSignal, id: number): Promise<void> {
  const s = settings();
  const gen = engine!.generate(rawPrompt(), { maxNewTokens: s.maxTokens, temperature: s.temperature, topP: s.topP, seed: s.seed, speculative: s.speculative, signal });
  for await (const piece of gen) {
    if (id !== conversation) continue;
    turn.content += piece;
    b.text.textContent = turn.content;
  }
  const r: GenerateResult = await gen.result;
  if (id !== conversation) return;
  showStats(b, { promptTokens: r.promptTokenIds.length, cached: r.cachedPromptTokens, tokens: r.tokenIds.length, timings: r.timings, finish: finishLabel(r.finishReason), speculative: r.speculative });
}

async function replyChat(b: Bubble, turn: Turn, signal: AbortSignal, id: number): Promise<void> {
  const s = settings();
  const system = ui.system.value.trim();
  const messages: ChatMessage[] = [...(system ? [{ role: 'system', content: system }] : []), ...turns.filter((t) => t !== turn)];
  const stream = await engine!.chat.completions.create({
    messages,
    stream: true,
    max_tokens: s.maxTokens,
    temperature: s.temperature,
    top_p: s.topP,
    seed: s.seed,
    ...(s.speculative === undefined ? {} : { speculative: s.speculative }),
    signal,
  });
  hasTemplate = true;
  let last: ChatCompletionChunk | null = null;
  for await (const c of stream) {
    if (id !== conversation) continue;
    const d = c.choices[0]?.delta?.content;
    if (d) {
      turn.content += d;
      b.text.textContent = turn.content;
    }
    if (c.usage) last = c;
  }
  if (id !== conversation || !last) return;
  showStats(b, {
    promptTokens: last.usage!.prompt_tokens,
    cached: last.usage!.prompt_tokens_details.cached_tokens,
    tokens: last.usage!.completion_tokens,
    timings: last.timings,
    finish: finishLabel(last.choices[0]?.finish_reason ?? 'stop'),
    speculative: last.speculative,
  });
}

function finishLabel(r: string): string {
  return r === 'length' ? 'stopped at max tokens' : r === 'abort' ? 'stopped' : 'end of reply';
}

async function send(): Promise<void> {
  const text = ui.input.value;
  if (!engine || busy || !text.trim()) return;
  ui.input.value = '';
  const id = conversation;
  const user: Turn = { role: 'user', content: text };
  turns.push(user);
  addMessage('user', text);
  const turn: Turn = { role: 'assistant', content: '' };
  const b = addMessage('assistant', '');
  b.li.classList.add('streaming');
  b.li.dataset.state = 'streaming';
  turns.push(turn);
  const abort = (replyAbort = new AbortController());
  busy = true;
  updateComposer();
  setStatus('Generating…');
  let state = 'done';
  try {
    const mode = effectiveMode();
    if (mode === 'raw') await replyRaw(b, turn, abort.signal, id);
    else {
      try {
        await replyChat(b, turn, abort.signal, id);
      } catch (e) {
        if (mode !== 'auto' || !isNibbleError(e) || e.code !== 'no-chat-template' || turn.content) throw e;
        // a base model: say so once, then continue the text instead
        hasTemplate = false;
        updateComposer();
        ui.messages.insertBefore(addMessage('note', 'This model has no chat template: Auto mode continues the text (raw completion).').li, b.li);
        await replyRaw(b, turn, abort.signal, id);
      }
    }
    if (abort.signal.aborted) state = 'stopped';
    setStatus(abort.signal.aborted ? 'Stopped.' : '');
  } catch (e) {
    if (abort.signal.aborted || (isNibbleError(e) && e.code === 'aborted')) {
      state = 'stopped';
      if (!b.stats.textContent) b.stats.textContent = `${finishLabel('abort')} by you`;
      b.li.dataset.finish = 'stopped';
      setStatus('Stopped.');
    } else {
      state = 'error';
      b.stats.textContent = '';
      b.li.append(el('div', 'err', errorText(e)));
      setStatus(`The reply failed: ${errorText(e)}`, true);
      if (!turn.content) turns.splice(turns.indexOf(turn), 1);
    }
  } finally {
    b.li.classList.remove('streaming');
    b.li.dataset.state = state;
    if (replyAbort === abort) replyAbort = null;
    busy = false;
    updateComposer();
    if (id === conversation) ui.input.focus();
  }
}

// ---------------------------------------------------------------------------------------------
// cache panel (the same origin's store the worker writes: OPFS, else the Cache API)

async function refreshCache(): Promise<void> {
  try {
    const models = await listCachedModels();
    ui.cacheList.replaceChildren();
    let total = 0;
    for (const m of models) {
      total += m.bytes;
      const li = el('li');
      li.dataset.key = m.key;
      const name = el('span', 'name', `${m.description || m.cacheId} — ${bytes(m.bytes)} (${m.formats.join(', ')})`);
      name.title = m.cacheId;
      const del = el('button', undefined, 'Delete');
      del.type = 'button';
      del.setAttribute('aria-label', `Delete ${m.description || m.cacheId} from the cache`);
      del.onclick = async () => {
        await deleteCachedModel(m.key);
        await refreshCache();
      };
      li.append(name, del);
      ui.cacheList.append(li);
    }
    ui.cacheTotal.textContent = models.length ? `${models.length} model${models.length > 1 ? 's' : ''}, ${bytes(total)} in all.` : 'Nothing cached yet.';
    ui.cacheClear.disabled = models.length === 0;
  } catch (e) {
    ui.cacheTotal.textContent = `The cache could not be read: ${errorText(e)}`;
  }
}

async function clearCache(): Promise<void> {
  ui.cacheClear.disabled = true;
  try {
    for (const m of await listCachedModels()) await deleteCachedModel(m.key);
  } finally {
    await refreshCache();
  }
}

// ---------------------------------------------------------------------------------------------
// wiring

ui.hubEndpoint.textContent = hubEndpoint ? `Hub ids load from the mirror at ${hubEndpoint}.` : 'Hub ids load from huggingface.co (a local mirror: add ?hub=http://127.0.0.1:PORT to this page\'s URL).';
fillCatalogue();
ui.catalogue.onchange = applyEntry;
ui.format.onchange = describeFormats;
ui.hubId.oninput = () => {
  ui.srcHub.checked = true;
  matchCatalogue(ui.hubId.value);
};
ui.url.oninput = () => {
  ui.srcUrl.checked = true;
  matchCatalogue(ui.url.value);
};
ui.folder.onchange = () => {
  if (!ui.folder.files?.length) return;
  ui.srcFolder.checked = true;
  matchCatalogue('');
};
for (const r of [ui.srcHub, ui.srcUrl, ui.srcFolder]) r.onchange = () => r.checked && r === ui.srcFolder && !ui.folder.files?.length && ui.folder.click();
ui.load.onclick = () => void load();
ui.cancelLoad.onclick = () => loadAbort?.abort();
ui.mode.onchange = updateComposer;
ui.newChat.onclick = () => {
  newChat();
  ui.input.focus();
};
ui.composer.onsubmit = (ev) => {
  ev.preventDefault();
  void send();
};
ui.input.onkeydown = (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    void send();
  }
};
ui.stop.onclick = () => replyAbort?.abort();
ui.cacheRefresh.onclick = () => void refreshCache();
ui.cacheClear.onclick = () => void clearCache();

// default: the dev server's test model (`npm run demo`), or a Hub id from ?model=
const stories = entries.findIndex((e) => e.source.kind === 'url');
ui.catalogue.value = String(stories >= 0 ? stories : entries.length ? 0 : -1);
applyEntry();
const preset = query.get('model');
if (preset) {
  const i = entries.findIndex((e) => e.source.value === preset);
  ui.catalogue.value = String(i); // -1: "Other"
  if (i >= 0) applyEntry();
  else if (/^[a-z][a-z0-9+.-]*:|^[./]/i.test(preset)) {
    ui.url.value = preset;
    ui.srcUrl.checked = true;
  } else {
    ui.hubId.value = preset;
    ui.srcHub.checked = true;
  }
  describeFormats();
}
updateComposer();
void refreshCache();
setLoading(false);
ui.load.disabled = true;
void checkWebGpu().then((ok) => {
  gpuOk = ok;
  setLoading(false);
  document.body.dataset.ready = ok ? 'yes' : 'no-webgpu';
  if (ok) setStatus('Pick a model and a format, then Load.');
});
