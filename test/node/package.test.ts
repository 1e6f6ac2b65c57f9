import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { build } from 'vite';
import puppeteer from 'puppeteer-core';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';

/**
 * The package as a web app gets it: `npm pack` of the built repository (run `npm run build`
 * first), installed into a fresh fixture app offline (a lockfile made from ours, tarballs from the
 * npm cache), and a consumer file type-checked against the emitted declarations under strict
 * settings with erasableSyntaxOnly and skipLibCheck: false, with no WebGPU types of its own;
 * then the app is built with Vite and run in the shared headless Chromium (served from .cache/
 * by the test dev server, beside /models), where it reproduces stories260K's golden tokens.
 */
const root = repoRoot();
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
let tmp = '';
let app = '';
let packed: { filename: string; integrity: string; files: Array<{ path: string }> };

interface LockEntry {
  version: string;
  resolved?: string;
  integrity?: string;
  dependencies?: Record<string, string>;
  dev?: boolean;
  [k: string]: unknown;
}

/** A package-lock.json for an app depending on the tarball: nibble's dependencies come from our lock. */
function fixtureLock(pkg: Record<string, unknown>, tarball: string, integrity: string) {
  const ours = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const packages: Record<string, unknown> = {
    '': { name: 'nibble-fixture', version: '1.0.0', dependencies: { nibble: `file:${tarball}` } },
    'node_modules/nibble': {
      version: pkg.version,
      resolved: `file:${tarball}`,
      integrity,
      license: pkg.license,
      dependencies: pkg.dependencies,
      peerDependencies: pkg.peerDependencies,
      peerDependenciesMeta: pkg.peerDependenciesMeta,
      bin: pkg.bin,
      engines: pkg.engines,
    },
  };
  const todo = Object.keys((pkg.dependencies as Record<string, string>) ?? {});
  while (todo.length) {
    const name = todo.pop()!;
    const key = `node_modules/${name}`;
    if (packages[key]) continue;
    const e = ours.packages[key];
    if (!e) throw new Error(`${name} is not in package-lock.json (a nested dependency?)`);
    const { dev: _dev, ...entry } = e;
    packages[key] = entry;
    todo.push(...Object.keys(e.dependencies ?? {}));
  }
  return { name: 'nibble-fixture', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

beforeAll(() => {
  for (const f of ['dist/nibble.js', 'dist/node/cli.js', 'dist/types/index.d.ts']) {
    if (!existsSync(join(root, f))) throw new Error(`${f} is missing: run \`npm run build\` before this test`);
  }
  tmp = mkdtempSync(join(tmpdir(), 'nibble-pack-'));
  const out = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], { cwd: root, encoding: 'utf8' });
  packed = JSON.parse(out)[0];
  app = join(tmp, 'app');
  mkdirSync(app);
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const tarball = `../${packed.filename}`;
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify({ name: 'nibble-fixture', version: '1.0.0', private: true, type: 'module', dependencies: { nibble: `file:${tarball}` } }, null, 2),
  );
  writeFileSync(join(app, 'package-lock.json'), JSON.stringify(fixtureLock(pkg, tarball, packed.integrity), null, 2));
  const r = spawnSync('npm', ['ci', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: app, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm ci of the fixture app failed:\n${r.stdout}\n${r.stderr}`);
}, 240_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const CONSUMER = `
import { Engine, NibbleError, isNibbleError, type GenerateResult, type LoadOptions, type NibbleErrorCode } from 'nibble';

export async function run(device: GPUDevice, out: { textContent: string | null }): Promise<GenerateResult> {
  const opts: LoadOptions = { quant: 'nf4', contextLength: 512, device, onProgress: (p) => console.log(p.phase, p.bytesDone) };
  const engine = await Engine.load('/models/stories260K', opts);
  const gen = engine.generate('Once upon a time', { maxNewTokens: 16, temperature: 0.7, seed: 1, stop: ['.'] });
  for await (const text of gen) out.textContent = (out.textContent ?? '') + text;
  const res = await gen.result;
  const tps: number = res.timings.decodeTokensPerSecond;
  const buffer: GPUBuffer = engine.model.logits;
  const reply = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8 });
  console.log(tps, buffer.size, reply.choices[0]?.message.content, engine.info.bitsPerWeight);
  await engine.dispose();
  return res;
}

export function codeOf(e: unknown): NibbleErrorCode | null {
  if (isNibbleError(e, 'context-overflow')) return e.code;
  return e instanceof NibbleError ? e.code : null;
}
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'ESNext',
    moduleResolution: 'Bundler',
    lib: ['ES2022', 'DOM', 'DOM.Iterable'],
    types: [],
    strict: true,
    noEmit: true,
    skipLibCheck: false,
    erasableSyntaxOnly: true,
    verbatimModuleSyntax: true,
    isolatedModules: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: false,
  },
};

function typecheck(files: Record<string, string>): { status: number | null; output: string } {
  for (const [name, text] of Object.entries(files)) writeFileSync(join(app, name), text);
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, files: Object.keys(files) }, null, 2));
  const r = spawnSync(process.execPath, [tsc, '-p', app], { cwd: app, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe('the packed package in a consumer app', () => {
  it('ships ESM, source maps and declarations, and installs without a browser-automation package', () => {
    const files = packed.files.map((f) => f.path);
    for (const f of ['dist/nibble.js', 'dist/nibble.js.map', 'dist/types/index.d.ts', 'dist/types/api/engine.d.ts', 'dist/types/index.d.ts.map', 'package.json']) {
      expect(files).toContain(f);
    }
    expect(files.some((f) => f.startsWith('test/'))).toBe(false);
    const mod = join(app, 'node_modules');
    expect(existsSync(join(mod, 'nibble', 'dist', 'types', 'index.d.ts'))).toBe(true);
    expect(existsSync(join(mod, '@webgpu', 'types'))).toBe(true);
    expect(existsSync(join(mod, 'puppeteer-core'))).toBe(false);
    expect(existsSync(join(mod, 'puppeteer'))).toBe(false);
    const pkg = JSON.parse(readFileSync(join(mod, 'nibble', 'package.json'), 'utf8'));
    expect(pkg.exports['.'].types).toBe('./dist/types/index.d.ts');
    expect(readFileSync(join(mod, 'nibble', 'dist', 'types', 'index.d.ts'), 'utf8')).toMatch(/<reference types="@webgpu\/types"/);
  });

  it('its CLI, without the optional puppeteer-core, says what to install (exit 1)', () => {
    const r = spawnSync(process.execPath, [join(app, 'node_modules', 'nibble', 'bin', 'nibble.js'), 'generate', '--model', 'org/name', '--prompt', 'y'], {
      cwd: app,
      encoding: 'utf8',
    });
    expect(r.stderr).toMatch(/puppeteer-core, which is not installed: run `npm install puppeteer-core`/);
    expect(r.status).toBe(1);
  });

  it('type-checks a consumer under strict settings, erasableSyntaxOnly and skipLibCheck: false', () => {
    const r = typecheck({ 'main.ts': CONSUMER });
    expect(r.output).toBe('');
    expect(r.status).toBe(0);
  });

  it('the types are real: a misuse is a type error', () => {
    const r = typecheck({ 'bad.ts': `import { Engine } from 'nibble';\nexport const g = (e: Engine) => e.generate('x', { maxNewTokens: '5' });\n` });
    expect(r.status).not.toBe(0);
    expect(r.output).toMatch(/bad\.ts.*TS2322/);
  });
});

const APP_HTML = `<!doctype html>
<html><head><meta charset="utf-8" /><title>nibble fixture</title></head>
<body><pre id="out"></pre><script type="module" src="./app.ts"></script></body></html>
`;

const APP_TS = `import { Engine, isNibbleError } from 'nibble';

const out = document.getElementById('out')!;
async function main(): Promise<void> {
  const engine = await Engine.load(new URL('/models/stories260K', location.href).href);
  const gen = engine.generate('Once upon a time', { maxNewTokens: 16, ignoreEos: true });
  for await (const t of gen) out.textContent += t;
  const r = await gen.result;
  await engine.dispose();
  (globalThis as { fixtureResult?: unknown }).fixtureResult = { tokenIds: r.tokenIds, text: r.text, streamed: out.textContent };
}
main().catch((e: unknown) => {
  (globalThis as { fixtureResult?: unknown }).fixtureResult = { error: isNibbleError(e) ? e.code : String(e) };
});
`;

describe('the fixture app built with Vite', () => {
  it('builds from the installed package and reproduces the golden greedy tokens in Chromium', async () => {
    writeFileSync(join(app, 'index.html'), APP_HTML);
    writeFileSync(join(app, 'app.ts'), APP_TS);
    const outDir = join(root, '.cache', 'fixture-app');
    await build({ root: app, base: './', configFile: false, logLevel: 'warn', build: { outDir, emptyOutDir: true, target: 'es2022' } });
    const bundle = readFileSync(join(outDir, 'index.html'), 'utf8');
    expect(bundle).toMatch(/<script type="module"/);
    const golden = JSON.parse(readFileSync(join(modelsDir(), 'stories260K', 'golden.json'), 'utf8')) as {
      prompts: Array<{ prompt: string; generated_ids: number[] }>;
    };
    const want = golden.prompts.find((p) => p.prompt === 'Once upon a time')!.generated_ids.slice(0, 16);
    const browser = await puppeteer.connect({ browserWSEndpoint: inject('wsEndpoint'), protocolTimeout: 0 });
    const page = await browser.newPage();
    try {
      await page.goto(`${inject('viteUrl')}/cache/fixture-app/index.html`);
      await page.waitForFunction(() => (globalThis as { fixtureResult?: unknown }).fixtureResult !== undefined, { timeout: 120_000 });
      const r = (await page.evaluate(() => (globalThis as { fixtureResult?: unknown }).fixtureResult)) as {
        tokenIds?: number[];
        text?: string;
        streamed?: string;
        error?: string;
      };
      expect(r.error).toBeUndefined();
      expect(r.tokenIds).toEqual(want);
      expect(r.streamed).toBe(r.text);
    } finally {
      await page.close();
      await browser.disconnect();
    }
  });
});
