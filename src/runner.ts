/**
 * The page side of the CLI's runtime: the CLI (Node) opens a page in headless Chromium that
 * imports this module and calls `nibbleRunner.run(job)`. The same Engine as in any web app runs
 * the job; text streams back through `globalThis.nibbleEmit` (exposed by puppeteer).
 */
import { Engine, type LoadOptions } from './api/engine.ts';
import { isNibbleError } from './errors.ts';

export type Job =
  | { kind: 'load'; model: string; load: LoadOptions }
  | { kind: 'generate'; prompt: string; maxNewTokens: number; stream: boolean; promptIds?: number[]; ignoreEos?: boolean }
  | { kind: 'eval'; text: string }
  | { kind: 'info' };

type Emit = (ev: { type: string; [k: string]: unknown }) => void;

let engine: Engine | null = null;

function emit(ev: { type: string; [k: string]: unknown }): void {
  const f = (globalThis as unknown as { nibbleEmit?: Emit }).nibbleEmit;
  if (f) void f(ev);
}

async function runJob(job: Job): Promise<unknown> {
  switch (job.kind) {
    case 'load': {
      engine?.dispose();
      engine = null;
      let last = 0;
      engine = await Engine.load(job.model, {
        ...job.load,
        onProgress: (p) => {
          const now = performance.now();
          if (now - last > 250 || p.phase === 'done') {
            last = now;
            emit({ type: 'progress', ...p });
          }
        },
      });
      return engine.info;
    }
    case 'generate': {
      const e = need();
      const gen = e.generate(job.prompt, { maxNewTokens: job.maxNewTokens, promptIds: job.promptIds, ignoreEos: job.ignoreEos });
      if (job.stream) for await (const text of gen) emit({ type: 'text', text });
      const r = await gen.result;
      return { ...r, adapter: e.info.adapter.summary };
    }
    case 'eval': {
      const e = need();
      const ids = e.tokenizer.encode(job.text);
      const r = await e.perplexity(ids);
      return {
        perplexity: r.perplexity,
        nll: r.nll,
        tokens: r.tokens,
        quant: e.info.quantKey,
        bitsPerWeight: e.info.bitsPerWeight,
        weightBytes: e.info.weightBytes,
        adapter: e.info.adapter.summary,
      };
    }
    case 'info':
      return need().info;
  }
}

function need(): Engine {
  if (!engine) throw new Error('no model loaded');
  return engine;
}

/** Runs a job; errors come back as data ({ error: { code, message } }) so Node can report them. */
export async function run(job: Job): Promise<{ ok: unknown } | { error: { code: string | null; message: string } }> {
  try {
    return { ok: await runJob(job) };
  } catch (e) {
    return { error: { code: isNibbleError(e) ? e.code : null, message: e instanceof Error ? e.message : String(e) } };
  }
}

(globalThis as unknown as { nibbleRunner: { run: typeof run } }).nibbleRunner = { run };
