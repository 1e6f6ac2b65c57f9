import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { modelsDir } from '../../src/node/paths.ts';
import { TextTokenizer } from '../../src/tokenizer.ts';
import { StopStringMatcher } from '../../src/generate/stop.ts';

/**
 * Streaming text: UTF-8 characters split over byte-fallback tokens (llama2's tokenizer spells
 * emoji and rare CJK as <0xNN> byte tokens) never show up as U+FFFD mid-stream, and stop strings
 * are matched across piece boundaries without emitting any part of them.
 */
const dir = join(modelsDir(), 'llama2-tokenizer');
const tok = new TextTokenizer(
  JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')),
  JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')),
);

function stream(ids: number[], context: number[] = [1]): string[] {
  const d = tok.streamDecoder(context);
  const pieces: string[] = [];
  for (const id of ids) {
    const t = d.push(id);
    if (t) pieces.push(t);
  }
  const rest = d.flush();
  if (rest) pieces.push(rest);
  return pieces;
}

describe('StreamDecoder (UTF-8 across byte-fallback tokens)', () => {
  const text = 'Hello 😀 world! 世界 🎉🎉 龘𠀋 done: café, naïve — ok';

  it('the text really uses byte-fallback tokens', () => {
    const ids = tok.encode(text, false);
    const pieces = ids.map((id) => tok.inner.id_to_token(id) as string);
    const bytes = pieces.filter((p) => /^<0x[0-9A-F]{2}>$/.test(p));
    expect(bytes.length).toBeGreaterThanOrEqual(12); // 😀, 🎉 ×2, 𠀋 are 4 bytes each
  });

  it('never emits U+FFFD mid-stream and the pieces add up to the full decode', () => {
    const ids = tok.encode(text, false);
    const pieces = stream(ids);
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    expect(pieces.join('')).toBe(tok.decode(ids));
    expect(pieces.join('')).toBe(text);
    // a 4-byte emoji arrives as one piece, whole
    expect(pieces.some((p) => p.includes('😀'))).toBe(true);
    expect(pieces.length).toBeLessThan(ids.length);
  });

  it('stays right over long generations (the decode window moves on) and with a prompt context', () => {
    const long = Array.from({ length: 40 }, (_, i) => `${i} 😀 世界 龘 x`).join(' ');
    const ids = tok.encode(long, false);
    expect(ids.length).toBeGreaterThan(300);
    const ctx = tok.encode('Once upon a time', true);
    const pieces = stream(ids, ctx);
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    const full = tok.decode([...ctx, ...ids]);
    const ctxText = tok.decode(ctx);
    expect(pieces.join('')).toBe(full.slice(ctxText.length));
    const d = tok.streamDecoder(ctx);
    for (const id of ids) d.push(id);
    expect(d.text).toBe(pieces.join(''));
  });

  it('an incomplete character at the very end is flushed as decoded', () => {
    const ids = tok.encode('a 😀', false);
    const pieces = stream(ids.slice(0, -1)); // cut the emoji's last byte
    expect(pieces.slice(0, -1).join('')).not.toContain('\uFFFD');
    expect(pieces.join('')).toContain('\uFFFD');
  });
});

describe('StopStringMatcher', () => {
  function run(pieces: string[], stops: string[]): { out: string[]; matched: string | null } {
    const m = new StopStringMatcher(stops);
    const out: string[] = [];
    for (const p of pieces) {
      const t = m.push(p);
      if (t) out.push(t);
      if (m.matched) break;
    }
    const rest = m.flush();
    if (rest) out.push(rest);
    return { out, matched: m.matched };
  }

  it('matches across piece boundaries and never emits any part of the stop string', () => {
    const r = run(['The cat sa', 't on the m', 'at. THE E', 'ND and more'], ['THE END']);
    expect(r.matched).toBe('THE END');
    expect(r.out.join('')).toBe('The cat sat on the mat. ');
    for (const p of r.out) expect(p).not.toMatch(/T$|TH$|THE$/);
  });

  it('holds back a possible prefix, then releases it when it does not continue', () => {
    const m = new StopStringMatcher(['endless']);
    expect(m.push('The end')).toBe('The ');
    expect(m.push('ing')).toBe('ending');
    expect(m.flush()).toBe('');
    const m2 = new StopStringMatcher(['\n\nUser:']);
    expect(m2.push('Hi.\n')).toBe('Hi.');
    expect(m2.push('\nUs')).toBe('');
    expect(m2.flush()).toBe('\n\nUs');
  });

  it('the earliest of several stop strings wins; random splits give the same answer', () => {
    const text = 'alpha beta <|end|> gamma STOP delta';
    const stops = ['STOP', '<|end|>', 'a be'];
    for (let seed = 1; seed <= 50; seed++) {
      const pieces: string[] = [];
      let i = 0;
      let x = seed;
      while (i < text.length) {
        x = (x * 1103515245 + 12345) >>> 0;
        const n = 1 + (x % 5);
        pieces.push(text.slice(i, i + n));
        i += n;
      }
      const r = run(pieces, stops);
      expect(r.matched).toBe('a be');
      expect(r.out.join('')).toBe('alph');
    }
    expect(run(['no stop here'], ['STOP']).out.join('')).toBe('no stop here');
  });
});
