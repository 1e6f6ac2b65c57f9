import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { editJson, modelVariant } from '../helpers/model-variants.ts';

/**
 * `nibble chat` survives (`node bin/nibble.js`; needs `npm run build`):
 * - Ctrl-C (SIGINT) during a reply stops it and returns to a working prompt; a second one at the
 *   prompt exits with 130;
 * - a conversation past the context drops its oldest turns, warns on stderr and goes on;
 * - a model without a chat template fails with no-chat-template before the runtime starts.
 */
const bin = resolve(repoRoot(), 'bin', 'nibble.js');
const stories = join(modelsDir(), 'stories260K');

const chatml = () =>
  modelVariant('chatml-stories-chat-cli', (d) =>
    editJson(join(d, 'tokenizer_config.json'), (j) => {
      j.chat_template =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    }),
  );

interface Session {
  write(s: string): void;
  signal(): void;
  /** Resolves when stdout or stderr (all of it so far) matches. */
  waitFor(stream: 'stdout' | 'stderr', re: RegExp): Promise<void>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }>;
}

/** `nibble chat ARGS` with piped stdin (one user message per line). */
function chat(args: string[]): Session {
  const t0 = performance.now();
  const child = spawn(process.execPath, [bin, 'chat', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  const waiters: Array<{ stream: 'stdout' | 'stderr'; re: RegExp; ok: () => void }> = [];
  const check = () => {
    for (const w of [...waiters]) {
      if (w.re.test(out[w.stream])) {
        waiters.splice(waiters.indexOf(w), 1);
        w.ok();
      }
    }
  };
  child.stdout.on('data', (c: Buffer) => ((out.stdout += c.toString()), check()));
  child.stderr.on('data', (c: Buffer) => ((out.stderr += c.toString()), check()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }>((ok, fail) => {
    child.on('error', fail);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      ok({ code, signal, ...out, ms: performance.now() - t0 });
    });
  });
  return {
    write: (s) => child.stdin.write(s),
    signal: () => child.kill('SIGINT'),
    waitFor: (stream, re) =>
      Promise.race([
        new Promise<void>((ok) => {
          waiters.push({ stream, re, ok });
          check();
        }),
        done.then((r) => {
          throw new Error(`nibble chat exited (${r.code}) before ${stream} matched ${re}:\n${r.stderr}`);
        }),
      ]),
    done,
  };
}

describe('nibble chat survives', () => {
  it('SIGINT mid-reply stops the reply and the prompt still works', async () => {
    const dir = chatml();
    // a reply that would run to the end of the context (hundreds of tokens)
    const s = chat(['--model', dir, '--max-new-tokens', '100000', '--seed', '1', '--stats']);
    s.write('Tell me a long story\n');
    await s.waitFor('stdout', /./);
    s.signal();
    await s.waitFor('stderr', /reply stopped/);
    const afterStop = (await Promise.race([s.done, Promise.resolve(null)])) === null;
    expect(afterStop).toBe(true); // still running
    s.write('And then?\n');
    await s.waitFor('stderr', /\[prompt \d+ tokens/);
    s.write('/exit\n');
    const r = await s.done;
    expect(r.code).toBe(0);
    // the stopped reply, then the second one (complete: its stats line, and the stopped turn is in its prompt)
    const lines = r.stdout.split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThanOrEqual(2);
    const stats = [...r.stderr.matchAll(/\[prompt (\d+) tokens \((\d+) cached\), reply (\d+) tokens/g)];
    expect(stats).toHaveLength(1);
    expect(Number(stats[0][3])).toBeGreaterThan(0);
    expect(r.stderr).not.toMatch(/error/);
  });

  it('a second SIGINT, at the prompt after a stopped reply, exits with 130', async () => {
    const dir = chatml();
    const s = chat(['--model', dir, '--max-new-tokens', '100000', '--seed', '1']);
    s.write('Tell me a long story\n');
    await s.waitFor('stdout', /./);
    s.signal();
    await s.waitFor('stderr', /reply stopped/);
    s.signal();
    const r = await s.done;
    expect(r.code).toBe(130);
  });

  it('a conversation past the context drops its oldest turns with a warning and goes on', async () => {
    const dir = chatml();
    const s = chat(['--model', dir, '--context-length', '100', '--max-new-tokens', '20', '--seed', '1', '--stats', '--system', 'Be kind.']);
    s.write('Hello there\nTell me a story\nAnd then what\nMore please\nOnce more\n/exit\n');
    const r = await s.done;
    expect(r.stderr).not.toMatch(/context-overflow/);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: the conversation outgrew the context of 100 tokens: dropped the oldest \d+ messages? \(the system prompt stays\)/);
    const stats = [...r.stderr.matchAll(/\[prompt (\d+) tokens \((\d+) cached\), reply (\d+) tokens/g)].map((m) => m.slice(1, 4).map(Number));
    expect(stats).toHaveLength(5); // every message got a reply
    for (const [prompt, , reply] of stats) expect(prompt + reply).toBeLessThanOrEqual(100);
  });

  it('a model without a chat template fails with no-chat-template before the runtime starts', async () => {
    const s = chat(['--model', stories]);
    s.write('Hello\n');
    const r = await s.done;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/nibble: error \[no-chat-template\]: .*stories260K has no chat template/);
    expect(r.stderr).not.toMatch(/loading/);
    expect(r.ms).toBeLessThan(3000); // the runtime (Chromium, shader compilation) never started
  });
});
