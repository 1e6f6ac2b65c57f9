/**
 * The engine in a Deno process (WebGPU from wgpu): the `--runtime deno` host. Run by the CLI
 * (src/node/deno.ts) as
 *
 *   deno run --allow-all main.ts --dist <dist> [--cache-dir <dir>]
 *
 * It imports the built bundle `<dist>/runner.js` (the same one Chromium's page imports), reads jobs
 * from stdin and writes replies and events to stdout (src/node/deno-protocol.ts). `cache: true` in a
 * load job is the directory cache (DirCache) at --cache-dir. Written against node: builtins (which
 * Deno provides), so the project's tsc checks it like any other file.
 */
import process from 'node:process';
import { createInterface } from 'node:readline';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DirCache } from '../cache/node-dir.ts';
import { NibbleError } from '../errors.ts';
import { FsSource } from '../node/fs-source.ts';
import type * as Runner from '../runner.ts';
import type { ModelSource } from '../source/types.ts';
import { LINE_PREFIX, type HostMessage, type JobMessage } from '../node/deno-protocol.ts';

function send(m: HostMessage): void {
  process.stdout.write(LINE_PREFIX + JSON.stringify(m) + '\n');
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/**
 * A model folder on disk as a ModelSource (FsSource: positional reads, `fs:<path>` as the cache
 * identity, so the directory cache hits across runs). FsSource is compiled here from src/, apart from
 * the bundle: its NibbleErrors are re-thrown as the bundle's class, whose codes the engine checks.
 */
function localSource(dir: string, BundleError: typeof Runner.NibbleError): ModelSource {
  const fs = new FsSource(dir);
  const rebrand = (e: unknown): unknown => {
    const x = e as { name?: unknown; code?: unknown; message?: unknown };
    return x?.name === 'NibbleError' && !(e instanceof BundleError) ? new BundleError(x.code as Runner.NibbleError['code'], String(x.message), { cause: e }) : e;
  };
  const wrap =
    <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
    (...a: A): Promise<R> =>
      f.apply(fs, a).catch((e: unknown) => Promise.reject(rebrand(e)));
  return {
    description: fs.description,
    cacheId: fs.cacheId,
    text: wrap(fs.text),
    exists: wrap(fs.exists),
    size: wrap(fs.size),
    range: wrap(fs.range),
    metadata: wrap(fs.metadata),
  };
}

async function main(): Promise<void> {
  // stdout carries the protocol: the engine's own console output goes to stderr
  for (const k of ['log', 'info', 'debug'] as const) console[k] = (...a: unknown[]) => console.error(...a);
  // Ctrl-C in a terminal reaches the whole process group: the CLI decides what it means
  process.on('SIGINT', () => {});
  const dist = arg('dist');
  if (!dist) throw new NibbleError('bad-argument', '--dist <folder of the built bundle> is required');
  const runner = (await import(pathToFileURL(resolve(dist, 'runner.js')).href)) as typeof Runner;
  const cacheDir = arg('cache-dir');
  runner.configure({
    emit: (event) => send({ event }),
    cache: cacheDir ? new DirCache(cacheDir) : undefined,
    openModel: (model) => (model.startsWith('file:') ? localSource(fileURLToPath(model), runner.NibbleError) : null),
  });
  send({ ready: true });
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let msg: JobMessage;
    try {
      msg = JSON.parse(line) as JobMessage;
    } catch {
      send({ fatal: `not a job: ${line.slice(0, 200)}` });
      continue;
    }
    // jobs run concurrently (an `abort` must reach a running `chat`); the runner queues engine calls
    void runner.run(msg.job).then((reply) => send({ id: msg.id, reply }));
  }
  // stdin closed: the host is gone or done (a job still running is dropped with the process)
  process.exit(0);
}

main().catch((e) => {
  send({ fatal: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  process.exit(1);
});
