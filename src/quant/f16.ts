import { registerFormat, type GpuWeight, type QuantRuntime as Runtime, type WeightBuilder, type WeightFormat, type WeightLayout } from './format.ts';
import { ChunkQuantizer, quantKernel } from './gpu-builder.ts';
import { rowWords } from './layout.ts';
import quantF16 from '../../shaders/quant_f16.wgsl?raw';
import weightF16 from '../../shaders/weight_f16.wgsl?raw';

const quantizer = quantKernel('quant_f16', quantF16);

/**
 * f16: IEEE half storage (pairs in u32 words), converted on the GPU from bf16/f32 with round to
 * nearest even (shaders/quant_f16.wgsl) and widened in the kernels with unpack2x16float, so it
 * needs no shader-f16 and runs everywhere; it halves the bytes an f32 weight reads.
 */
export const f16Format: WeightFormat = {
  name: 'f16',
  decoder: { name: 'f16', code: weightF16 },
  cacheKey: quantizer.code + weightF16,
  layout(rows: number, cols: number): WeightLayout {
    const bytes = rows * rowWords(cols, 2) * 4; // rows padded to 16 bytes (zero words: buffers start zeroed)
    return { buffers: [bytes], bytes, temporary: [] };
  },
  create(rt: Runtime, rows: number, cols: number, label: string): WeightBuilder {
    const KW = rowWords(cols, 2);
    const L = f16Format.layout!(rows, cols);
    const codes = rt.buffer(L.buffers[0]!, `${label}.codes`);
    const units = Math.ceil(cols / 2); // one thread per word that holds weights
    const q = new ChunkQuantizer(rt, label, rows, cols, quantizer, [codes], { group: 0, rowWords: KW, groups: 0, units });
    return {
      nonFinite: q.nonFinite,
      write: (row0, dtype, bytes) => q.write(row0, dtype, bytes),
      finish(): GpuWeight {
        q.finish();
        return { format: 'f16', rows, cols, buffers: [codes], bytes: L.bytes, constants: {} };
      },
    };
  },
};

registerFormat(f16Format);
