import type { Runtime } from '../kernels/runtime.ts';
import type { DType } from '../loader/safetensors.ts';

/**
 * A weight format is everything nibble needs to store a 2-D weight [rows = out, cols = in] on the
 * GPU and to run kernels on it: how to build it from the checkpoint's bytes as they stream in,
 * and which WGSL implements the fused linear (gemv/gemm) and the embedding lookup on it.
 * The model graph never looks at the format; kernels/ picks the shader from here.
 */
export interface GpuWeight {
  readonly format: string;
  readonly rows: number;
  readonly cols: number;
  /** Bound, in order, at bindings 4.. of the linear shader and 3.. of the embed shader. */
  readonly buffers: GPUBuffer[];
  /** Bytes on the GPU (codes + scales). */
  readonly bytes: number;
  /** Extra override constants for this weight's shaders (e.g. group size). */
  readonly constants: Record<string, number>;
}

export interface WeightBuilder {
  /**
   * Writes `bytes` (whole rows, in the checkpoint's dtype, row-major) as rows row0.. of the
   * weight. Called as chunks of a tensor arrive; several tensors may fill one weight (fused qkv).
   */
  write(row0: number, dtype: DType, bytes: Uint8Array): void;
  /** Called once all rows were written; releases temporary buffers. */
  finish(): GpuWeight;
}

export interface ShaderSource {
  name: string;
  code: string;
}

export interface WeightFormat {
  readonly name: string;
  /** Allocates the GPU storage of a rows × cols weight. */
  create(rt: Runtime, rows: number, cols: number, label: string): WeightBuilder;
  /** Linear layer kernel: entry points `gemv` and `gemm`; bindings 0 step, 1 x, 2 y, 3 bias, 4.. weight buffers. */
  readonly linear: ShaderSource;
  /** Embedding kernel: entry point `main`; bindings 0 step, 1 ids, 2 out, 3.. weight buffers. */
  readonly embed: ShaderSource;
  /** Whether the device can run this format (e.g. f16 needs `shader-f16`). */
  supported(rt: Runtime): boolean;
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
