import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { NibbleError } from '../../src/errors.ts';
import { openCheckpoint } from '../../src/loader/safetensors.ts';
import { modelsDir } from '../../src/node/paths.ts';
import { isHtmlContentType, looksLikeHtml, UrlSource } from '../../src/source/url.ts';
import { startSpaServer, type TestServer } from '../helpers/spa-server.ts';

/**
 * Static hosts with an SPA fallback answer a missing file with index.html and status 200. UrlSource
 * takes an HTML answer where a model file was asked for as "not there": optional files are absent
 * (the loader falls back to model.safetensors), required ones are a `not-found` naming the fallback.
 */
const stories = join(modelsDir(), 'stories260K');

async function errorOf(p: Promise<unknown>): Promise<NibbleError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(NibbleError);
    return e as NibbleError;
  }
  throw new Error('expected a NibbleError, nothing was thrown');
}

describe.each([
  ['Content-Type: text/html', true],
  ['no Content-Type (first bytes only)', false],
])('UrlSource on a host with an SPA fallback (%s)', (_name, htmlType) => {
  let spa: TestServer;
  let src: UrlSource;

  beforeAll(async () => {
    spa = await startSpaServer(stories, { htmlType, missing: ['tokenizer_config.json'] });
    src = new UrlSource(spa.url);
  });
  afterAll(() => spa.close());

  it('optional files answered with index.html do not exist', async () => {
    expect(await src.exists('model.safetensors.index.json')).toBe(false);
    expect(await src.exists('tokenizer_config.json')).toBe(false);
    expect(await src.exists('config.json')).toBe(true);
    expect(await src.exists('model.safetensors')).toBe(true);
  });

  it('the checkpoint opens from model.safetensors (no "not valid JSON" from the fallback page)', async () => {
    const t = await openCheckpoint(src);
    expect(t.files).toEqual(['model.safetensors']);
    expect(t.tensors.size).toBeGreaterThan(10);
  });

  it('a required file answered with index.html is not-found, naming the HTML fallback', async () => {
    const reads: Array<() => Promise<unknown>> = [() => src.text('tokenizer_config.json'), () => src.text('missing.json'), () => src.range('missing.safetensors', 0, 8)];
    // without a Content-Type only the bytes tell: size() alone cannot know (the range read then fails)
    if (htmlType) reads.push(() => src.size('missing.safetensors'));
    for (const read of reads) {
      const e = await errorOf(read());
      expect(e.code).toBe('not-found');
      expect(e.message).toMatch(/HTML page/);
      expect(e.message).toMatch(/SPA fallback/);
      expect(e.message).toMatch(/index\.html/);
    }
  });

  it('real files still read', async () => {
    expect(JSON.parse(await src.text('config.json')).model_type).toBe('llama');
    expect((await src.range('model.safetensors', 0, 8)).length).toBe(8);
  });
});

describe('HTML detection', () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  it('by Content-Type', () => {
    expect(isHtmlContentType('text/html; charset=utf-8')).toBe(true);
    expect(isHtmlContentType('application/xhtml+xml')).toBe(true);
    expect(isHtmlContentType('application/json')).toBe(false);
    expect(isHtmlContentType('text/plain')).toBe(false);
    expect(isHtmlContentType(null)).toBe(false);
  });
  it('by first bytes', () => {
    expect(looksLikeHtml(enc('<!DOCTYPE html><html>'))).toBe(true);
    expect(looksLikeHtml(enc('\ufeff\n  <html lang="en">'))).toBe(true);
    expect(looksLikeHtml(enc('<!doctyp'))).toBe(true); // the 8-byte safetensors length prefix of a fallback page
    expect(looksLikeHtml(enc('{"a": "<html>"}'))).toBe(false);
    expect(looksLikeHtml(enc('<|im_start|>'))).toBe(false);
    expect(looksLikeHtml(Uint8Array.of(0x3c, 0x01, 0, 0, 0, 0, 0, 0))).toBe(false); // a real 316-byte safetensors header length
  });
});
