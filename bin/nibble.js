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
const { main } = await import(cli.href);
process.exitCode = await main(process.argv.slice(2));
