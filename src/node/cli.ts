import { parseArgs } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { RuntimeHost } from './host.ts';
import type { GpuMode } from './browser.ts';
import { createInterface } from 'node:readline';
import type { LoadOptions } from '../api/engine.ts';
import type { LoadProgress } from '../model/llama.ts';
import type { SamplingOptions } from '../generate/sampling.ts';
import type { ChatMessage } from '../api/chat.ts';

/**
 * nibble's command line. Engine work runs in headless Chromium on WebGPU (RuntimeHost); the
 * Hub mirror and the synthetic-model writer run in Node.
 */
const USAGE = `nibble — LLM inference on WebGPU

Usage:
  nibble generate --model M --prompt TEXT [--max-new-tokens N] [--quant Q] [--json]
                  [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--repetition-penalty R] [--seed S]
                  [--stop TEXT]... [--draft M2|self [--draft-quant Q] [--draft-tokens K]]
  nibble chat --model M [--system TEXT] [--max-new-tokens N] [--quant Q] [--stats] [sampling and --draft options as above]
  nibble eval --model M --text-file F [--quant Q] [--json]
  nibble hub-serve --dir DIR [--port N] [--host H] [--latency-ms MS] [--cut-after BYTES] [--fail-rate P]
  nibble bench [--model M | --shape S] [--quant Q1,Q2,...] [--prompt-tokens N] [--new-tokens N] [--runs N]
               [--draft-quant Q [--draft-tokens K]] [--matmul V] [--profile] [--probe-mib N] [--json] [--out FILE]
  nibble synth --shape S [--dtype bf16|f16|f32] [--out DIR] [--shards N] [--layers N] [--seed N]

Model M: a local folder in Hugging Face layout, a URL of one, or a Hub id "org/name".
Common options:
  --quant Q            f32 (default), f16, int8, nf4, nf4-dq
  --context-length N   KV cache length (default min(max_position_embeddings, 4096))
  --gpu MODE           auto (default) | swiftshader | native
  --hub URL            Hub endpoint (default $HF_ENDPOINT or https://huggingface.co)
  --revision REV       Hub revision (default main)
  --token TOKEN        Hub access token (default $HF_TOKEN)
Generation:
  --temperature T      0 = greedy (generate's default); sampling runs on the GPU
  --top-k K, --top-p P, --min-p P, --repetition-penalty R   filters / penalty (HF semantics)
  --seed S             seed of the draw (uint32): the same seed and settings give the same text
  --stop TEXT          stop string (repeatable); it is not printed
  --draft M2           speculative decoding with draft model M2 ("self" or M itself: the target's
                       checkpoint again at --draft-quant, default nf4); --draft-tokens K per round (4)
Chat (a terminal REPL; reads one user message per line from stdin when it is not a terminal):
  /reset clears the history, /exit quits. Sampling defaults come from generation_config.json, else
  temperature 0.7, top-p 0.9. --stats prints each turn's token counts and speed on stderr (always
  on in a terminal).
Bench (see bench/README.md): a roofline probe, then per format prefill of 64- and 512-token prompts
  and decode of --new-tokens (32) after --prompt-tokens (64), medians of --runs (3), every prompt
  uncached. --shape S (default smollm2-135m) benches a synthetic model of that shape; --draft-quant Q
  adds a self-speculative row per format; --profile adds per-kernel GPU time (timestamp-query);
  --json prints one JSON object per line; --matmul auto|subgroup|workgroup|row forces the matmul
  kernel variant; progress goes to stderr.
Synthetic shapes: smollm2-135m, smollm2-360m, llama-3.2-1b, qwen2.5-0.5b`;

class UsageError extends Error {}

const COMMON = {
  model: { type: 'string' },
  quant: { type: 'string' },
  'context-length': { type: 'string' },
  gpu: { type: 'string' },
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

function samplingFlags(v: Record<string, unknown>): SamplingOptions {
  const o: SamplingOptions = {};
  const t = num(v.temperature as string | undefined, 'temperature');
  if (t !== undefined) o.temperature = t;
  const k = int(v['top-k'] as string | undefined, 'top-k');
  if (k !== undefined) o.topK = k;
  const p = num(v['top-p'] as string | undefined, 'top-p');
  if (p !== undefined) o.topP = p;
  const mp = num(v['min-p'] as string | undefined, 'min-p');
  if (mp !== undefined) o.minP = mp;
  const rp = num(v['repetition-penalty'] as string | undefined, 'repetition-penalty');
  if (rp !== undefined) o.repetitionPenalty = rp;
  const seed = int(v.seed as string | undefined, 'seed');
  if (seed !== undefined) o.seed = seed;
  return o;
}

function int(v: string | undefined, name: string, def?: number): number | undefined {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer, got "${v}"`);
  return n;
}

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got "${v}"`);
  return n;
}

/** Starts the runtime and loads the model named by --model. */
async function loadModel(
  v: Record<string, unknown>,
  quiet: boolean,
): Promise<{ host: RuntimeHost; info: { adapter: { summary: string }; loadMs: number; generationDefaults?: SamplingOptions } & Record<string, unknown> }> {
  const model = v.model as string | undefined;
  if (!model) throw new UsageError('--model is required');
  if (v.draft === undefined && (v['draft-quant'] !== undefined || v['draft-tokens'] !== undefined)) {
    throw new UsageError('--draft-quant and --draft-tokens need --draft');
  }
  const host = await RuntimeHost.start({ gpu: (v.gpu as GpuMode | undefined) ?? 'auto' });
  try {
    const url = host.modelUrl(model);
    const load: LoadOptions = {
      quant: (v.quant as string | undefined) ?? 'f32',
      contextLength: int(v['context-length'] as string | undefined, 'context-length'),
      hubEndpoint: (v.hub as string | undefined) ?? process.env.HF_ENDPOINT,
      revision: v.revision as string | undefined,
      token: (v.token as string | undefined) ?? process.env.HF_TOKEN,
      // the CLI's Chromium profile is temporary: a browser weight cache would be written and thrown away
      cache: false,
    };
    const draft = v.draft as string | undefined;
    if (draft !== undefined) {
      // the target itself ("self", or the same --model) → its checkpoint again at a cheaper format
      const self = draft === 'self' || draft === model;
      load.draft = {
        model: self ? undefined : host.modelUrl(draft),
        quant: (v['draft-quant'] as string | undefined) ?? (self ? 'nf4' : load.quant),
        tokens: int(v['draft-tokens'] as string | undefined, 'draft-tokens', 4),
      };
    }
    const off = quiet
      ? () => {}
      : host.on((ev) => {
          if (ev.type !== 'progress' || !process.stderr.isTTY) return;
          const p = ev as unknown as LoadProgress;
          const pct = p.bytesTotal ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 100;
          process.stderr.write(`\rloading ${pct}% (${p.tensorsDone}/${p.tensorsTotal} tensors)${p.phase === 'done' ? '\n' : ''}`);
        });
    const info = await host.run<{ adapter: { summary: string }; loadMs: number; generationDefaults?: SamplingOptions }>({ kind: 'load', model: url, load });
    off();
    return { host, info };
  } catch (e) {
    await host.close();
    throw e;
  }
}

async function cmdGenerate(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    options: { ...COMMON, ...GENERATION, prompt: { type: 'string' } },
  });
  if (v.help) return void console.log(USAGE);
  if (v.prompt === undefined) throw new UsageError('--prompt is required');
  const maxNewTokens = int(v['max-new-tokens'], 'max-new-tokens', 128)!;
  const sampling = samplingFlags(v);
  const { host } = await loadModel(v, !!v.json);
  try {
    const off = v.json
      ? () => {}
      : host.on((ev) => {
          if (ev.type === 'text') process.stdout.write(String(ev.text));
        });
    const r = await host.run<Record<string, unknown>>({ kind: 'generate', prompt: v.prompt, maxNewTokens, stream: !v.json, sampling, stop: v.stop });
    off();
    const spec = r.speculative as { acceptanceRate: number; tokensPerTargetPass: number } | undefined;
    if (v.json) {
      process.stdout.write(JSON.stringify(r) + '\n');
    } else {
      const t = r.timings as { prefillMs: number; decodeTokensPerSecond: number; loadMs: number };
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

async function cmdChat(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({ args: argv, options: { ...COMMON, ...GENERATION, system: { type: 'string' }, stats: { type: 'boolean' } } });
  if (v.help) return void console.log(USAGE);
  const maxNewTokens = int(v['max-new-tokens'], 'max-new-tokens');
  const flags = samplingFlags(v);
  const { host, info } = await loadModel(v, false);
  try {
    await host.run({ kind: 'chat-template' }); // fail before reading input: no-chat-template
    const defaults = info.generationDefaults && Object.keys(info.generationDefaults).length ? info.generationDefaults : { temperature: 0.7, topP: 0.9 };
    const sampling: SamplingOptions = { ...defaults, ...flags };
    const tty = !!process.stdin.isTTY && !!process.stdout.isTTY;
    const system: ChatMessage[] = v.system ? [{ role: 'system', content: v.system }] : [];
    let history: ChatMessage[] = [...system];
    const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
    if (tty) {
      process.stderr.write(`nibble chat — ${v.model} on ${info.adapter.summary}. /reset clears the history, /exit quits.\n`);
      rl.setPrompt('> ');
      rl.prompt();
    }
    const off = host.on((ev) => {
      if (ev.type === 'text') process.stdout.write(String(ev.text));
    });
    try {
      for await (const raw of rl) {
        const line = raw.trim();
        if (line === '/exit' || line === '/quit') break;
        if (line === '/reset') {
          history = [...system];
          if (tty) process.stderr.write('(history cleared)\n');
        } else if (line) {
          history.push({ role: 'user', content: line });
          const r = await host.run<{
            content: string;
            finishReason: string | null;
            usage: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details: { cached_tokens: number } } | null;
            timings: { decodeTokensPerSecond: number } | null;
          }>({
            kind: 'chat',
            messages: history,
            maxNewTokens,
            sampling,
            stop: v.stop,
            stream: true,
          });
          process.stdout.write('\n');
          history.push({ role: 'assistant', content: r.content });
          if ((tty || v.stats) && r.timings && r.usage) {
            const u = r.usage;
            process.stderr.write(
              `[prompt ${u.prompt_tokens} tokens (${u.prompt_tokens_details.cached_tokens} cached), reply ${u.completion_tokens} tokens, ${r.timings.decodeTokensPerSecond.toFixed(1)} tok/s, ${r.finishReason}]\n`,
            );
          }
        }
        if (tty) rl.prompt();
      }
    } finally {
      off();
      rl.close();
    }
  } finally {
    await host.close();
  }
}

async function cmdEval(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({ args: argv, options: { ...COMMON, 'text-file': { type: 'string' } } });
  if (v.help) return void console.log(USAGE);
  if (!v['text-file']) throw new UsageError('--text-file is required');
  const text = readFileSync(v['text-file'], 'utf8');
  const { host } = await loadModel(v, true);
  try {
    const r = await host.run<Record<string, number | string>>({ kind: 'eval', text });
    if (v.json) process.stdout.write(JSON.stringify(r) + '\n');
    else
      console.log(
        `perplexity ${Number(r.perplexity).toFixed(4)} over ${r.tokens} tokens (quant ${r.quant}, ${Number(r.bitsPerWeight).toFixed(3)} bits/weight, ${r.weightBytes} weight bytes)`,
      );
  } finally {
    await host.close();
  }
}

async function cmdHubServe(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'latency-ms': { type: 'string' },
      'cut-after': { type: 'string' },
      'fail-rate': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) return void console.log(USAGE);
  if (!v.dir) throw new UsageError('--dir is required');
  const { startHubServer } = await import('./hub-server.ts');
  const faults = {
    latencyMs: num(v['latency-ms'], 'latency-ms'),
    cutAfterBytes: int(v['cut-after'], 'cut-after'),
    failRate: num(v['fail-rate'], 'fail-rate'),
  };
  const any = Object.values(faults).some((x) => x !== undefined);
  const server = await startHubServer({
    dir: resolve(v.dir),
    port: int(v.port, 'port', 0),
    host: v.host,
    faults: any ? faults : undefined,
    log: (l) => console.error(l),
  });
  console.log(`nibble hub mirror serving ${resolve(v.dir)} at ${server.url} (HF_ENDPOINT=${server.url})`);
  await new Promise<void>((done) => {
    const stop = () => void server.close().then(done);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

async function cmdBench(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      ...COMMON,
      shape: { type: 'string' },
      'prompt-tokens': { type: 'string' },
      'new-tokens': { type: 'string' },
      runs: { type: 'string' },
      out: { type: 'string' },
      profile: { type: 'boolean' },
      'draft-quant': { type: 'string' },
      'draft-tokens': { type: 'string' },
      'probe-mib': { type: 'string' },
      matmul: { type: 'string' },
    },
  });
  if (v.help) return void console.log(USAGE);
  if (v.model !== undefined && v.shape !== undefined) throw new UsageError('--model and --shape are exclusive');
  if (v.matmul !== undefined && !['auto', 'subgroup', 'workgroup', 'row'].includes(v.matmul)) {
    throw new UsageError('--matmul must be auto, subgroup, workgroup or row');
  }
  if (v['draft-tokens'] !== undefined && v['draft-quant'] === undefined) throw new UsageError('--draft-tokens needs --draft-quant');
  const quants = (v.quant ?? 'f32,f16,int8,nf4,nf4-dq')
    .split(',')
    .map((q) => q.trim())
    .filter(Boolean);
  if (!quants.length) throw new UsageError('--quant lists no format');
  const runs = int(v.runs, 'runs', 3)!;
  if (runs < 1) throw new UsageError('--runs must be at least 1');
  const newTokens = int(v['new-tokens'], 'new-tokens', 32)!;
  if (newTokens < 2) throw new UsageError('--new-tokens must be at least 2 (decode speed is timed after the first token)');
  const promptTokens = int(v['prompt-tokens'], 'prompt-tokens', 64)!;
  if (promptTokens < 1) throw new UsageError('--prompt-tokens must be at least 1');
  const draftTokens = int(v['draft-tokens'], 'draft-tokens');
  if (draftTokens !== undefined && draftTokens < 1) throw new UsageError('--draft-tokens must be at least 1');
  const probeMiB = int(v['probe-mib'], 'probe-mib');
  if (probeMiB !== undefined && probeMiB < 1) throw new UsageError('--probe-mib must be at least 1');
  const { runBench, benchTable, probeLine, profileTable } = await import('../../bench/harness.ts');
  let model = v.model;
  let label = v.model;
  if (!model) {
    // a full-depth synthetic model of a real shape (bf16), written to .cache/synth on first use
    const { synthModel, defaultSynthDir, SYNTH_SHAPES } = await import('./synth.ts');
    const shape = (v.shape ?? 'smollm2-135m') as keyof typeof SYNTH_SHAPES;
    if (!(shape in SYNTH_SHAPES)) throw new UsageError(`--shape must be one of ${Object.keys(SYNTH_SHAPES).join(', ')}`);
    model = defaultSynthDir(shape, 'bf16', 1);
    label = `${shape} (synthetic)`;
    await synthModel({ shape, dtype: 'bf16', out: model, log: (s) => console.error(s) });
  }
  const report = await runBench({
    model,
    label,
    quants,
    promptTokens,
    newTokens,
    runs,
    gpu: (v.gpu as GpuMode | undefined) ?? 'auto',
    contextLength: int(v['context-length'], 'context-length'),
    hubEndpoint: v.hub ?? process.env.HF_ENDPOINT,
    token: v.token ?? process.env.HF_TOKEN,
    draftQuant: v['draft-quant'],
    draftTokens,
    matmul: v.matmul as 'auto' | 'subgroup' | 'workgroup' | 'row' | undefined,
    profile: !!v.profile,
    probeBytes: probeMiB === undefined ? undefined : probeMiB * 2 ** 20,
    progress: (s) => console.error(s),
    // --json: one object per line as soon as it is measured (probe, rows, profiles)
    onRecord: v.json ? (r) => process.stdout.write(JSON.stringify(r) + '\n') : undefined,
  });
  if (v.out) writeFileSync(v.out, JSON.stringify(report, null, 2) + '\n');
  if (!v.json) {
    console.log(probeLine(report.probe) + '\n');
    console.log(benchTable(report.rows));
    for (const p of report.profiles) console.log('\n' + profileTable(p));
  }
}

async function cmdSynth(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      shape: { type: 'string' },
      dtype: { type: 'string' },
      out: { type: 'string' },
      shards: { type: 'string' },
      layers: { type: 'string' },
      seed: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) return void console.log(USAGE);
  const { synthModel, defaultSynthDir, SYNTH_SHAPES } = await import('./synth.ts');
  const shape = v.shape as keyof typeof SYNTH_SHAPES | undefined;
  if (!shape || !(shape in SYNTH_SHAPES)) throw new UsageError(`--shape must be one of ${Object.keys(SYNTH_SHAPES).join(', ')}`);
  const dtype = (v.dtype ?? 'bf16') as 'bf16' | 'f16' | 'f32';
  if (!['bf16', 'f16', 'f32'].includes(dtype)) throw new UsageError('--dtype must be bf16, f16 or f32');
  const shards = int(v.shards, 'shards', 1)!;
  const out = v.out ?? defaultSynthDir(shape, dtype, shards);
  const r = await synthModel({ shape, dtype, out, shards, layers: int(v.layers, 'layers'), seed: int(v.seed, 'seed'), log: (s) => console.error(s) });
  console.log(JSON.stringify({ out: r.out, bytes: r.bytes, files: r.files }));
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'generate':
        await cmdGenerate(rest);
        return 0;
      case 'chat':
        await cmdChat(rest);
        return 0;
      case 'eval':
        await cmdEval(rest);
        return 0;
      case 'hub-serve':
        await cmdHubServe(rest);
        return 0;
      case 'synth':
        await cmdSynth(rest);
        return 0;
      case 'bench':
        await cmdBench(rest);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        console.log(USAGE);
        return cmd === undefined ? 1 : 0;
      default:
        throw new UsageError(`unknown command "${cmd}"`);
    }
  } catch (e) {
    const err = e as Error & { code?: string | null };
    if (e instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      process.stderr.write(`nibble: ${err.message}\n\n${USAGE}\n`);
      return 2;
    }
    process.stderr.write(`nibble: error${err.code ? ` [${err.code}]` : ''}: ${err.message}\n`);
    return 1;
  }
}
