#!/usr/bin/env node
// nibble CLI entry: the implementation is src/node/cli.ts, built to dist/node/cli.js by `npm run build`
// (run automatically by `npm ci` / `npm install` through the `prepare` script).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/node/cli.js', import.meta.url);
if (!existsSync(fileURLToPath(cli))) {
  process.stderr.write('nibble: the CLI is not built (dist/node/cli.js is missing): run `npm run build`\n');
  process.exit(1);
}
let main;
try {
  ({ main } = await import(cli.href));
} catch (e) {
  // puppeteer-core (which drives the headless Chromium the CLI runs the engine in) is an optional
  // peer dependency: installing nibble as a library does not pull a browser-automation package
  if (e?.code === 'ERR_MODULE_NOT_FOUND' && /puppeteer-core/.test(String(e.message))) {
    process.stderr.write('nibble: the CLI drives Chromium through puppeteer-core, which is not installed: run `npm install puppeteer-core`\n');
    process.exit(1);
  }
  throw e;
}
process.exitCode = await main(process.argv.slice(2));
