// The kit's CLI entry (bench/device/run.sh): the CLI bundle the kit carries ($NIBBLE_DIST/node/cli.js),
// under Node where the GPU machine has it, else under Deno (which provides the node: builtins it uses).
import process from 'node:process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const dist = process.env.NIBBLE_DIST;
if (!dist) {
  process.stderr.write('nibble.mjs: set NIBBLE_DIST to the kit\'s dist folder\n');
  process.exit(1);
}
const { main } = await import(pathToFileURL(resolve(dist, 'node', 'cli.js')).href);
process.exit(await main(process.argv.slice(2)));
