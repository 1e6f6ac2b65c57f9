import { NibbleError } from '../errors.ts';
import { registerFormat, type GpuWeight, type QuantRuntime as Runtime, type WeightBuilder, type WeightFormat, type WeightLayout } from './format.ts';
import { ChunkQuantizer, quantKernel } from './gpu-builder.ts';
import { rowWords } from './layout.ts';
import quantInt8 from '../../shaders/quant_int8.wgsl?raw';
import weightInt8 from '../../shaders/weight_int8.wgsl?raw';

const quantizer = quantKernel('quant_int8', quantInt8);

/**
 * int8: symmetric absmax quantization per group of `group` consecutive weights along the input
 * dimension (or one group per row), s = absmax / 127, q = round(w / s) ∈ [-127, 127], quantized on
 * the GPU as chunks stream in (shaders/quant_int8.wgsl). 8 + 32 / group bits per weight.
 */
export function int8Format(name: string, group: number | 'row'): WeightFormat {
  // a 16-byte chunk of codes (16 weights, weight_int8.wgsl) must lie inside one group
  if (group !== 'row' && (!Number.isInteger(group) || group < 16 || group % 16 !== 0)) {
    throw new NibbleError('bad-argument', `int8 group size must be a positive multiple of 16, got ${group}`);
  }
  const geometry = (cols: number) => {
    const G = group === 'row' ? cols : group;
    // rows padded to 16 bytes (zero words: buffers start zeroed)
    return { G, KW: rowWords(cols, 4), NG: Math.ceil(cols / G) };
  };
  const layout = (rows: number, cols: number): WeightLayout => {
    const { KW, NG } = geometry(cols);
    return { buffers: [rows * KW * 4, rows * NG * 4], bytes: rows * (KW + NG) * 4, temporary: [] };
  };
  return {
    name,
    decoder: { name: 'int8', code: weightInt8 },
    cacheKey: quantizer.code + weightInt8,
    layout,
    create(rt: Runtime, rows: number, cols: number, label: string): WeightBuilder {
      const { G, KW, NG } = geometry(cols);
      const L = layout(rows, cols);
      const codes = rt.buffer(L.buffers[0]!, `${label}.codes`);
      const scales = rt.buffer(L.buffers[1]!, `${label}.scales`);
      const q = new ChunkQuantizer(rt, label, rows, cols, quantizer, [codes, scales], { group: G, rowWords: KW, groups: NG, units: NG });
      return {
        nonFinite: q.nonFinite,
        write: (row0, dtype, bytes) => q.write(row0, dtype, bytes),
        finish(): GpuWeight {
          q.finish();
          return { format: name, rows, cols, buffers: [codes, scales], bytes: L.bytes, constants: { G } };
        },
      };
    },
  };
}

registerFormat(int8Format('int8', 64));
registerFormat(int8Format('int8-g32', 32));
registerFormat(int8Format('int8-g128', 128));
registerFormat(int8Format('int8-row', 'row'));
