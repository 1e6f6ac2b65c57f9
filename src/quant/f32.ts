import type { Runtime } from '../kernels/runtime.ts';
import { toF32, type DType } from '../loader/safetensors.ts';
import { registerFormat, type GpuWeight, type WeightBuilder, type WeightFormat } from './format.ts';
import matmulF32 from '../../shaders/matmul_f32.wgsl?raw';
import embedF32 from '../../shaders/embed_f32.wgsl?raw';

/** f32: the unquantized baseline. Bytes stream in as bf16/f16/f32 and are widened chunk by chunk. */
export const f32Format: WeightFormat = {
  name: 'f32',
  linear: { name: 'matmul_f32', code: matmulF32 },
  embed: { name: 'embed_f32', code: embedF32 },
  supported: () => true,
  create(rt: Runtime, rows: number, cols: number, label: string): WeightBuilder {
    const buffer = rt.buffer(rows * cols * 4, label);
    return {
      write(row0: number, dtype: DType, bytes: Uint8Array) {
        const f = toF32(bytes, dtype);
        rt.device.queue.writeBuffer(buffer, row0 * cols * 4, f.buffer, f.byteOffset, f.byteLength);
      },
      finish(): GpuWeight {
        return { format: 'f32', rows, cols, buffers: [buffer], bytes: rows * cols * 4, constants: {} };
      },
    };
  },
};

registerFormat(f32Format);
