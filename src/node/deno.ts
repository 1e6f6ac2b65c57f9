/**
 * The Node side of the Deno host (`--runtime deno`): finds the deno binary, starts
 * `deno run src/deno/main.ts` with the Vulkan driver `gpu` asks for, and moves the runner's jobs,
 * replies and events over the process's stdin/stdout (src/node/deno-protocol.ts).
 *
 * The binary: $NIBBLE_DENO, else the `deno` npm devDependency (its platform package
 * @deno/<platform>, or the copy its install script leaves in node_modules/deno), else the running
 * Deno itself when the CLI runs under Deno (the GPU-machine kit), else `deno` on PATH.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot } from './paths.ts';
import type { Job, Reply, RunnerEvent } from '../runner.ts';
import { LINE_PREFIX, type HostMessage, type JobMessage } from './deno-protocol.ts';
import { NibbleError } from '../errors.ts';

/** Vulkan drivers the `--gpu` modes map onto; `swiftshader` is the ICD Debian's chromium ships. */
export const SWIFTSHADER_ICDS = ['/usr/lib/chromium/vk_swiftshader_icd.json', '/usr/lib/chromium-browser/vk_swiftshader_icd.json'];

const PLATFORM_PACKAGES: Record<string, string> = {
  'linux-x64': '@deno/linux-x64-glibc',
  'linux-arm64': '@deno/linux-arm64-glibc',
  'darwin-x64': '@deno/darwin-x64',
  'darwin-arm64': '@deno/darwin-arm64',
  'win32-x64': '@deno/win32-x64',
  'win32-arm64': '@deno/win32-arm64',
};

/** The deno binary to run (see the file's header); throws when there is none. */
export function findDeno(env: NodeJS.ProcessEnv = process.env): string {
  if (env.NIBBLE_DENO) {
    if (!existsSync(env.NIBBLE_DENO)) throw new NibbleError('not-found', `NIBBLE_DENO=${env.NIBBLE_DENO} does not exist`);
    return env.NIBBLE_DENO;
  }
  const exe = process.platform === 'win32' ? 'deno.exe' : 'deno';
  const root = repoRoot();
  const pkg = PLATFORM_PACKAGES[`${process.platform}-${process.arch}`];
  const candidates = [...(pkg ? [join(root, 'node_modules', pkg, exe)] : []), join(root, 'node_modules', 'deno', exe)];
  if ('Deno' in globalThis) candidates.push(process.execPath);
  for (const dir of (env.PATH ?? '').split(delimiter).filter(Boolean)) candidates.push(join(dir, exe));
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new NibbleError('not-found', 'no deno binary: run `npm install` (the deno devDependency) or set NIBBLE_DENO to its path');
  return found;
}

/**
 * The environment of the Deno process for a GPU mode: `swiftshader` points VK_ICD_FILENAMES (and
 * VK_DRIVER_FILES, its newer name) at SwiftShader's ICD ($NIBBLE_SWIFTSHADER_ICD, else Debian
 * chromium's), and puts the Vulkan loader that chromium ships beside it (libvulkan.so.1) on
 * LD_LIBRARY_PATH: wgpu needs a loader, and without one it silently falls back to its GL backend
 * (Mesa's llvmpipe). `native` leaves the machine's Vulkan loader and drivers as they are.
 */
export function denoEnv(gpu: 'swiftshader' | 'native', env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env, XDG_RUNTIME_DIR: env.XDG_RUNTIME_DIR ?? '/tmp', NO_COLOR: '1' };
  if (gpu === 'swiftshader') {
    const icd = env.NIBBLE_SWIFTSHADER_ICD ?? SWIFTSHADER_ICDS.find((p) => existsSync(p));
    if (!icd) throw new NibbleError('not-found', `--gpu swiftshader: SwiftShader's Vulkan ICD is not at ${SWIFTSHADER_ICDS.join(' or ')} (install Debian's chromium, or set NIBBLE_SWIFTSHADER_ICD)`);
    out.VK_ICD_FILENAMES = icd;
    out.VK_DRIVER_FILES = icd;
    const dir = dirname(icd);
    if (existsSync(join(dir, 'libvulkan.so.1'))) out.LD_LIBRARY_PATH = [dir, env.LD_LIBRARY_PATH].filter(Boolean).join(':');
  }
  return out;
}

/** The command line that starts the Deno host. */
export function denoArgs(dist: string, cacheDir: string | undefined): string[] {
  const main = resolve(repoRoot(), 'src', 'deno', 'main.ts');
  // --no-config: the repository's package.json is the Node project's, not Deno's to resolve
  return ['run', '--allow-all', '--no-prompt', '--no-config', '--no-lock', '--quiet', main, '--dist', dist, ...(cacheDir ? ['--cache-dir', cacheDir] : [])];
}

/** A running Deno host process. */
export class DenoRunner {
  /** stderr lines of the process (its console output): shown when it fails. */
  readonly log: string[] = [];
  private readonly pending = new Map<number, { ok: (r: Reply<unknown>) => void; fail: (e: Error) => void }>();
  private nextId = 1;
  private exited: Error | null = null;

  private readonly child: ChildProcessWithoutNullStreams;
  private readonly onEvent: (ev: RunnerEvent) => void;

  private constructor(child: ChildProcessWithoutNullStreams, onEvent: (ev: RunnerEvent) => void) {
    this.child = child;
    this.onEvent = onEvent;
  }

  /** Starts the process and resolves once the runner bundle is loaded in it. */
  static async start(o: { gpu: 'swiftshader' | 'native'; dist: string; cacheDir?: string; onEvent: (ev: RunnerEvent) => void }): Promise<DenoRunner> {
    const deno = findDeno();
    const child = spawn(deno, denoArgs(o.dist, o.cacheDir), { env: denoEnv(o.gpu), stdio: ['pipe', 'pipe', 'pipe'] });
    const r = new DenoRunner(child, o.onEvent);
    const ready = new Promise<void>((ok, fail) => r.wire(ok, fail));
    await ready;
    return r;
  }

  private wire(ready: () => void, failed: (e: Error) => void): void {
    createInterface({ input: this.child.stderr, crlfDelay: Infinity }).on('line', (l) => {
      this.log.push(l);
      if (this.log.length > 200) this.log.shift();
    });
    createInterface({ input: this.child.stdout, crlfDelay: Infinity }).on('line', (l) => {
      if (!l.startsWith(LINE_PREFIX)) return void this.log.push(l);
      let m: HostMessage;
      try {
        m = JSON.parse(l.slice(LINE_PREFIX.length)) as HostMessage;
      } catch {
        return void this.log.push(`unreadable protocol line: ${l.slice(0, 200)}`);
      }
      if ('ready' in m) ready();
      else if ('event' in m) this.onEvent(m.event);
      else if ('fatal' in m) this.log.push(`fatal: ${m.fatal}`);
      else {
        this.pending.get(m.id)?.ok(m.reply);
        this.pending.delete(m.id);
      }
    });
    const died = (why: string) => {
      if (this.exited) return;
      const tail = this.log.slice(-20).join('\n');
      this.exited = new NibbleError('device-lost', `the Deno runtime ${why}${tail ? `:\n${tail}` : ''}`);
      failed(this.exited);
      for (const p of this.pending.values()) p.fail(this.exited);
      this.pending.clear();
    };
    this.child.on('error', (e) => died(`could not start (${e.message})`));
    this.child.on('exit', (code, signal) => died(`exited (${signal ?? `code ${code}`})`));
    this.child.stdin.on('error', () => {}); // a write after the process died: its 'exit' reports it
  }

  /** Runs one job; rejects only when the process is gone (the job's own errors are in the reply). */
  run(job: Job): Promise<Reply<unknown>> {
    if (this.exited) return Promise.reject(this.exited);
    const id = this.nextId++;
    return new Promise((ok, fail) => {
      this.pending.set(id, { ok, fail });
      this.child.stdin.write(JSON.stringify({ id, job } satisfies JobMessage) + '\n');
    });
  }

  /** Ends the process (closing its stdin ends it; a kill if it has not exited 5 s later). */
  async close(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((ok) => this.child.once('exit', () => ok()));
    this.child.stdin.end();
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }
}
