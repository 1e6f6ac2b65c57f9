import { defineConfig, type Plugin } from 'vite';
import { resolve } from 'node:path';
import { serveDir } from './src/node/static.ts';
import { modelsDir } from './src/node/paths.ts';

/**
 * One Vite config for three jobs:
 * - `vite` (dev server): serves demo/ and test/browser/ pages straight from src/ (TypeScript, WGSL via `?raw`);
 * - `vite build`: the ES-module library bundle `dist/nibble.js` (shaders inlined), which the CLI's
 *   headless-Chromium runtime and npm consumers import;
 * - the Node-side CLI bundle (`dist/node/cli.js`) is built by `build.node` below through the same config
 *   when NIBBLE_BUILD=node.
 */
const root = import.meta.dirname;
const nodeBuild = process.env.NIBBLE_BUILD === 'node';

/** Dev server only: /models/* → the test models (NIBBLE_MODELS_DIR), /cache/* → .cache (synthetic models). */
function modelFiles(): Plugin {
  return {
    name: 'nibble-model-files',
    configureServer(server) {
      server.middlewares.use('/models', serveDir(modelsDir()));
      server.middlewares.use('/cache', serveDir(resolve(root, '.cache')));
    },
  };
}

export default defineConfig({
  plugins: [modelFiles()],
  // scan both pages up front so the dev server never re-optimizes (and reloads a page) mid-test
  optimizeDeps: {
    entries: ['demo/index.html', 'test/browser/harness.html'],
    include: ['@huggingface/tokenizers', '@huggingface/jinja'],
  },
  server: { host: '127.0.0.1', fs: { allow: [root, resolve(root, '..', 'shared')] } },
  build: nodeBuild
    ? {
        ssr: true,
        outDir: 'dist/node',
        emptyOutDir: true,
        target: 'node20',
        rollupOptions: {
          input: { cli: resolve(root, 'src/node/cli.ts') },
          output: { format: 'es', entryFileNames: '[name].js' },
        },
      }
    : {
        outDir: 'dist',
        emptyOutDir: true,
        target: 'es2022',
        sourcemap: true,
        lib: {
          entry: { nibble: resolve(root, 'src/index.ts'), runner: resolve(root, 'src/runner.ts') },
          formats: ['es'],
          fileName: (_format, name) => `${name}.js`,
        },
        rollupOptions: { external: [] },
      },
});
