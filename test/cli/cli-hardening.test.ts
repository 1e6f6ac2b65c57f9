import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { modelVariant } from '../helpers/model-variants.ts';
import { recordedStatic, redirectingHub, startSpaServer, type TestServer } from '../helpers/spa-server.ts';

/**
 * The CLI as a tool (`node bin/nibble.js`; needs `npm run build`):
 * - usage: per-command help, --version, exit 2 for every usage error (no arguments, negative or
 *   empty numbers, --gpu, --context-length 0, hub-serve --port 99999), nibble's own messages;
 * - the Hub token goes only to the Hub: never to a model URL on another origin, nor to the origin
 *   a Hub mirror redirects to;
 * - a model folder on a static host with an SPA fallback loads, and a missing required file there
 *   is a clear error;
 * - errors name the user's path, never the CLI's internal http://127.0.0.1:PORT URLs.
 */
const bin = resolve(repoRoot(), 'bin', 'nibble.js');
const stories = join(modelsDir(), 'stories260K');
const golden = JSON.parse(readFileSync(join(stories, 'golden.json'), 'utf8')) as {
  prompts: Array<{ prompt: string; generated_ids: number[] }>;
};
const zoo = golden.prompts.find((p) => p.prompt === 'Zoo')!;
const version = (JSON.parse(readFileSync(resolve(repoRoot(), 'package.json'), 'utf8')) as { version: string }).version;

/** Runs the CLI synchronously (for cases that never reach a server of this process). */
function nibble(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the CLI without blocking this process, so the test's own servers can answer it. */
function nibbleAsync(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((ok, fail) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, HF_TOKEN: '', HF_ENDPOINT: '', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.on('error', fail);
    child.on('close', (code) => {
      clearTimeout(timer);
      ok({ code, stdout, stderr });
    });
  });
}

describe('CLI usage', () => {
  it('no arguments: the overview on stderr, exit 2', () => {
    const r = nibble();
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Usage:/);
    expect(r.stdout).toBe('');
  });

  it('--version prints the package version', () => {
    for (const flag of ['--version', '-v']) {
      const r = nibble(flag);
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe(version);
    }
  });

  it('each command has its own --help', () => {
    const pages = new Set<string>();
    for (const cmd of ['generate', 'chat', 'eval', 'hub-serve', 'bench', 'synth']) {
      const r = nibble(cmd, '--help');
      expect(r.code, cmd).toBe(0);
      expect(r.stdout.startsWith(`Usage: nibble ${cmd} `), cmd).toBe(true);
      pages.add(r.stdout);
      expect(nibble('help', cmd).stdout).toBe(r.stdout);
    }
    expect(pages.size).toBe(6);
    expect(nibble('generate', '--help').stdout).toMatch(/--top-p/);
    expect(nibble('hub-serve', '--help').stdout).not.toMatch(/--top-p/);
    expect(nibble('--help').stdout).toMatch(/nibble <command> --help/);
  });

  it('negative numbers get nibble\'s own usage error, exit 2', () => {
    for (const [flag, value] of [
      ['--top-k', '-1'],
      ['--seed', '-3'],
      ['--temperature', '-1'],
      ['--max-new-tokens', '-5'],
      ['--top-p', '-0.5'],
      ['--repetition-penalty', '-1'],
    ]) {
      const r = nibble('generate', '--model', stories, '--prompt', 'x', flag, value);
      expect(r.code, flag).toBe(2);
      expect(r.stderr, flag).toMatch(new RegExp(`^nibble: ${flag} must be `));
      expect(r.stderr).not.toMatch(/ambiguous/);
    }
  });

  it('bench refuses an unknown --kv-cache or --matmul value before starting anything, exit 2', () => {
    const kv = nibble('bench', '--model', stories, '--kv-cache', 'bf16');
    expect(kv.code).toBe(2);
    expect(kv.stderr).toMatch(/^nibble: --kv-cache must be f32 or f16/);
    const mm = nibble('bench', '--model', stories, '--matmul', 'tiles');
    expect(mm.code).toBe(2);
    expect(mm.stderr).toMatch(/^nibble: --matmul must be /);
  });

  it('empty or missing numeric values are usage errors', () => {
    const empty = nibble('generate', '--model', stories, '--prompt', 'x', '--max-new-tokens', '');
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/--max-new-tokens needs a value/);
    const missing = nibble('generate', '--model', stories, '--prompt', 'x', '--max-new-tokens');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--max-new-tokens/);
    expect(nibble('generate', '--model', stories, '--prompt', 'x', '--temperature', ' ').code).toBe(2);
    expect(nibble('generate', '--model', stories, '--prompt', 'x', '--seed', '1.5').code).toBe(2);
    expect(nibble('generate', '--model', stories, '--prompt', 'x', '--top-k', '0x10').code).toBe(2);
    expect(nibble('generate', '--model', stories, '--prompt', '--json').code).toBe(2); // a flag is not a value
  });

  it('--gpu, --context-length and --draft-tokens are checked before anything starts', () => {
    const gpu = nibble('generate', '--model', stories, '--prompt', 'x', '--gpu', 'tpu');
    expect(gpu.code).toBe(2);
    expect(gpu.stderr).toMatch(/--gpu must be one of auto, swiftshader, native/);
    const ctx = nibble('generate', '--model', stories, '--prompt', 'x', '--context-length', '0');
    expect(ctx.code).toBe(2);
    expect(ctx.stderr).toMatch(/--context-length must be an integer ≥ 1/);
    expect(nibble('generate', '--model', stories, '--prompt', 'x', '--draft', 'self', '--draft-tokens', '99').code).toBe(2);
    expect(nibble('bench', '--gpu', 'tpu').code).toBe(2);
  });

  it('hub-serve --port 99999 is a usage error, not a raw Node error', () => {
    const r = nibble('hub-serve', '--dir', '.', '--port', '99999');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^nibble: --port must be an integer in \[0, 65535\]/);
    expect(r.stderr).not.toMatch(/RangeError|ERR_SOCKET/);
    expect(nibble('hub-serve', '--dir', '.', '--fail-rate', '2').code).toBe(2);
  });

  it('a prompt that starts with a dash is a value, not a flag', () => {
    // parsing succeeds; the missing folder is what fails (exit 1, named as given)
    const r = nibble('generate', '--model', '/nonexistent/model', '--prompt', '-x');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not-found.*\/nonexistent\/model/);
  });
});

describe('CLI with loopback servers', () => {
  const servers: TestServer[] = [];
  afterAll(async () => {
    for (const s of servers) await s.close();
  });

  it('HF_TOKEN is not sent to a model URL on another origin (and --context-length above the maximum is reported)', async () => {
    const plain = await recordedStatic(stories);
    servers.push(plain);
    const r = await nibbleAsync(['generate', '--model', plain.url, '--prompt', 'Zoo', '--max-new-tokens', '8', '--json', '--context-length', '100000'], {
      HF_TOKEN: 'hf_secret_should_stay_home',
    });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tokenIds).toEqual(zoo.generated_ids.slice(0, 8));
    expect(plain.requests.length).toBeGreaterThan(3);
    expect(plain.requests.filter((q) => q.headers.authorization !== undefined)).toEqual([]);
    expect(r.stderr).toMatch(/--context-length 100000 is above the model's maximum of 512 positions.*using 512/);
  });

  it('through a Hub mirror that redirects to another origin, the token reaches the Hub only', async () => {
    const cdn = await recordedStatic(stories);
    const hub = await redirectingHub('org/stories260K', cdn.url);
    servers.push(cdn, hub);
    const r = await nibbleAsync(['generate', '--model', 'org/stories260K', '--hub', hub.url, '--prompt', 'Zoo', '--max-new-tokens', '8', '--json'], {
      HF_TOKEN: 'hf_secret_for_the_hub',
    });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tokenIds).toEqual(zoo.generated_ids.slice(0, 8));
    // the Hub got the token (so the check below is not vacuous) ...
    expect(hub.requests.some((q) => q.headers.authorization === 'Bearer hf_secret_for_the_hub')).toBe(true);
    // ... and no request to the other origin carried it
    expect(cdn.requests.length).toBeGreaterThan(3);
    expect(cdn.requests.filter((q) => q.headers.authorization !== undefined)).toEqual([]);
  });

  it('a model folder on a host with an SPA fallback (index.html, 200, for missing files) loads', async () => {
    const spa = await startSpaServer(stories);
    servers.push(spa);
    const r = await nibbleAsync(['generate', '--model', `${spa.url}/`, '--prompt', 'Zoo', '--max-new-tokens', '48', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tokenIds).toEqual(zoo.generated_ids);
    // it did ask for the optional index and got the fallback page
    expect(spa.requests.some((q) => q.path === '/model.safetensors.index.json')).toBe(true);
  });

  it('a required file missing on that host is an error naming the HTML fallback', async () => {
    const spa = await startSpaServer(stories, { missing: ['tokenizer.json'] });
    servers.push(spa);
    const r = await nibbleAsync(['generate', '--model', spa.url, '--prompt', 'Zoo', '--json']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\[not-found\]/);
    expect(r.stderr).toMatch(/tokenizer\.json/);
    expect(r.stderr).toMatch(/HTML page.*SPA fallback/);
  });

  it("errors name the user's folder, not the CLI's internal URL", async () => {
    const dir = modelVariant('cli-no-tokenizer', (d) => rmSync(join(d, 'tokenizer.json')));
    const r = await nibbleAsync(['generate', '--model', dir, '--prompt', 'Zoo', '--json']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`file tokenizer.json not found at ${dir}`);
    expect(r.stderr).not.toMatch(/127\.0\.0\.1|\/local\/\d/);
  });
});
