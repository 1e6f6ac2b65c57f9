import type { DType } from '../util/dtype.ts';

/**
 * A weight format is everything nibble needs to store a 2-D weight [rows = out, cols = in] on the
 * GPU and to run kernels on it: how to build it from the checkpoint's bytes as they stream in,
 * and the WGSL decoder the matmul and embedding skeletons run on it (kernels/linear.ts).
 * The model graph never looks at the format; kernels/ picks the shader from here.
 */
export interface GpuWeight {
  readonly format: string;
  readonly rows: number;
  readonly cols: number;
  /** Bound, in order, from binding WB of the matmul (5) and embedding (3) skeletons. */
  readonly buffers: GPUBuffer[];
  /** Bytes on the GPU (codes + scales). */
  readonly bytes: number;
  /** Extra override constants for this weight's shaders (e.g. group size). */
  readonly constants: Record<string, number>;
}

/**
 * A weight too large for one storage binding (the embedding or LM head of a large vocabulary on an
 * adapter with a 128 MiB binding limit), stored as row parts: part i holds rows
 * rowStarts[i] … rowStarts[i + 1] − 1 as a weight of its own. kernels/linear.ts runs one matmul
 * per part, each writing its columns of y, and the embedding gather once per part.
 */
export interface SplitWeight {
  readonly format: string;
  readonly rows: number;
  readonly cols: number;
  readonly parts: readonly GpuWeight[];
  /** First row of each part (rowStarts[0] = 0). */
  readonly rowStarts: readonly number[];
}

/**
 * What a weight format's builder uses of the GPU runtime (kernels/runtime.ts's Runtime is one; quant/
 * does not import kernels/, which reads the formats' decoders).
 */
export interface QuantRuntime {
  readonly device: GPUDevice;
  /** A storage buffer (16-byte rounded; over the binding limit a gpu-limit error). */
  buffer(size: number, label: string, usage?: number): GPUBuffer;
  upload(data: ArrayBufferView, label: string): GPUBuffer;
  /** A cached compute pipeline. */
  pipeline(name: string, code: string, entryPoint: string, constants: Record<string, number | boolean>): GPUComputePipeline;
}

export interface WeightBuilder {
  /**
   * Writes `bytes` (whole rows, in the checkpoint's dtype, row-major) as rows row0.. of the
   * weight. Called as chunks of a tensor arrive; several tensors may fill one weight (fused qkv).
   */
  write(row0: number, dtype: DType, bytes: Uint8Array): void;
  /** Called once all rows were written; releases temporary buffers. */
  finish(): GpuWeight;
  /**
   * GPU-quantized formats: the quantizer's count of non-finite inputs (u32 [count, first weight
   * row], complete once finish()'s work has run). The caller reads it and destroys it.
   */
  readonly nonFinite?: GPUBuffer;
}

/**
 * The GPU storage of one rows × cols weight in a format: what its builder allocates (the memory
 * preflight, src/api/preflight.ts, sizes a model with it before anything is downloaded).
 */
export interface WeightLayout {
  /** Byte sizes of the buffers the weight keeps, in GpuWeight.buffers order (before Runtime.buffer's 16-byte rounding). */
  buffers: number[];
  /** GpuWeight.bytes: codes + scales. */
  bytes: number;
  /** Byte sizes of temporary buffers the builder holds until finish() (besides the chunk staging). */
  temporary: number[];
}

export interface ShaderSource {
  name: string;
  code: string;
}

export interface WeightFormat {
  readonly name: string;
  /** Allocates the GPU storage of a rows × cols weight. */
  create(rt: QuantRuntime, rows: number, cols: number, label: string): WeightBuilder;
  /** The buffers create() allocates for a rows × cols weight (optional for formats registered by others). */
  layout?(rows: number, cols: number): WeightLayout;
  /**
   * The format's decoder (shaders/weight_<format>.wgsl): CPW, CV, WC, SCALED, SB, NB, w_load(), w_quad(), w_quad_at() and w_bscale() over its
   * buffers from binding WB. kernels/ prepends it to the matmul and embedding skeletons.
   */
  readonly decoder: ShaderSource;
  /** What the stored bytes depend on (the quantizer's and decoder's code): part of the weight cache key. */
  readonly cacheKey: string;
}

const registry = new Map<string, WeightFormat>();

export function registerFormat(f: WeightFormat): void {
  registry.set(f.name, f);
}

export function getFormat(name: string): WeightFormat | undefined {
  return registry.get(name);
}

export function formatNames(): string[] {
  return [...registry.keys()];
}
