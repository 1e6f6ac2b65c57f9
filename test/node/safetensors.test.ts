import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NibbleError } from '../../src/errors.ts';
import {
  DTYPE_BYTES,
  MAX_HEADER_BYTES,
  bf16ToF32,
  f16ToF32,
  openCheckpoint,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  toF32,
} from '../../src/loader/safetensors.ts';
import { FsSource } from '../../src/node/fs-source.ts';
import { BlobSource } from '../../src/source/blob.ts';
import { buildSafetensors, bytesOf, type BuildOptions, type BuildTensor } from '../helpers/safetensors-build.ts';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const modelsDir = path.resolve(repoRoot, process.env.NIBBLE_MODELS_DIR ?? '../shared/models');
const storiesDir = path.join(modelsDir, 'stories260K');

/** Runs `fn`, expects a NibbleError with `code`, returns its message. */
async function errorOf(fn: () => unknown, code: string): Promise<string> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(NibbleError);
    expect((e as NibbleError).code).toBe(code);
    return (e as NibbleError).message;
  }
  throw new Error(`expected a NibbleError '${code}', nothing was thrown`);
}

const SMALL: BuildTensor[] = [
  { name: 'a', dtype: 'F32', shape: [2, 3] },
  { name: 'b', dtype: 'BF16', shape: [4] },
  { name: 'c', dtype: 'I8', shape: [] },
];

function parse(bytes: Uint8Array, file = 'model.safetensors') {
  return parseSafetensorsHeader(bytes, bytes.length, file);
}

function badMessage(tensors: BuildTensor[], opts: BuildOptions): Promise<string> {
  return errorOf(() => parse(buildSafetensors(tensors, opts)), 'bad-safetensors');
}

describe('parseSafetensorsHeader', () => {
  it('parses a valid file with absolute offsets and metadata', () => {
    const bytes = buildSafetensors(SMALL, { metadata: { format: 'pt' } });
    const { tensors, metadata, dataStart } = parse(bytes);
    expect(metadata).toEqual({ format: 'pt' });
    const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(dataStart).toBe(8 + headerLen);
    expect(tensors.get('a')).toEqual({ name: 'a', dtype: 'F32', shape: [2, 3], file: 'model.safetensors', start: dataStart, end: dataStart + 24 });
    expect(tensors.get('b')).toMatchObject({ dtype: 'BF16', start: dataStart + 24, end: dataStart + 32 });
    expect(tensors.get('c')).toMatchObject({ shape: [], start: dataStart + 32, end: dataStart + 33 });
    expect(dataStart + 33).toBe(bytes.length);
  });

  it('accepts a header without __metadata__ and zero-size tensors', () => {
    const { tensors, metadata } = parse(buildSafetensors([{ name: 'e', dtype: 'F16', shape: [0, 5] }, ...SMALL]));
    expect(metadata).toEqual({});
    expect(tensors.get('e')!.end - tensors.get('e')!.start).toBe(0);
  });

  it('rejects a file shorter than 8 bytes', async () => {
    const msg = await errorOf(() => parseSafetensorsHeader(new Uint8Array(5), 5, 'x.safetensors'), 'bad-safetensors');
    expect(msg).toMatch(/x\.safetensors.*5 bytes.*too short/);
  });

  it('rejects a zero header length', async () => {
    expect(await badMessage(SMALL, { headerLength: 0n })).toMatch(/header length is 0/);
  });

  it('rejects a header length above the limit, including ones >= 2^32', async () => {
    expect(await badMessage(SMALL, { headerLength: BigInt(MAX_HEADER_BYTES + 1) })).toMatch(/too large/);
    expect(await badMessage(SMALL, { headerLength: 1n << 60n })).toMatch(/too large/);
  });

  it('rejects a header length that runs past the end of the file', async () => {
    expect(await badMessage(SMALL, { headerLength: 10_000n })).toMatch(/header length 10000 bytes runs beyond the end of the file/);
  });

  it('rejects invalid JSON and invalid UTF-8', async () => {
    expect(await badMessage(SMALL, { corruptText: (j) => j.slice(0, -3) })).toMatch(/model\.safetensors: header is not valid JSON/);
    const msg = await badMessage(SMALL, {
      corruptBytes: (b) => {
        b[9] = 0xff; // inside the JSON text
        return b;
      },
    });
    expect(msg).toMatch(/not valid UTF-8/);
  });

  it('rejects JSON that is not an object', async () => {
    expect(await badMessage(SMALL, { corruptHeader: () => [1, 2] })).toMatch(/must be a JSON object, got an array/);
    expect(await badMessage(SMALL, { corruptHeader: () => 'hi' })).toMatch(/got string/);
  });

  it('rejects an unknown dtype, naming the tensor', async () => {
    const msg = await badMessage([{ name: 'w', dtype: 'F12', shape: [2] }], {});
    expect(msg).toMatch(/tensor "w": unknown dtype "F12"/);
  });

  it('rejects negative and fractional shapes', async () => {
    const neg = await badMessage(SMALL, { corruptHeader: (h) => void ((h.a as { shape: unknown }).shape = [-2, 3]) });
    expect(neg).toMatch(/tensor "a": shape \[-2,3\] must hold non-negative integers/);
    const frac = await badMessage(SMALL, { corruptHeader: (h) => void ((h.a as { shape: unknown }).shape = [1.5, 4]) });
    expect(frac).toMatch(/tensor "a": shape \[1.5,4\]/);
    const notArr = await badMessage(SMALL, { corruptHeader: (h) => void ((h.a as { shape: unknown }).shape = 6) });
    expect(notArr).toMatch(/tensor "a": shape must be an array/);
  });

  it('rejects malformed data_offsets', async () => {
    const set = (v: unknown) => (h: Record<string, unknown>) => void ((h.b as { data_offsets: unknown }).data_offsets = v);
    expect(await badMessage(SMALL, { corruptHeader: set([24]) })).toMatch(/tensor "b": data_offsets \[24\] must be/);
    expect(await badMessage(SMALL, { corruptHeader: set([24.5, 32.5]) })).toMatch(/tensor "b": data_offsets/);
    expect(await badMessage(SMALL, { corruptHeader: set([32, 24]) })).toMatch(/begin > end/);
  });

  it('rejects a shape × dtype size that does not match the offsets span', async () => {
    const msg = await badMessage(SMALL, { corruptHeader: (h) => void ((h.a as { data_offsets: unknown }).data_offsets = [0, 20]) });
    expect(msg).toBe('model.safetensors: tensor "a": shape [2,3] × F32 (4 bytes) = 24 bytes but data_offsets span 20');
  });

  it('rejects offsets beyond the end of the file', async () => {
    const msg = await badMessage(SMALL, {
      corruptBytes: (b) => b.slice(0, b.length - 1), // cut the last data byte: tensor "c" now ends past EOF
    });
    expect(msg).toMatch(/tensor "c": data_offsets \[32,33\] run beyond the end of the file/);
  });

  it('rejects overlapping tensors', async () => {
    const msg = await badMessage(
      [
        { name: 'x', dtype: 'F32', shape: [4] },
        { name: 'y', dtype: 'F32', shape: [4] },
      ],
      { corruptHeader: (h) => void ((h.y as { data_offsets: unknown }).data_offsets = [8, 24]) },
    );
    expect(msg).toMatch(/tensor "y" \[8,24\] overlaps tensor "x" \[0,16\]/);
  });

  it('rejects a bad __metadata__', async () => {
    expect(await badMessage(SMALL, { metadata: { format: 1 } })).toMatch(/__metadata__ value for "format" must be a string/);
    expect(await badMessage(SMALL, { metadata: ['pt'] })).toMatch(/__metadata__ must be an object/);
  });

  it('rejects a prefix shorter than the header it announces', async () => {
    const bytes = buildSafetensors(SMALL);
    const msg = await errorOf(() => parseSafetensorsHeader(bytes.subarray(0, 20), bytes.length, 'f'), 'bad-safetensors');
    expect(msg).toMatch(/header needs/);
  });
});

describe('readSafetensorsHeader / openCheckpoint on stories260K', () => {
  it('reads the real model header through FsSource', async () => {
    const { tensors, metadata } = await readSafetensorsHeader(new FsSource(storiesDir), 'model.safetensors');
    expect(metadata).toEqual({ format: 'pt' });
    expect(tensors.size).toBe(47); // embed + 5 × 9 + final norm
    expect(tensors.get('model.embed_tokens.weight')).toMatchObject({ dtype: 'F32', shape: [512, 64] });
    expect(tensors.get('model.layers.0.self_attn.k_proj.weight')).toMatchObject({ shape: [32, 64] });
    expect(tensors.get('model.layers.4.mlp.down_proj.weight')).toMatchObject({ shape: [64, 172] });
    expect(tensors.get('model.norm.weight')).toMatchObject({ shape: [64] });
    expect(tensors.has('lm_head.weight')).toBe(false);
    for (const t of tensors.values()) expect(t.end - t.start).toBe(t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype]);
  });

  it('openCheckpoint finds the single file and the bytes decode to the embedding', async () => {
    const src = new FsSource(storiesDir);
    const table = await openCheckpoint(src);
    expect(table.files).toEqual(['model.safetensors']);
    const norm = table.tensors.get('model.norm.weight')!;
    const values = toF32(await src.range(norm.file, norm.start, norm.end), norm.dtype);
    expect(values.length).toBe(64);
    expect(values.every((v) => Number.isFinite(v))).toBe(true);
  });

  it('openCheckpoint names the source when there is no checkpoint', async () => {
    const src = new BlobSource(new Map([['config.json', new Blob(['{}'])]]), 'test-folder');
    expect(await errorOf(() => openCheckpoint(src), 'not-found')).toBe(
      'no model.safetensors or model.safetensors.index.json in test-folder',
    );
  });

  it('readSafetensorsHeader reports a truncated file from a source', async () => {
    const src = new BlobSource(new Map([['model.safetensors', new Blob([new Uint8Array(3)])]]));
    expect(await errorOf(() => readSafetensorsHeader(src, 'model.safetensors'), 'bad-safetensors')).toMatch(/too short/);
  });
});

describe('sharded checkpoints', () => {
  let dir: string;
  const shard1 = buildSafetensors([
    { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [4, 2] },
    { name: 'model.layers.0.input_layernorm.weight', dtype: 'F32', shape: [2] },
  ]);
  const shard2 = buildSafetensors([{ name: 'model.norm.weight', dtype: 'BF16', shape: [2] }]);
  const weightMap = {
    'model.embed_tokens.weight': 'model-00001-of-00002.safetensors',
    'model.layers.0.input_layernorm.weight': 'model-00001-of-00002.safetensors',
    'model.norm.weight': 'model-00002-of-00002.safetensors',
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nibble-shards-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function writeCase(name: string, files: Record<string, Uint8Array | string>): Promise<FsSource> {
    const d = path.join(dir, name);
    await mkdir(d, { recursive: true });
    for (const [f, content] of Object.entries(files)) await writeFile(path.join(d, f), content);
    return new FsSource(d);
  }

  it('reads a two-shard checkpoint', async () => {
    const src = await writeCase('ok', {
      'model.safetensors.index.json': JSON.stringify({ metadata: { total_size: 42 }, weight_map: weightMap }),
      'model-00001-of-00002.safetensors': shard1,
      'model-00002-of-00002.safetensors': shard2,
    });
    const table = await openCheckpoint(src);
    expect(table.files).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(table.tensors.size).toBe(3);
    const norm = table.tensors.get('model.norm.weight')!;
    expect(norm.file).toBe('model-00002-of-00002.safetensors');
    expect(norm.dtype).toBe('BF16');
    // Absolute offsets: the bytes read at [start, end) are the tensor's data.
    const bytes = await src.range(norm.file, norm.start, norm.end);
    expect(Array.from(bytes)).toEqual([7, 38, 69, 100]); // the builder's default pattern
  });

  it('errors when the index names a tensor its shard lacks', async () => {
    const src = await writeCase('missing-tensor', {
      'model.safetensors.index.json': JSON.stringify({ weight_map: { ...weightMap, 'lm_head.weight': 'model-00002-of-00002.safetensors' } }),
      'model-00001-of-00002.safetensors': shard1,
      'model-00002-of-00002.safetensors': shard2,
    });
    expect(await errorOf(() => openCheckpoint(src), 'bad-safetensors')).toMatch(
      /tensor "lm_head.weight" is listed in model-00002-of-00002.safetensors but that shard does not contain it/,
    );
  });

  it('errors when a shard file is missing', async () => {
    const src = await writeCase('missing-shard', {
      'model.safetensors.index.json': JSON.stringify({ weight_map: weightMap }),
      'model-00001-of-00002.safetensors': shard1,
    });
    expect(await errorOf(() => openCheckpoint(src), 'not-found')).toMatch(/model-00002-of-00002.safetensors not found/);
  });

  it('errors when a tensor appears in two shards', async () => {
    const src = await writeCase('duplicate', {
      'model.safetensors.index.json': JSON.stringify({ weight_map: weightMap }),
      'model-00001-of-00002.safetensors': shard1,
      'model-00002-of-00002.safetensors': buildSafetensors([
        { name: 'model.norm.weight', dtype: 'BF16', shape: [2] },
        { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [4, 2] },
      ]),
    });
    expect(await errorOf(() => openCheckpoint(src), 'bad-safetensors')).toMatch(/"model.embed_tokens.weight" appears in two shards/);
  });

  it('errors on a malformed index', async () => {
    const notJson = await writeCase('bad-index-json', { 'model.safetensors.index.json': '{weight_map' });
    expect(await errorOf(() => openCheckpoint(notJson), 'bad-safetensors')).toMatch(/index.json: not valid JSON/);
    const badMap = await writeCase('bad-index-map', {
      'model.safetensors.index.json': JSON.stringify({ weight_map: { a: 3 } }),
    });
    expect(await errorOf(() => openCheckpoint(badMap), 'bad-safetensors')).toMatch(/weight_map entry for tensor "a"/);
    const noMap = await writeCase('no-map', { 'model.safetensors.index.json': JSON.stringify({ metadata: {} }) });
    expect(await errorOf(() => openCheckpoint(noMap), 'bad-safetensors')).toMatch(/"weight_map" must be an object/);
  });
});

describe('dtype conversion', () => {
  const u16 = (...v: number[]) => bytesOf(Uint16Array.from(v));

  it('f16 known values: normals, subnormals, inf, nan, -0', () => {
    const out = f16ToF32(u16(0x3c00, 0xc000, 0x7bff, 0x0400, 0x03ff, 0x0001, 0x8001, 0x7c00, 0xfc00, 0x7e00, 0x8000, 0x3555, 0x0000));
    expect(out[0]).toBe(1);
    expect(out[1]).toBe(-2);
    expect(out[2]).toBe(65504);
    expect(out[3]).toBe(2 ** -14); // smallest normal
    expect(out[4]).toBe(1023 * 2 ** -24); // largest subnormal
    expect(out[5]).toBe(2 ** -24); // smallest subnormal
    expect(out[6]).toBe(-(2 ** -24));
    expect(out[7]).toBe(Infinity);
    expect(out[8]).toBe(-Infinity);
    expect(out[9]).toBeNaN();
    expect(Object.is(out[10], -0)).toBe(true);
    expect(out[11]).toBe(0.333251953125);
    expect(Object.is(out[12], 0)).toBe(true);
  });

  it('f16 matches the definition on all 65536 bit patterns', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const out = f16ToF32(bytesOf(all));
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      const want = e === 0 ? sign * m * 2 ** -24 : e === 31 ? (m ? NaN : sign * Infinity) : sign * (1 + m / 1024) * 2 ** (e - 15);
      if (!Object.is(out[h], want)) throw new Error(`f16 0x${h.toString(16)}: got ${out[h]}, want ${want}`);
    }
  });

  it('bf16 known values', () => {
    const out = bf16ToF32(u16(0x3f80, 0xc000, 0x4049, 0x7f7f, 0x0001, 0x8000, 0x7f80, 0xff80, 0x7fc0));
    expect(out[0]).toBe(1);
    expect(out[1]).toBe(-2);
    expect(out[2]).toBe(3.140625);
    expect(out[3]).toBe(3.3895313892515355e38); // largest finite bf16
    expect(out[4]).toBe(2 ** -133); // smallest subnormal bf16
    expect(Object.is(out[5], -0)).toBe(true);
    expect(out[6]).toBe(Infinity);
    expect(out[7]).toBe(-Infinity);
    expect(out[8]).toBeNaN();
  });

  it('works on unaligned input, fills a given destination, rejects odd lengths', () => {
    const buf = new Uint8Array(7);
    buf.set(u16(0x3f80, 0x4000, 0xbf80), 1); // byteOffset 1
    const dst = new Float32Array(4).fill(9);
    expect(bf16ToF32(buf.subarray(1), dst)).toBe(dst);
    expect(Array.from(dst)).toEqual([1, 2, -1, 9]);
    expect(() => bf16ToF32(new Uint8Array(3))).toThrow(NibbleError);
    expect(() => f16ToF32(new Uint8Array(4), new Float32Array(1))).toThrow(/destination/);
  });

  it('toF32 handles F32 (aligned view and unaligned copy), F16, BF16 and rejects others', async () => {
    const f = Float32Array.from([1.5, -2.25, 3e-40]);
    const aligned = bytesOf(f);
    const view = toF32(aligned, 'F32');
    expect(Array.from(view)).toEqual(Array.from(f));
    expect(view.buffer).toBe(aligned.buffer); // zero-copy
    const shifted = new Uint8Array(13);
    shifted.set(aligned, 1);
    expect(Array.from(toF32(shifted.subarray(1), 'F32'))).toEqual(Array.from(f));
    expect(Array.from(toF32(u16(0x3c00, 0xbc00), 'F16'))).toEqual([1, -1]);
    expect(Array.from(toF32(u16(0x3f80, 0xbf80), 'BF16'))).toEqual([1, -1]);
    expect(await errorOf(() => toF32(new Uint8Array(4), 'I32'), 'bad-tensor')).toMatch(/I32/);
    expect(await errorOf(() => toF32(new Uint8Array(6), 'F32'), 'bad-tensor')).toMatch(/6 bytes/);
  });
});
