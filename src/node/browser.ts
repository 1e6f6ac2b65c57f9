import { existsSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'puppeteer-core';
import { NibbleError } from '../errors.ts';

/**
 * Headless Chromium with WebGPU: the runtime the CLI and the browser tests host the engine in.
 * `gpu: 'swiftshader'` is the software Vulkan adapter (machines without a GPU, CI);
 * `'native'` uses the machine's Vulkan driver; `'auto'` picks native when a GPU device node exists.
 */
export type GpuMode = 'auto' | 'swiftshader' | 'native';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/usr/bin/google-chrome-stable'];

export function findChromium(): string {
  const env = process.env.NIBBLE_CHROMIUM ?? process.env.CHROME_PATH ?? process.env.PUPPETEER_EXECUTABLE_PATH;
  if (env) return env;
  for (const c of CANDIDATES) if (existsSync(c)) return c;
  throw new NibbleError(
    'not-found',
    'no Chromium found: install it (Debian: apt-get install -y chromium) or set NIBBLE_CHROMIUM to its path',
  );
}

export function resolveGpuMode(mode: GpuMode = (process.env.NIBBLE_GPU as GpuMode) || 'auto'): 'swiftshader' | 'native' {
  if (mode !== 'auto') return mode;
  return existsSync('/dev/nvidia0') || existsSync('/dev/dri/renderD128') ? 'native' : 'swiftshader';
}

export function chromiumArgs(gpu: 'swiftshader' | 'native'): string[] {
  const common = [
    '--no-sandbox',
    '--enable-unsafe-webgpu',
    '--enable-features=Vulkan',
    '--disable-vulkan-surface',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
    '--disable-dev-shm-usage',
  ];
  return gpu === 'swiftshader'
    ? [...common, '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader']
    : [...common, '--use-vulkan=native', '--use-angle=vulkan', '--ignore-gpu-blocklist'];
}

/**
 * Launches headless Chromium. `handleSIGINT` (default true): Ctrl-C closes the browser and exits
 * the process with 130 (puppeteer's handler); false leaves SIGINT to the caller (`nibble chat`).
 */
export async function launchChromium(opts: { gpu?: GpuMode; handleSIGINT?: boolean } = {}): Promise<Browser> {
  const gpu = resolveGpuMode(opts.gpu);
  // loaded here, not at the top: the Deno host (and the GPU-machine kit, which has no node_modules) never needs it
  let puppeteer: typeof import('puppeteer-core').default;
  try {
    ({ default: puppeteer } = await import('puppeteer-core'));
  } catch (e) {
    // an optional peer dependency: installing nibble as a library does not pull a browser-automation package
    if ((e as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && /puppeteer-core/.test(String(e))) {
      throw new NibbleError('not-found', 'the Chromium runtime drives Chromium through puppeteer-core, which is not installed: run `npm install puppeteer-core` (or use --runtime deno)', { cause: e });
    }
    throw e;
  }
  const userDataDir = mkdtempSync(join(tmpdir(), 'nibble-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: findChromium(),
    headless: true,
    args: chromiumArgs(gpu),
    userDataDir,
    protocolTimeout: 0,
    handleSIGINT: opts.handleSIGINT ?? true,
  });
  browser.on('disconnected', () => {
    // Chromium may still be writing its profile as it exits; retry, and never crash the host on it
    setTimeout(() => {
      try {
        rmSync(userDataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
      } catch {
        /* a leftover temp profile is harmless */
      }
    }, 200).unref();
  });
  return browser;
}
