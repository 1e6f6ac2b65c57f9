import { defineConfig, type Plugin } from 'vite';
import { resolve } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
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
      // connect also routes '/models.json' to '/models' (it takes '.' as a boundary): only /models/…
      const under = (prefix: string, serve: ReturnType<typeof serveDir>): typeof serve => (req, res, next) =>
        ((req as { originalUrl?: string }).originalUrl ?? '').startsWith(`${prefix}/`) ? serve(req, res, next) : next?.();
      server.middlewares.use('/models', under('/models', serveDir(modelsDir())));
      server.middlewares.use('/cache', under('/cache', serveDir(resolve(root, '.cache'))));
    },
  };
}

/**
 * The demo runs under a strict Content-Security-Policy (no inline scripts, no eval): the dev and
 * preview servers send it with /demo/ pages and with the workers those pages start (a dedicated
 * worker gets its policy from its own script's response; Chromium sends Sec-Fetch-Dest: worker and
 * the page as Referer). test/browser/demo.test.ts checks the demo works under it.
 */
export const DEMO_CSP = "script-src 'self'";
function demoCsp(): Plugin {
  const use = (mw: { use: (f: (req: IncomingMessage, res: ServerResponse, next: () => void) => void) => void }) =>
    mw.use((req, res, next) => {
      const path = (req.url ?? '/').split('?')[0];
      const referer = String(req.headers.referer ?? '');
      const demoWorker = req.headers['sec-fetch-dest'] === 'worker' && /^https?:\/\/[^/]+\/demo(\/|$)/.test(referer);
      if (/^\/demo(\/|$)/.test(path) || demoWorker) res.setHeader('Content-Security-Policy', DEMO_CSP);
      next();
    });
  return {
    name: 'nibble-demo-csp',
    configureServer(server) {
      use(server.middlewares);
    },
    configurePreviewServer(server) {
      use(server.middlewares);
    },
  };
}

/**
 * Library build: WorkerEngine's default worker (src/worker/client.ts has
 * `new Worker(new URL('./worker.ts', import.meta.url), …)`, which the dev server serves from src/)
 * becomes the entry dist/nibble-worker.js, referenced from dist/worker.js by the same pattern,
 * `new Worker(new URL("./nibble-worker.js", import.meta.url), { type: "module" })`, for the app's
 * bundler to pick up (Vite itself would otherwise bundle the worker into a file of its own).
 */
function workerEntry(): Plugin {
  const placeholder = '__NIBBLE_WORKER_JS__'; // as long as the replacement: the chunk's source map stays exact
  return {
    name: 'nibble-worker-entry',
    apply: 'build',
    enforce: 'pre',
    transform(code, id) {
      if (!id.endsWith('/src/worker/client.ts')) return null;
      const out = code.replace("new URL('./worker.ts', import.meta.url)", `new URL(${placeholder}, import.meta.url)`);
      if (out === code) this.error('src/worker/client.ts no longer creates its worker with new URL(\'./worker.ts\', import.meta.url)');
      return { code: out, map: null };
    },
    renderChunk(code) {
      return code.includes(placeholder) ? { code: code.replaceAll(placeholder, '"./nibble-worker.js"'), map: null } : null;
    },
  };
}

export default defineConfig({
  plugins: [modelFiles(), demoCsp(), workerEntry()],
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
        sourcemap: true,
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
          entry: { nibble: resolve(root, 'src/index.ts'), runner: resolve(root, 'src/runner.ts'), worker: resolve(root, 'src/worker.ts'), 'nibble-worker': resolve(root, 'src/worker/worker.ts') },
          formats: ['es'],
          fileName: (_format, name) => `${name}.js`,
        },
        rollupOptions: { external: [] },
      },
});
