import { inject } from 'vitest';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import type { HarnessApi } from './harness.ts';

/** Opens the harness page in the shared Chromium; `call` runs one harness function in it. */
export async function openHarness(): Promise<{ page: Page; browser: Browser; call: Caller; close: () => Promise<void> }> {
  const browser = await puppeteer.connect({ browserWSEndpoint: inject('wsEndpoint'), protocolTimeout: 0 });
  const page = await browser.newPage();
  const logs: string[] = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${String(e)}`));
  await page.goto(`${inject('viteUrl')}/test/browser/harness.html`);
  await page.waitForFunction(() => (globalThis as { nibbleTest?: unknown }).nibbleTest !== undefined, { timeout: 120_000 });
  const call: Caller = async (name, arg) => {
    try {
      return await page.evaluate((n, a) => (globalThis as unknown as { nibbleTest: Record<string, (x: unknown) => unknown> }).nibbleTest[n](a), name, arg as never) as never;
    } catch (e) {
      throw new Error(`${String(name)} failed in the page: ${(e as Error).message}\n${logs.slice(-20).join('\n')}`);
    }
  };
  return {
    page,
    browser,
    call,
    close: async () => {
      await page.close();
      await browser.disconnect();
    },
  };
}

export type Caller = <K extends keyof HarnessApi>(name: K, arg: Parameters<HarnessApi[K]>[0]) => Promise<Awaited<ReturnType<HarnessApi[K]>>>;
