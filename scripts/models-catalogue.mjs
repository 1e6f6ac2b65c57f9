#!/usr/bin/env node
/**
 * `npm run models:update`: rewrites models.json's computed fields (parameters, contextLength,
 * downloadBytes, gpuBytes) from each entry's published config.json in test/fixtures/configs/, and
 * README.md's supported-models table from models.json. The numbers come from src/models/catalogue.ts,
 * which sizes the weights with the loader's own code (describeWeights + each format's layout, summed
 * by the memory preflight), loaded here through Vite because the formats import their WGSL with `?raw`.
 *
 *   node scripts/models-catalogue.mjs           # write models.json and README.md
 *   node scripts/models-catalogue.mjs --check   # exit 1 if either is stale (writes nothing)
 */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'vite';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const check = process.argv.includes('--check');

const server = await createServer({
  root,
  configFile: false,
  logLevel: 'warn',
  server: { middlewareMode: true, hmr: false, ws: false },
  appType: 'custom',
  optimizeDeps: { noDiscovery: true },
});
let code = 0;
try {
  const cat = await server.ssrLoadModule('/src/models/catalogue.ts');
  const modelsPath = join(root, 'models.json');
  const readmePath = join(root, 'README.md');
  const doc = JSON.parse(readFileSync(modelsPath, 'utf8'));
  const models = doc.models.map((entry) => {
    const file = join(root, 'test/fixtures/configs', `${cat.catalogueFixtureName(entry.id)}.json`);
    if (!existsSync(file)) throw new Error(`${entry.id}: no config fixture ${file}`);
    return cat.withComputedFields(entry, JSON.parse(readFileSync(file, 'utf8')));
  });
  const modelsText = cat.formatCatalogue({ ...doc, models });
  const readme = readFileSync(readmePath, 'utf8');
  const readmeText = cat.replaceReadmeTable(readme, cat.catalogueReadmeTable(models));
  const stale = [];
  if (modelsText !== readFileSync(modelsPath, 'utf8')) stale.push('models.json');
  if (readmeText !== readme) stale.push('README.md');
  if (check) {
    if (stale.length) {
      console.error(`stale: ${stale.join(', ')} (run npm run models:update)`);
      code = 1;
    } else console.log('models.json and README.md are up to date');
  } else {
    writeFileSync(modelsPath, modelsText);
    writeFileSync(readmePath, readmeText);
    console.log(stale.length ? `updated ${stale.join(', ')} (${models.length} models)` : `up to date (${models.length} models)`);
  }
} catch (e) {
  console.error(e);
  code = 1;
} finally {
  await server.close();
}
process.exit(code);
