/**
 * safetensors: header parsing, checkpoint (single file or sharded index) discovery, and the
 * dtype conversions the upload path applies to streamed tensor bytes.
 *
 * File layout (https://github.com/huggingface/safetensors):
 *
 *   [u64 little-endian N][N bytes of UTF-8 JSON header, may be space-padded][data section]
 *
 * The header maps tensor name → { dtype, shape, data_offsets: [begin, end] } where the offsets
 * are relative to the start of the data section (byte 8 + N). An optional `__metadata__` entry
 * maps strings to strings. We never read the data section here: callers get a table of
 * absolute byte ranges and stream each tensor through `ModelSource.range`.
 */
import { NibbleError } from '../errors.ts';
import type { ModelSource } from '../source/types.ts';

import { DTYPE_BYTES, isDType, type DType } from '../util/dtype.ts';

// the dtypes and their host-side conversions live in util/dtype.ts (the weight formats use them too)
export { bf16ToF32, DTYPE_BYTES, f16ToF32, isDType, toF32, type DType } from '../util/dtype.ts';

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** File (path inside the ModelSource) holding the tensor. */
  file: string;
  /** ABSOLUTE byte offset of the first byte in `file` (8 + headerLen + data_offsets[0]). */
  start: number;
  /** ABSOLUTE byte offset one past the last byte in `file`. */
  end: number;
}

/** Largest header we accept (the reference implementation uses the same 100 MB bound). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const INDEX_FILE = 'model.safetensors.index.json';
const SINGLE_FILE = 'model.safetensors';

function bad(message: string): NibbleError {
  return new NibbleError('bad-safetensors', message);
}

/**
 * Reads the u64 little-endian header length from the first 8 bytes. The value is assembled
 * from two u32 halves so lengths ≥ 2^53 cannot silently round; any non-zero high half is
 * certainly larger than MAX_HEADER_BYTES, so we report it as Infinity.
 */
function headerLength(prefix: Uint8Array): number {
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const lo = view.getUint32(0, true);
  const hi = view.getUint32(4, true);
  return hi === 0 ? lo : Infinity;
}

/** Validates the header length against the file size; returns it. */
function checkHeaderLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || prefix.length < 8) {
    throw bad(`${file}: file is ${Math.min(fileSize, prefix.length)} bytes, too short for a safetensors header (needs at least 8)`);
  }
  const len = headerLength(prefix);
  const shown = Number.isFinite(len) ? String(len) : '>= 2^32';
  if (len === 0) throw bad(`${file}: header length is 0`);
  if (len > MAX_HEADER_BYTES) {
    throw bad(`${file}: header length ${shown} bytes is too large (limit ${MAX_HEADER_BYTES})`);
  }
  if (8 + len > fileSize) {
    throw bad(`${file}: header length ${len} bytes runs beyond the end of the file (${fileSize} bytes)`);
  }
  return len;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fmtShape(shape: unknown[]): string {
  return `[${shape.join(',')}]`;
}

/**
 * Parses and validates a safetensors header.
 *
 * @param prefix   the first 8 + N bytes of the file (length prefix + JSON header); extra bytes
 *                 after the header are ignored
 * @param fileSize the whole file's size, used to check that every tensor lies inside the file
 * @param file     the file's name, used in error messages and stored in each TensorInfo
 */
export function parseSafetensorsHeader(
  prefix: Uint8Array,
  fileSize: number,
  file: string,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string>; dataStart: number } {
  const len = checkHeaderLength(prefix, fileSize, file);
  if (prefix.length < 8 + len) {
    throw bad(`${file}: got ${prefix.length} header bytes but the header needs ${8 + len}`);
  }
  const dataStart = 8 + len;

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(prefix.subarray(8, dataStart));
  } catch {
    throw bad(`${file}: header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw bad(`${file}: header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) {
    const kind = json === null ? 'null' : Array.isArray(json) ? 'an array' : typeof json;
    throw bad(`${file}: header must be a JSON object, got ${kind}`);
  }

  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const dataSize = fileSize - dataStart;
  // [begin, end, name] relative to the data section, for the overlap check.
  const spans: Array<[number, number, string]> = [];

  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(entry)) throw bad(`${file}: __metadata__ must be an object of strings`);
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') {
          throw bad(`${file}: __metadata__ value for "${k}" must be a string, got ${JSON.stringify(v)}`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    if (!isPlainObject(entry)) throw bad(`${where}: entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!isDType(dtype)) {
      throw bad(`${where}: unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')})`);
    }
    if (!Array.isArray(shape)) throw bad(`${where}: shape must be an array, got ${JSON.stringify(shape)}`);
    let elements = 1;
    for (const d of shape) {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
        throw bad(`${where}: shape ${JSON.stringify(shape)} must hold non-negative integers`);
      }
      elements *= d;
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)
    ) {
      throw bad(`${where}: data_offsets ${JSON.stringify(offsets)} must be [begin, end], non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw bad(`${where}: data_offsets [${begin},${end}] has begin > end`);
    const bytes = elements * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(bytes) || bytes !== end - begin) {
      throw bad(
        `${where}: shape ${fmtShape(shape)} × ${dtype} (${DTYPE_BYTES[dtype]} bytes) = ${bytes} bytes but data_offsets span ${end - begin}`,
      );
    }
    if (end > dataSize) {
      throw bad(
        `${where}: data_offsets [${begin},${end}] run beyond the end of the file (data section is ${dataSize} bytes)`,
      );
    }
    tensors.set(name, {
      name,
      dtype,
      shape: shape.slice() as number[],
      file,
      start: dataStart + begin,
      end: dataStart + end,
    });
    if (end > begin) spans.push([begin, end, name]); // empty tensors occupy no bytes
  }

  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (let i = 1; i < spans.length; i++) {
    const prev = spans[i - 1]!;
    const cur = spans[i]!;
    if (cur[0] < prev[1]) {
      throw bad(
        `${file}: tensor "${cur[2]}" [${cur[0]},${cur[1]}] overlaps tensor "${prev[2]}" [${prev[0]},${prev[1]}]`,
      );
    }
  }
  return { tensors, metadata, dataStart };
}

/** Reads and parses one file's header through the source: two range reads, never the data. */
export async function readSafetensorsHeader(
  source: ModelSource,
  file: string,
  signal?: AbortSignal,
): Promise<{ tensors: Map<string, TensorInfo>; metadata: Record<string, string>; dataStart: number }> {
  const fileSize = await source.size(file, signal);
  if (fileSize < 8) return parseSafetensorsHeader(new Uint8Array(0), fileSize, file); // throws
  const lenBytes = await source.range(file, 0, 8, signal);
  // Validate the length before fetching it, so a garbage length never triggers a huge read.
  const len = checkHeaderLength(lenBytes, fileSize, file);
  const header = await source.range(file, 8, 8 + len, signal);
  const prefix = new Uint8Array(8 + len);
  prefix.set(lenBytes.subarray(0, 8), 0);
  prefix.set(header, 8);
  return parseSafetensorsHeader(prefix, fileSize, file);
}

export interface TensorTable {
  /** Every tensor of the checkpoint, by name. */
  tensors: Map<string, TensorInfo>;
  /** The safetensors files of the checkpoint, in index order (one entry when not sharded). */
  files: string[];
}

/**
 * Finds and reads a checkpoint's tensor table: `model.safetensors.index.json` (sharded) when
 * present, else `model.safetensors`.
 */
export async function openCheckpoint(source: ModelSource, signal?: AbortSignal): Promise<TensorTable> {
  if (await source.exists(INDEX_FILE, signal)) {
    return openSharded(source, signal);
  }
  if (!(await source.exists(SINGLE_FILE, signal))) {
    throw new NibbleError('not-found', `no ${SINGLE_FILE} or ${INDEX_FILE} in ${source.description}`);
  }
  const { tensors } = await readSafetensorsHeader(source, SINGLE_FILE, signal);
  return { tensors, files: [SINGLE_FILE] };
}

async function openSharded(source: ModelSource, signal?: AbortSignal): Promise<TensorTable> {
  const text = await source.text(INDEX_FILE, signal);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw bad(`${INDEX_FILE}: not valid JSON (${(e as Error).message})`);
  }
  const weightMap = isPlainObject(json) ? json.weight_map : undefined;
  if (!isPlainObject(weightMap)) throw bad(`${INDEX_FILE}: "weight_map" must be an object of tensor name → file`);
  const files: string[] = [];
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || shard === '') {
      throw bad(`${INDEX_FILE}: weight_map entry for tensor "${name}" must be a file name, got ${JSON.stringify(shard)}`);
    }
    if (!files.includes(shard)) files.push(shard);
  }
  if (files.length === 0) throw bad(`${INDEX_FILE}: weight_map is empty`);

  // Headers are small; read all shards concurrently (matters over a network).
  const headers = await Promise.all(files.map((f) => readSafetensorsHeader(source, f, signal)));

  const tensors = new Map<string, TensorInfo>();
  for (const { tensors: shardTensors } of headers) {
    for (const [name, info] of shardTensors) {
      const seen = tensors.get(name);
      if (seen) throw bad(`tensor "${name}" appears in two shards: ${seen.file} and ${info.file}`);
      tensors.set(name, info);
    }
  }
  for (const [name, shard] of Object.entries(weightMap) as Array<[string, string]>) {
    const info = tensors.get(name);
    if (!info || info.file !== shard) {
      throw bad(`${INDEX_FILE}: tensor "${name}" is listed in ${shard} but that shard does not contain it`);
    }
  }
  return { tensors, files };
}
