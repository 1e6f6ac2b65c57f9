import { toF32, type DType } from '../util/dtype.ts';
import { registerFormat, type GpuWeight, type QuantRuntime as Runtime, type WeightBuilder, type WeightFormat, type WeightLayout } from './format.ts';
import { rowWords } from './layout.ts';
import weightF32 from '../../shaders/weight_f32.wgsl?raw';

/**
 * f32: the unquantized baseline. Bytes stream in as bf16/f16/f32 and are widened chunk by chunk
 * on the CPU. Stored row-major [N, KP], KP = roundUp(K, 4): rows zero-padded to 16 bytes.
 */
export const f32Format: WeightFormat = {
  name: 'f32',
  decoder: { name: 'f32', code: weightF32 },
  cacheKey: weightF32,
  layout(rows: number, cols: number): WeightLayout {
    // rows padded to 16 bytes (KP = roundUp(K, 4) floats; the padding stays 0 from allocation)
    const bytes = rows * rowWords(cols, 1) * 4;
    return { buffers: [bytes], bytes, temporary: [] };
  },
  create(rt: Runtime, rows: number, cols: number, label: string): WeightBuilder {
    const KP = rowWords(cols, 1);
    const buffer = rt.buffer(f32Format.layout!(rows, cols).buffers[0]!, label);
    return {
      write(row0: number, dtype: DType, bytes: Uint8Array) {
        const f = toF32(bytes, dtype);
        if (KP === cols) {
          rt.device.queue.writeBuffer(buffer, row0 * KP * 4, f.buffer, f.byteOffset, f.byteLength);
          return;
        }
        const n = f.length / cols;
        const padded = new Float32Array(n * KP);
        for (let r = 0; r < n; r++) padded.set(f.subarray(r * cols, (r + 1) * cols), r * KP);
        rt.device.queue.writeBuffer(buffer, row0 * KP * 4, padded);
      },
      finish(): GpuWeight {
        return { format: 'f32', rows, cols, buffers: [buffer], bytes: rows * KP * 4, constants: {} };
      },
    };
  },
};

registerFormat(f32Format);
