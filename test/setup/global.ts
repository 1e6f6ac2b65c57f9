import type { TestProject } from 'vitest/node';
import { createServer, type ViteDevServer } from 'vite';
import type { Browser } from 'puppeteer-core';
import { launchChromium } from '../../src/node/browser.ts';

/**
 * One Vite dev server (serving src/, test pages and /models/*) and one headless Chromium with
 * WebGPU for the whole run; test files connect to it by its websocket endpoint.
 */
let server: ViteDevServer | undefined;
let browser: Browser | undefined;

export default async function setup(project: TestProject) {
  server = await createServer({ server: { port: 0, host: '127.0.0.1', hmr: false }, logLevel: 'warn', clearScreen: false });
  await server.listen();
  const addr = server.httpServer!.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  browser = await launchChromium({ gpu: 'auto' });
  project.provide('viteUrl', `http://127.0.0.1:${port}`);
  project.provide('wsEndpoint', browser.wsEndpoint());
  return async () => {
    await browser?.close();
    await server?.close();
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    viteUrl: string;
    wsEndpoint: string;
  }
}
