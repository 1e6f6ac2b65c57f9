import { FORMAT_NAMES, isFormatName, type FormatName } from '../quant/plan.ts';
import { parseArgs } from 'node:util';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { classifyModel, hubToken, RUNTIMES, RuntimeHost, type RuntimeName } from './host.ts';
import { resolveSource } from '../api/resolve.ts';
import { repoRoot } from './paths.ts';
import { NibbleError } from '../errors.ts';
import type { GpuMode } from './browser.ts';
import { createInterface } from 'node:readline';
import type { EngineInfo } from '../api/engine.ts';
import type { ChatJobResult, JobLoadOptions } from '../runner.ts';
import type { SamplingOptions } from '../generate/sampling.ts';
import type { ChatMessage } from '../api/chat.ts';

/**
 * nibble's command line. Engine work runs on WebGPU in headless Chromium or in Deno (RuntimeHost,
 * --runtime); the Hub mirror and the synthetic-model writer run in Node (or in Deno, which runs
 * this bundle too: the GPU-machine kit, bench/device/).
 *
 * Every command has its own usage (`nibble <command> --help`). Usage errors (unknown or malformed
 * flags, values out of range, missing required flags, no arguments at all) print the command's
 * usage on stderr and exit 2; other errors exit 1 with the NibbleError code.
 */
const MODEL_HELP = `Model M: a local folder in Hugging Face layout, a URL of one, or a Hub id "org/name".
Model options:
  --quant Q            f32 (default), f16, int8, nf4, nf4-dq
  --context-length N   KV cache length, 1 to the model's max_position_embeddings
                       (default min(max_position_embeddings, 4096); above the maximum: the maximum, with a warning)
  --gpu MODE           auto (default) | swiftshader | native
  --runtime R          chromium (default: headless Chromium) | deno (Deno's WebGPU, wgpu: the deno
                       devDependency or $NIBBLE_DENO; weights cached in $NIBBLE_CACHE_DIR or .cache/weights)
  --hub URL            Hub endpoint (default $HF_ENDPOINT or https://huggingface.co)
  --revision REV       Hub revision (default main)
  --token TOKEN        Hub access token (default $HF_TOKEN); sent only to the Hub endpoint, never
                       to a model URL or local folder on another origin`;

const SAMPLING_HELP = `Generation:
  --max-new-tokens N   most tokens to generate
  --temperature T      ≥ 0; 0 = greedy (generate's default); sampling runs on the GPU
  --top-k K            integer ≥ 0 (0: off)      --top-p P   in (0, 1]      --min-p P   in [0, 1]
  --repetition-penalty R   > 0 (HF semantics)
  --seed S             seed of the draw (0..4294967295): the same seed and settings give the same text
  --stop TEXT          stop string (repeatable); it is not printed
  --draft M2           speculative decoding with draft model M2 ("self" or M itself: the target's
                       checkpoint again at --draft-quant, default nf4); --draft-tokens K per round (1..32, default 4)`;

const USAGE_GENERATE = `Usage: nibble generate --model M --prompt TEXT [--max-new-tokens N (128)] [--json] [options]

Generates text after TEXT. Streams it to stdout (timings on stderr); --json prints one object
{ text, promptTokenIds, tokenIds, finishReason, timings, adapter, ... } instead.

${MODEL_HELP}
${SAMPLING_HELP}`;

const USAGE_CHAT = `Usage: nibble chat --model M [--system TEXT] [--max-new-tokens N] [--stats] [options]

A terminal chat (reads one user message per line from stdin when it is not a terminal).
/reset clears the history, /exit quits. Ctrl-C stops a reply; Ctrl-C at the prompt exits (130).
When the conversation outgrows the context the oldest turns are dropped (the system prompt stays). Sampling defaults come from generation_config.json, else
temperature 0.7, top-p 0.9. --stats prints each turn's token counts and speed on stderr (always
on in a terminal).

${MODEL_HELP}
${SAMPLING_HELP}`;

const USAGE_EVAL = `Usage: nibble eval --model M --text-file F [--json] [options]

Perplexity of the model over the text of F, with the format's bits per weight.

${MODEL_HELP}`;

const USAGE_HUB_SERVE = `Usage: nibble hub-serve --dir DIR [--port N] [--host H] [--latency-ms MS] [--cut-after BYTES] [--fail-rate P]

A local Hugging Face Hub mirror of DIR/<org>/<name>/<files> (set HF_ENDPOINT or --hub to its URL).
Only files whose real path is inside DIR are served (symlinks pointing out of it are not).
  --port N             0..65535 (default 0: any free port)
  --host H             address to bind (default 127.0.0.1)
  --latency-ms MS, --cut-after BYTES, --fail-rate P (0..1)   fault injection on *.safetensors`;

const USAGE_BENCH = `Usage: nibble bench [--model M | --shape S] [--quant Q1,Q2,...] [--prompt-tokens N] [--new-tokens N] [--runs N]
                   [--prefill-lengths N1,N2,...] [--prefill-runs N] [--draft-quant Q [--draft-tokens K] [--draft-pipeline on|off]] [--matmul V]
                   [--kv-cache f32|f16] [--profile]
                   [--probe-mib N] [--peer wllama [--peer-backends wasm,webgpu] [--peer-threads N1,...]]
                   [--json] [--out FILE]

A roofline probe, then per format prefill of 64- and 512-token prompts (--prefill-lengths; "" for
none) and decode of --new-tokens
(32) after --prompt-tokens (64), medians of --runs (3; prompts over 128 tokens: --prefill-runs, 1),
every prompt uncached. --shape S (default
smollm2-135m; also smollm2-360m, llama-3.2-1b, qwen2.5-0.5b) benches a synthetic model of that
shape; --draft-quant Q adds a self-speculative row per format (decode only, its runs interleaved
with plain decoding on the same engine for speedupVsPlain; --draft-pipeline on|off sets
LoadOptions.draft.pipeline, default off on CPU adapters); --profile adds per-kernel GPU time
(timestamp-query); --json prints one JSON object per line; --matmul auto|subgroup|workgroup|row
forces the matmul kernel variant; --kv-cache f16 stores the KV cache as f16 (half its bytes);
progress goes to stderr. --peer wllama then runs llama.cpp
(@wllama/wllama) on the same weights as GGUF (F32, Q8_0, Q4_0 beside nibble's f32, int8, nf4; the
default --quant with a peer) in the same browser, on its WebAssembly CPU backend and its WebGPU
backend where the adapter allows (--peer-threads: the CPU backend's thread counts, default the
cores), and prints both engines side by side. See bench/README.md.

${MODEL_HELP}`;

const USAGE_SYNTH = `Usage: nibble synth --shape S [--dtype bf16|f16|f32] [--out DIR] [--shards N] [--layers N] [--seed N]

Writes a synthetic model (random weights) of a real shape: smollm2-135m, smollm2-360m,
llama-3.2-1b, qwen2.5-0.5b (default folder .cache/synth/...).`;

const USAGE = `nibble — LLM inference on WebGPU

Usage:
  nibble generate --model M --prompt TEXT [options]   generate text
  nibble chat --model M [options]                     interactive chat
  nibble eval --model M --text-file F [options]       perplexity
  nibble hub-serve --dir DIR [--port N]               local Hub mirror
  nibble bench [--model M | --shape S] [options]      benchmark
  nibble synth --shape S [options]                    synthetic model of a real shape
  nibble --version

Run "nibble <command> --help" for a command's options. Usage errors exit 2, other errors 1.`;

class UsageError extends Error {}

type Options = Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>;
type Values = Record<string, string | boolean | string[] | undefined>;

const COMMON = {
  model: { type: 'string' },
  quant: { type: 'string' },
  'context-length': { type: 'string' },
  gpu: { type: 'string' },
  runtime: { type: 'string' },
  hub: { type: 'string' },
  revision: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Sampling, stop and draft options of generate and chat. */
const GENERATION = {
  'max-new-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  draft: { type: 'string' },
  'draft-quant': { type: 'string' },
  'draft-tokens': { type: 'string' },
} as const;

/**
 * parseArgs with nibble's rules: a string option takes the next argument as its value even when it
 * starts with "-" (`--top-k -1`, `--prompt "-x"`), unless that argument is one of the command's own
 * flags; every parse failure is a UsageError.
 */
export function parseFlags(argv: string[], options: Options): Values {
  const flag = (a: string): boolean => {
    if (a === '--') return true;
    const m = /^--([^=]+)/.exec(a);
    if (m) return m[1] in options;
    return /^-[a-zA-Z]$/.test(a) && Object.values(options).some((o) => o.short === a[1]);
  };
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([^=]+)$/.exec(a);
    if (m && options[m[1]]?.type === 'string' && i + 1 < argv.length && argv[i + 1].startsWith('-') && !flag(argv[i + 1])) {
      args.push(`${a}=${argv[++i]}`);
    } else args.push(a);
  }
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values as Values;
  } catch (e) {
    if (String((e as { code?: string }).code).startsWith('ERR_PARSE_ARGS')) {
      throw new UsageError((e as Error).message.split('\n')[0].replace(/ To specify an option argument.*$/, ''));
    }
    throw e;
  }
}

function str(v: Values, name: string): string | undefined {
  const x = v[name];
  return typeof x === 'string' ? x : undefined;
}

interface Bounds {
  min?: number;
  max?: number;
  /** min is exclusive */
  above?: boolean;
}

function describeBounds(b: Bounds, kind: string): string {
  if (b.min !== undefined && b.max !== undefined) return `${kind} in ${b.above ? '(' : '['}${b.min}, ${b.max}]`;
  if (b.min !== undefined) return `${kind} ${b.above ? '>' : '≥'} ${b.min}`;
  return kind;
}

function checkBounds(n: number, b: Bounds): boolean {
  if (b.min !== undefined && (b.above ? n <= b.min : n < b.min)) return false;
  if (b.max !== undefined && n > b.max) return false;
  return true;
}

/** An integer flag: undefined → `def`; empty, not an integer, or out of bounds → UsageError. */
function int(v: string | undefined, name: string, def?: number, b: Bounds = { min: 0 }): number | undefined {
  if (v === undefined) return def;
  const want = describeBounds(b, 'an integer');
  if (v.trim() === '') throw new UsageError(`--${name} needs a value (${want})`);
  const n = Number(v);
  if (!/^\s*[+-]?\d+\s*$/.test(v) || !Number.isSafeInteger(n) || !checkBounds(n, b)) throw new UsageError(`--${name} must be ${want}, got "${v}"`);
  return n;
}

/** A number flag: undefined → undefined; empty, not a finite number, or out of bounds → UsageError. */
function num(v: string | undefined, name: string, b: Bounds = {}): number | undefined {
  if (v === undefined) return undefined;
  const want = describeBounds(b, 'a number');
  if (v.trim() === '') throw new UsageError(`--${name} needs a value (${want})`);
  const n = Number(v);
  if (!/^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i.test(v) || !Number.isFinite(n) || !checkBounds(n, b)) {
    throw new UsageError(`--${name} must be ${want}, got "${v}"`);
  }
  return n;
}

const GPU_MODES: GpuMode[] = ['auto', 'swiftshader', 'native'];

function gpuMode(v: Values): GpuMode {
  const g = str(v, 'gpu') ?? 'auto';
  if (!(GPU_MODES as string[]).includes(g)) throw new UsageError(`--gpu must be one of ${GPU_MODES.join(', ')}, got "${g}"`);
  return g as GpuMode;
}

function samplingFlags(v: Values): SamplingOptions {
  const o: SamplingOptions = {};
  const t = num(str(v, 'temperature'), 'temperature', { min: 0 });
  if (t !== undefined) o.temperature = t;
  const k = int(str(v, 'top-k'), 'top-k');
  if (k !== undefined) o.topK = k;
  const p = num(str(v, 'top-p'), 'top-p', { min: 0, max: 1, above: true });
  if (p !== undefined) o.topP = p;
  const mp = num(str(v, 'min-p'), 'min-p', { min: 0, max: 1 });
  if (mp !== undefined) o.minP = mp;
  const rp = num(str(v, 'repetition-penalty'), 'repetition-penalty', { min: 0, above: true });
  if (rp !== undefined) o.repetitionPenalty = rp;
  const seed = int(str(v, 'seed'), 'seed', undefined, { min: 0, max: 0xffffffff });
  if (seed !== undefined) o.seed = seed;
  return o;
}

/** The version in nibble's package.json. */
export function version(): string {
  return (JSON.parse(readFileSync(resolve(repoRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

interface LoadFlags {
  model: string;
  gpu: GpuMode;
  runtime: RuntimeName;
  load: JobLoadOptions;
  /** --draft as given, when not the target itself */
  draft?: string;
}

function runtimeFlag(v: Values): RuntimeName {
  const r = str(v, 'runtime') ?? 'chromium';
  if (!(RUNTIMES as string[]).includes(r)) throw new UsageError(`--runtime must be one of ${RUNTIMES.join(', ')}, got "${r}"`);
  return r as RuntimeName;
}

/** Checks the model flags (no runtime yet): usage errors and unknown local paths fail fast. */
function modelFlags(v: Values): LoadFlags {
  const model = str(v, 'model');
  if (!model) throw new UsageError('--model is required');
  if (v.draft === undefined && (v['draft-quant'] !== undefined || v['draft-tokens'] !== undefined)) {
    throw new UsageError('--draft-quant and --draft-tokens need --draft');
  }
  const gpu = gpuMode(v);
  const runtime = runtimeFlag(v);
  classifyModel(model);
  const load: JobLoadOptions = {
    quant: (str(v, 'quant') ?? 'f32') as FormatName, // an unknown name is the engine's bad-argument
    contextLength: int(str(v, 'context-length'), 'context-length', undefined, { min: 1 }),
    hubEndpoint: str(v, 'hub') ?? process.env.HF_ENDPOINT,
    revision: str(v, 'revision'),
    token: str(v, 'token') ?? process.env.HF_TOKEN,
    // Chromium's profile is temporary (a browser weight cache would be written and thrown away);
    // Deno's `true` is the directory cache
    cache: runtime === 'deno',
  };
  const draft = str(v, 'draft');
  let other: string | undefined;
  if (draft !== undefined) {
    // the target itself ("self", or the same --model) → its checkpoint again at a cheaper format
    const self = draft === 'self' || draft === model;
    if (!self) classifyModel(draft);
    other = self ? undefined : draft;
    load.draft = {
      quant: (str(v, 'draft-quant') ?? (self ? 'nf4' : load.quant)) as FormatName,
      tokens: int(str(v, 'draft-tokens'), 'draft-tokens', 4, { min: 1, max: 32 }),
    };
  }
  return { model, gpu, runtime, load, draft: other };
}

/** The load progress line on stderr (a terminal only). */
function showProgress(host: RuntimeHost): () => void {
  return host.on((ev) => {
    if (ev.type !== 'progress' || !process.stderr.isTTY) return;
    const pct = Math.floor(100 * (ev.fraction ?? (ev.bytesTotal ? ev.bytesDone / ev.bytesTotal : 1)));
    const what = ev.phase === 'compile' ? `compiling ${ev.pipelinesDone}/${ev.pipelinesTotal} pipelines` : ev.phase === 'quantize' ? 'quantizing' : `${ev.tensorsDone}/${ev.tensorsTotal} tensors`;
    process.stderr.write(`\rloading ${pct}% (${what})\x1b[K${ev.phase === 'done' ? '\n' : ''}`);
  });
}

/** Starts the runtime and loads the model named by --model. */
async function loadModel(f: LoadFlags, quiet: boolean, handleSIGINT = true): Promise<{ host: RuntimeHost; info: EngineInfo }> {
  const host = await RuntimeHost.start({ gpu: f.gpu, runtime: f.runtime, handleSIGINT });
  try {
    const load: JobLoadOptions = { ...f.load };
    if (f.draft !== undefined && load.draft) load.draft = { ...load.draft, model: host.modelUrl(f.draft) };
    const off = quiet ? () => {} : showProgress(host);
    const info = await host.run({ kind: 'load', model: host.modelUrl(f.model), load });
    off();
    const want = f.load.contextLength;
    if (want !== undefined && info.contextLength < want) {
      process.stderr.write(
        `nibble: warning: --context-length ${want} is above the model's maximum of ${info.config.maxPositionEmbeddings} positions (max_position_embeddings): using ${info.contextLength}\n`,
      );
    }
    return { host, info };
  } catch (e) {
    await host.close();
    throw e;
  }
}

async function cmdGenerate(v: Values): Promise<void> {
  const prompt = str(v, 'prompt');
  if (prompt === undefined) throw new UsageError('--prompt is required');
  const maxNewTokens = int(str(v, 'max-new-tokens'), 'max-new-tokens', 128)!;
  const sampling = samplingFlags(v);
  const { host } = await loadModel(modelFlags(v), !!v.json);
  try {
    const off = v.json
      ? () => {}
      : host.on((ev) => {
          if (ev.type === 'text') process.stdout.write(ev.text);
        });
    const r = await host.run({ kind: 'generate', prompt, maxNewTokens, stream: !v.json, sampling, stop: v.stop as string[] | undefined });
    off();
    const spec = r.speculative;
    if (v.json) {
      process.stdout.write(JSON.stringify(r) + '\n');
    } else {
      const t = r.timings;
      process.stdout.write('\n');
      const specText = spec ? `, speculative: acceptance ${(100 * spec.acceptanceRate).toFixed(0)}%, ${spec.tokensPerTargetPass.toFixed(2)} tokens/target pass` : '';
      process.stderr.write(
        `[${r.adapter}] load ${t.loadMs.toFixed(0)} ms, prefill ${t.prefillMs.toFixed(0)} ms, decode ${t.decodeTokensPerSecond.toFixed(1)} tok/s${specText}\n`,
      );
    }
  } finally {
    await host.close();
  }
}

/**
 * Whether the model named by `f` has a chat template, read before the (slow) load: a local
 * folder's tokenizer_config.json `chat_template` or its chat_template.jinja, or the same files of a
 * URL or Hub id. Throws `no-chat-template` when the model positively has none; when the files
 * cannot be read (missing, network) it says nothing and the load reports the problem.
 */
async function checkChatTemplate(f: LoadFlags): Promise<void> {
  const hasTemplate = (cfgText: string): boolean | undefined => {
    let cfg: { chat_template?: unknown };
    try {
      cfg = JSON.parse(cfgText) as { chat_template?: unknown };
    } catch {
      return undefined;
    }
    const t = cfg.chat_template;
    if (typeof t === 'string') return t.length > 0;
    if (Array.isArray(t)) return t.some((x) => typeof (x as { template?: unknown })?.template === 'string' && (x as { template: string }).template.length > 0);
    return false;
  };
  let verdict: boolean | undefined;
  if (classifyModel(f.model).kind === 'local') {
    let cfgText: string;
    try {
      cfgText = readFileSync(join(f.model, 'tokenizer_config.json'), 'utf8');
    } catch {
      return;
    }
    verdict = hasTemplate(cfgText) || existsSync(join(f.model, 'chat_template.jinja'));
  } else {
    try {
      const source = resolveSource(f.model, { hubEndpoint: f.load.hubEndpoint, revision: f.load.revision, token: hubToken(f.model, f.load), retries: 1 });
      const signal = AbortSignal.timeout(20_000);
      const has = hasTemplate(await source.text('tokenizer_config.json', signal));
      verdict = has === undefined ? undefined : has || (await source.exists('chat_template.jinja', signal));
    } catch {
      return;
    }
  }
  if (verdict === false) {
    throw new NibbleError(
      'no-chat-template',
      `${f.model} has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja): use \`nibble generate\` with a plain prompt`,
    );
  }
}

/** One chat session's state: the history, and what Ctrl-C means now. */
interface ChatSession {
  host: RuntimeHost;
  info: EngineInfo;
  system: ChatMessage[];
  history: ChatMessage[];
  sampling: SamplingOptions;
  maxNewTokens: number | undefined;
  stop: string[] | undefined;
  tty: boolean;
  stats: boolean;
  /** A reply is running. */
  busy: boolean;
  /** Exit code once quitting (130 after Ctrl-C), else 0. */
  code: number;
}

/**
 * One user turn: runs the reply (streamed to stdout) and updates the history. A message that alone
 * does not fit the context is dropped from the history with a warning.
 */
async function chatTurn(c: ChatSession, line: string): Promise<void> {
  c.history.push({ role: 'user', content: line });
  c.busy = true;
  let r: ChatJobResult;
  try {
    r = await c.host.run({ kind: 'chat', messages: c.history, maxNewTokens: c.maxNewTokens, sampling: c.sampling, stop: c.stop, stream: true, fitContext: true });
  } catch (e) {
    if (c.code) return; // quitting: the runtime was closed under the reply
    if ((e as { code?: string }).code !== 'context-overflow') throw e;
    c.history.pop();
    process.stderr.write(`nibble: warning: ${(e as Error).message}; the message was not sent\n`);
    return;
  } finally {
    c.busy = false;
  }
  process.stdout.write('\n');
  if (r.dropped > 0) {
    const head = c.system.length;
    c.history.splice(head, r.dropped);
    process.stderr.write(
      `nibble: warning: the conversation outgrew the context of ${c.info.contextLength} tokens: dropped the oldest ${r.dropped} message${r.dropped === 1 ? '' : 's'}${head ? ' (the system prompt stays)' : ''}\n`,
    );
  }
  if (r.finishReason === 'abort') process.stderr.write('(reply stopped)\n');
  if (r.finishReason !== 'abort' || r.content) c.history.push({ role: 'assistant', content: r.content });
  if ((c.tty || c.stats) && r.timings && r.usage) {
    const u = r.usage;
    process.stderr.write(
      `[prompt ${u.prompt_tokens} tokens (${u.prompt_tokens_details.cached_tokens} cached), reply ${u.completion_tokens} tokens, ${r.timings.decodeTokensPerSecond.toFixed(1)} tok/s, ${r.finishReason}]\n`,
    );
  }
}

/** Reads user lines until /exit, end of input or Ctrl-C at the prompt; resolves to the exit code. */
async function chatLoop(c: ChatSession, modelName: string): Promise<number> {
  const { host, tty } = c;
  const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
  let stopping = false;
  const quit = () => {
    c.code = 130;
    process.stderr.write('\n');
    rl.close();
    // a reply still running (a second Ctrl-C): closing the runtime ends it
    if (c.busy) void host.close();
  };
  const interrupt = () => {
    if (c.code) return;
    if (!c.busy || stopping) return quit();
    stopping = true;
    void host.run({ kind: 'abort' }).catch(() => {});
  };
  // in a terminal, readline reads Ctrl-C itself (raw mode); from a pipe the process gets SIGINT
  rl.on('SIGINT', interrupt);
  process.on('SIGINT', interrupt);
  if (tty) {
    process.stderr.write(`nibble chat — ${modelName} on ${c.info.adapter.summary}. /reset clears the history, /exit quits; Ctrl-C stops a reply.\n`);
    rl.setPrompt('> ');
    rl.prompt();
  }
  const off = host.on((ev) => {
    if (ev.type === 'text') process.stdout.write(ev.text);
  });
  try {
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '/exit' || line === '/quit') break;
      if (line === '/reset') {
        c.history = [...c.system];
        if (tty) process.stderr.write('(history cleared)\n');
      } else if (line) {
        stopping = false;
        await chatTurn(c, line);
      }
      if (c.code) break;
      if (tty) rl.prompt();
    }
  } finally {
    off();
    process.off('SIGINT', interrupt);
    rl.close();
  }
  return c.code;
}

/**
 * `nibble chat`. Ctrl-C (SIGINT) during a reply stops it (the partial reply stays in the history)
 * and returns to the prompt; Ctrl-C at an idle prompt, or a second one before a stopped reply has
 * ended, exits with code 130. When the conversation outgrows the context the oldest turns are
 * dropped (the system prompt stays), with a note on stderr.
 */
async function cmdChat(v: Values): Promise<number> {
  const maxNewTokens = int(str(v, 'max-new-tokens'), 'max-new-tokens');
  const flags = samplingFlags(v);
  const system: ChatMessage[] = v.system ? [{ role: 'system', content: str(v, 'system')! }] : [];
  const mf = modelFlags(v);
  await checkChatTemplate(mf); // before the load: a model without a template fails at once
  // Ctrl-C while loading: exit (130); the 'exit' handler of puppeteer closes Chromium (Deno ends with its stdin)
  const early = () => process.exit(130);
  process.on('SIGINT', early);
  let loaded: Awaited<ReturnType<typeof loadModel>>;
  try {
    loaded = await loadModel(mf, false, false);
  } finally {
    process.off('SIGINT', early);
  }
  const { host, info } = loaded;
  try {
    await host.run({ kind: 'chat-template' }); // fail before reading input: no-chat-template
    const defaults = info.generationDefaults && Object.keys(info.generationDefaults).length ? info.generationDefaults : { temperature: 0.7, topP: 0.9 };
    const session: ChatSession = {
      host,
      info,
      system,
      history: [...system],
      sampling: { ...defaults, ...flags },
      maxNewTokens,
      stop: v.stop as string[] | undefined,
      tty: !!process.stdin.isTTY && !!process.stdout.isTTY,
      stats: !!v.stats,
      busy: false,
      code: 0,
    };
    return await chatLoop(session, String(v.model));
  } finally {
    await host.close();
  }
}

async function cmdEval(v: Values): Promise<void> {
  const file = str(v, 'text-file');
  if (!file) throw new UsageError('--text-file is required');
  const flags = modelFlags(v);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new NibbleError('not-found', `cannot read --text-file ${file}: ${(e as Error).message}`, { cause: e });
  }
  const { host } = await loadModel(flags, true);
  try {
    const r = await host.run({ kind: 'eval', text });
    if (v.json) process.stdout.write(JSON.stringify(r) + '\n');
    else console.log(`perplexity ${r.perplexity.toFixed(4)} over ${r.tokens} tokens (quant ${r.quant}, ${r.bitsPerWeight.toFixed(3)} bits/weight, ${r.weightBytes} weight bytes)`);
  } finally {
    await host.close();
  }
}

async function cmdHubServe(v: Values): Promise<void> {
  const dir = str(v, 'dir');
  if (!dir) throw new UsageError('--dir is required');
  const faults = {
    latencyMs: num(str(v, 'latency-ms'), 'latency-ms', { min: 0 }),
    cutAfterBytes: int(str(v, 'cut-after'), 'cut-after'),
    failRate: num(str(v, 'fail-rate'), 'fail-rate', { min: 0, max: 1 }),
  };
  const port = int(str(v, 'port'), 'port', 0, { min: 0, max: 65535 });
  const host = str(v, 'host');
  if (host !== undefined && host.trim() === '') throw new UsageError('--host needs a value (an address to bind)');
  const { startHubServer } = await import('./hub-server.ts');
  const any = Object.values(faults).some((x) => x !== undefined);
  const server = await startHubServer({
    dir: resolve(dir),
    port,
    host,
    faults: any ? faults : undefined,
    log: (l) => console.error(l),
  });
  console.log(`nibble hub mirror serving ${resolve(dir)} on ${server.address} (HF_ENDPOINT=${server.url})`);
  await new Promise<void>((done) => {
    const stop = () => void server.close().then(done);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

/** bench's --draft-tokens and --draft-pipeline (each needs --draft-quant). */
function benchDraftFlags(v: Values): { draftTokens?: number; draftPipeline?: boolean } {
  for (const f of ['draft-tokens', 'draft-pipeline']) {
    if (v[f] !== undefined && v['draft-quant'] === undefined) throw new UsageError(`--${f} needs --draft-quant`);
  }
  const dp = str(v, 'draft-pipeline');
  if (dp !== undefined && dp !== 'on' && dp !== 'off') throw new UsageError('--draft-pipeline must be on or off');
  return { draftTokens: int(str(v, 'draft-tokens'), 'draft-tokens', undefined, { min: 1, max: 32 }), draftPipeline: dp === undefined ? undefined : dp === 'on' };
}

async function cmdBench(v: Values): Promise<void> {
  if (v.model !== undefined && v.shape !== undefined) throw new UsageError('--model and --shape are exclusive');
  const matmul = str(v, 'matmul');
  if (matmul !== undefined && !['auto', 'subgroup', 'workgroup', 'row'].includes(matmul)) {
    throw new UsageError('--matmul must be auto, subgroup, workgroup or row');
  }
  const kvCache = str(v, 'kv-cache');
  if (kvCache !== undefined && kvCache !== 'f32' && kvCache !== 'f16') throw new UsageError('--kv-cache must be f32 or f16');
  const peerName = str(v, 'peer');
  if (peerName !== undefined && peerName !== 'wllama') throw new UsageError('--peer must be wllama');
  if (v['peer-backends'] !== undefined && peerName === undefined) throw new UsageError('--peer-backends needs --peer');
  if (v['peer-threads'] !== undefined && peerName === undefined) throw new UsageError('--peer-threads needs --peer');
  const peerThreads = str(v, 'peer-threads')
    ?.split(',')
    .map((x) => x.trim())
    .filter(Boolean)
    .map((x) => int(x, 'peer-threads', undefined, { min: 1, max: 256 })!);
  const peerBackends = (str(v, 'peer-backends') ?? 'wasm,webgpu').split(',').map((b) => b.trim()).filter(Boolean);
  if (!peerBackends.length || peerBackends.some((b) => b !== 'wasm' && b !== 'webgpu')) throw new UsageError('--peer-backends must list wasm and/or webgpu');
  // with a peer, the formats it has a match for (f32 ↔ F32, int8 ↔ Q8_0, nf4 ↔ Q4_0)
  const quants = (str(v, 'quant') ?? (peerName ? 'f32,int8,nf4' : 'f32,f16,int8,nf4,nf4-dq'))
    .split(',')
    .map((q) => q.trim())
    .filter(Boolean);
  if (!quants.length) throw new UsageError('--quant lists no format');
  const draftQuant = str(v, 'draft-quant');
  const unknown = [...quants, ...(draftQuant === undefined ? [] : [draftQuant])].find((q) => !isFormatName(q));
  if (unknown !== undefined) throw new UsageError(`unknown format "${unknown}": one of ${FORMAT_NAMES.join(', ')}`);
  const runs = int(str(v, 'runs'), 'runs', 3, { min: 1 })!;
  const newTokens = int(str(v, 'new-tokens'), 'new-tokens', 32, { min: 2 })!; // decode speed is timed after the first token
  const promptTokens = int(str(v, 'prompt-tokens'), 'prompt-tokens', 64, { min: 1 })!;
  const { draftTokens, draftPipeline } = benchDraftFlags(v);
  const pl = str(v, 'prefill-lengths');
  const prefillLengths =
    pl === undefined
      ? undefined
      : pl
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean)
          .map((x) => int(x, 'prefill-lengths', undefined, { min: 1 })!);
  const prefillRuns = int(str(v, 'prefill-runs'), 'prefill-runs', undefined, { min: 1 });
  const probeMiB = int(str(v, 'probe-mib'), 'probe-mib', undefined, { min: 1 });
  const contextLength = int(str(v, 'context-length'), 'context-length', undefined, { min: 1 });
  const gpu = gpuMode(v);
  const runtime = runtimeFlag(v);
  let model = str(v, 'model');
  if (model !== undefined) classifyModel(model);
  let label = model;
  const { SYNTH_SHAPES } = await import('./synth.ts');
  const shape = (str(v, 'shape') ?? 'smollm2-135m') as keyof typeof SYNTH_SHAPES;
  if (!model && !(shape in SYNTH_SHAPES)) throw new UsageError(`--shape must be one of ${Object.keys(SYNTH_SHAPES).join(', ')}`);
  if (peerName && runtime === 'deno') throw new UsageError('--peer runs in the chromium runtime only');
  if (peerName && model !== undefined && classifyModel(model).kind !== 'local') throw new UsageError('--peer needs a local model folder (--model DIR) or --shape');
  const { runBench, benchTable, probeLine, profileTable } = await import('../../bench/harness.ts');
  const peerMod = peerName ? await import('../../bench/peer/wllama.ts') : undefined;
  if (!model) {
    // a full-depth synthetic model of a real shape (bf16), written to .cache/synth on first use
    const { synthModel, defaultSynthDir } = await import('./synth.ts');
    model = defaultSynthDir(shape, 'bf16', 1);
    label = `${shape} (synthetic)`;
    await synthModel({ shape, dtype: 'bf16', out: model, log: (s) => console.error(s) });
  }
  const report = await runBench({
    model,
    label,
    quants: quants as FormatName[], // checked above
    promptTokens,
    newTokens,
    prefillLengths,
    prefillRuns,
    runs,
    gpu,
    runtime,
    contextLength,
    hubEndpoint: str(v, 'hub') ?? process.env.HF_ENDPOINT,
    token: str(v, 'token') ?? process.env.HF_TOKEN,
    draftQuant: draftQuant as FormatName | undefined,
    draftTokens,
    draftPipeline,
    matmul: matmul as 'auto' | 'subgroup' | 'workgroup' | 'row' | undefined,
    kvCache: kvCache as 'f32' | 'f16' | undefined,
    profile: !!v.profile,
    probeBytes: probeMiB === undefined ? undefined : probeMiB * 2 ** 20,
    peer: peerMod
      ? {
          host: { mounts: peerMod.peerMounts(), crossOriginIsolated: true },
          run: async (host, nibbleRows, emit) => {
            await peerMod.runWllamaPeer(host, {
              modelDir: model!,
              label: label!,
              formats: quants,
              backends: peerBackends as ('wasm' | 'webgpu')[],
              threads: peerThreads,
              promptTokens,
              newTokens,
              runs,
              prefillLengths: prefillLengths ?? [64, 512],
              contextLength,
              nibble: nibbleRows.filter((r) => r.draft === undefined),
              progress: (s) => console.error(s),
              onRecord: emit,
            });
          },
        }
      : undefined,
    progress: (s) => console.error(s),
    // --json: one object per line as soon as it is measured (probe, rows, profiles)
    onRecord: v.json ? (r) => process.stdout.write(JSON.stringify(r) + '\n') : undefined,
  });
  const out = str(v, 'out');
  if (out) writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  if (!v.json) {
    console.log(probeLine(report.probe) + '\n');
    console.log(benchTable(report.rows));
    for (const p of report.profiles) console.log('\n' + profileTable(p));
    if (peerMod && report.peers) console.log('\n' + peerMod.peerTable(report.rows.filter((r) => r.draft === undefined), report.peers));
  }
}

async function cmdSynth(v: Values): Promise<void> {
  const { synthModel, defaultSynthDir, SYNTH_SHAPES } = await import('./synth.ts');
  const shape = str(v, 'shape') as keyof typeof SYNTH_SHAPES | undefined;
  if (!shape || !(shape in SYNTH_SHAPES)) throw new UsageError(`--shape must be one of ${Object.keys(SYNTH_SHAPES).join(', ')}`);
  const dtype = (str(v, 'dtype') ?? 'bf16') as 'bf16' | 'f16' | 'f32';
  if (!['bf16', 'f16', 'f32'].includes(dtype)) throw new UsageError('--dtype must be bf16, f16 or f32');
  const shards = int(str(v, 'shards'), 'shards', 1, { min: 1 })!;
  const layers = int(str(v, 'layers'), 'layers', undefined, { min: 1 });
  const seed = int(str(v, 'seed'), 'seed', undefined, { min: 0, max: 0xffffffff });
  const out = str(v, 'out') ?? defaultSynthDir(shape, dtype, shards);
  const r = await synthModel({ shape, dtype, out, shards, layers, seed, log: (s) => console.error(s) });
  console.log(JSON.stringify({ out: r.out, bytes: r.bytes, files: r.files }));
}

interface Command {
  usage: string;
  options: Options;
  /** Resolves to the exit code (default 0). */
  run(v: Values): Promise<void | number>;
}

const COMMANDS: Record<string, Command> = {
  generate: { usage: USAGE_GENERATE, options: { ...COMMON, ...GENERATION, prompt: { type: 'string' } }, run: cmdGenerate },
  chat: { usage: USAGE_CHAT, options: { ...COMMON, ...GENERATION, system: { type: 'string' }, stats: { type: 'boolean' } }, run: cmdChat },
  eval: { usage: USAGE_EVAL, options: { ...COMMON, 'text-file': { type: 'string' } }, run: cmdEval },
  'hub-serve': {
    usage: USAGE_HUB_SERVE,
    options: {
      dir: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'latency-ms': { type: 'string' },
      'cut-after': { type: 'string' },
      'fail-rate': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    run: cmdHubServe,
  },
  bench: {
    usage: USAGE_BENCH,
    options: {
      ...COMMON,
      shape: { type: 'string' },
      'prompt-tokens': { type: 'string' },
      'new-tokens': { type: 'string' },
      'prefill-lengths': { type: 'string' },
      'prefill-runs': { type: 'string' },
      runs: { type: 'string' },
      out: { type: 'string' },
      profile: { type: 'boolean' },
      'draft-quant': { type: 'string' },
      'draft-tokens': { type: 'string' },
      'draft-pipeline': { type: 'string' },
      'probe-mib': { type: 'string' },
      matmul: { type: 'string' },
      'kv-cache': { type: 'string' },
      peer: { type: 'string' },
      'peer-backends': { type: 'string' },
      'peer-threads': { type: 'string' },
    },
    run: cmdBench,
  },
  synth: {
    usage: USAGE_SYNTH,
    options: {
      shape: { type: 'string' },
      dtype: { type: 'string' },
      out: { type: 'string' },
      shards: { type: 'string' },
      layers: { type: 'string' },
      seed: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    run: cmdSynth,
  },
};

/** Runs the CLI; resolves to the exit code (0 ok, 1 error, 2 usage error). */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    console.log(version());
    return 0;
  }
  if (cmd === 'help' || cmd === '--help' || cmd === '-h') {
    const sub = rest[0] !== undefined ? COMMANDS[rest[0]] : undefined;
    console.log(sub ? sub.usage : USAGE);
    return 0;
  }
  const command = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  try {
    if (!command) throw new UsageError(`unknown command "${cmd}"`);
    const v = parseFlags(rest, command.options);
    if (v.help) {
      console.log(command.usage);
      return 0;
    }
    return (await command.run(v)) ?? 0;
  } catch (e) {
    const err = e as Error & { code?: string | null };
    if (e instanceof UsageError) {
      process.stderr.write(`nibble: ${err.message}\n\n${command ? command.usage : USAGE}\n`);
      return 2;
    }
    process.stderr.write(`nibble: error${err.code ? ` [${err.code}]` : ''}: ${err.message}\n`);
    return 1;
  }
}
