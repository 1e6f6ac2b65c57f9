import { registerFormat, type GpuWeight, type QuantRuntime as Runtime, type WeightBuilder, type WeightFormat, type WeightLayout } from './format.ts';
import { bindAt, ChunkQuantizer, quantKernel, submitDispatches } from './gpu-builder.ts';
import { rowWords } from './layout.ts';
import quantNf4 from '../../shaders/quant_nf4.wgsl?raw';
import quantNf4dq from '../../shaders/quant_nf4dq.wgsl?raw';
import weightNf4 from '../../shaders/weight_nf4.wgsl?raw';
import nf4Absmax from '../../shaders/weight_nf4_absmax.wgsl?raw';
import nf4dqAbsmax from '../../shaders/weight_nf4dq_absmax.wgsl?raw';

/**
 * NF4 (bitsandbytes / QLoRA): blocks of 64 consecutive weights along the input dimension, one f32
 * absmax per block, each weight the nearest of the 16 NormalFloat values × absmax; 8 codes per u32.
 * Blocks stay inside rows: a row of K holds ceil(K / 64) blocks, the last one partial (bnb
 * flattens the tensor, so its blocks straddle rows when K is not a multiple of 64).
 * nf4-dq adds bnb's double quantization: the absmax values minus their mean, as 8-bit codes of
 * bnb's signed dynamic map with one f32 scale per 256 blocks.
 */

const BLOCK = 64;
const DQ_GROUP = 256;

const firstPass = quantKernel('quant_nf4', quantNf4);
const secondPass = quantKernel('quant_nf4dq', quantNf4dq);

function geometry(cols: number) {
  const KW = rowWords(cols, 8); // rows padded to 16 bytes; the quantizer writes the padding (code 7)
  const NB = Math.ceil(cols / BLOCK);
  return { KW, NB, geo: { group: BLOCK, rowWords: KW, groups: NB, units: NB } };
}

export const nf4Format: WeightFormat = {
  name: 'nf4',
  decoder: { name: 'nf4', code: weightNf4 + '\n' + nf4Absmax },
  cacheKey: firstPass.code + weightNf4 + nf4Absmax,
  layout(rows: number, cols: number): WeightLayout {
    const { KW, NB } = geometry(cols);
    return { buffers: [rows * KW * 4, rows * NB * 4], bytes: rows * (KW + NB) * 4, temporary: [] };
  },
  create(rt: Runtime, rows: number, cols: number, label: string): WeightBuilder {
    const { geo } = geometry(cols);
    const L = nf4Format.layout!(rows, cols);
    const codes = rt.buffer(L.buffers[0]!, `${label}.codes`);
    const absmax = rt.buffer(L.buffers[1]!, `${label}.absmax`);
    const q = new ChunkQuantizer(rt, label, rows, cols, firstPass, [codes, absmax], geo);
    return {
      nonFinite: q.nonFinite,
      write: (row0, dtype, bytes) => q.write(row0, dtype, bytes),
      finish(): GpuWeight {
        q.finish();
        return { format: 'nf4', rows, cols, buffers: [codes, absmax], bytes: L.bytes, constants: {} };
      },
    };
  },
};

/**
 * bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)` in float32
 * as torch computes it: for i = 0..6 the 2^i midpoints of linspace(0.1, 1, 2^i + 1) (torch's
 * formula: from the start for the first half, from the end for the second), times ±10^(i-6);
 * then 0 and 1; sorted. 256 values, dmap[127] = 0, dmap[255] = 1.
 */
export function dynamicMap(): Float32Array {
  const f = Math.fround;
  const data: number[] = [0, 1];
  const pow10 = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];
  for (let i = 0; i < 7; i++) {
    const steps = 2 ** i + 1;
    const start = f(0.1);
    const step = f(f(1 - start) / (steps - 1));
    const b = Array.from({ length: steps }, (_, j) => (j < steps >> 1 ? f(start + f(step * j)) : f(1 - f(step * (steps - 1 - j)))));
    const p = f(pow10[i]);
    for (let j = 0; j + 1 < steps; j++) {
      const mean = f(f(b[j] + b[j + 1]) / 2);
      data.push(f(p * mean), f(-p * mean));
    }
  }
  return new Float32Array(data.sort((a, b) => a - b));
}

export const nf4dqFormat: WeightFormat = {
  name: 'nf4-dq',
  decoder: { name: 'nf4dq', code: weightNf4 + '\n' + nf4dqAbsmax },
  cacheKey: firstPass.code + secondPass.code + weightNf4 + nf4dqAbsmax,
  layout(rows: number, cols: number): WeightLayout {
    const { KW, NB } = geometry(cols);
    const nb = rows * NB;
    const buffers = [rows * KW * 4, Math.ceil(nb / 4) * 4, (1 + Math.ceil(nb / DQ_GROUP)) * 4];
    // until finish(): the f32 absmax of every block (the mean needs all of them) and the map
    return { buffers, bytes: buffers[0]! + buffers[1]! + buffers[2]!, temporary: [nb * 4, 256 * 4] };
  },
  create(rt: Runtime, rows: number, cols: number, label: string): WeightBuilder {
    const { NB, geo } = geometry(cols);
    const nb = rows * NB;
    const groups = Math.ceil(nb / DQ_GROUP);
    const L = nf4dqFormat.layout!(rows, cols);
    const codes = rt.buffer(L.buffers[0]!, `${label}.codes`);
    const qabs = rt.buffer(L.buffers[1]!, `${label}.qabsmax`);
    const stats = rt.buffer(L.buffers[2]!, `${label}.stats`);
    // until finish(): the f32 absmax of every block (the mean needs all of them) and the map
    const absmax = rt.buffer(L.temporary[0]!, `${label}.absmax_f32`);
    const dmap = rt.upload(dynamicMap(), `${label}.dynamic_map`);
    const q = new ChunkQuantizer(rt, label, rows, cols, firstPass, [codes, absmax], geo);
    return {
      nonFinite: q.nonFinite,
      write: (row0, dtype, bytes) => q.write(row0, dtype, bytes),
      finish(): GpuWeight {
        // second pass over all absmax: the mean (one workgroup), then 8-bit codes per group of 256
        q.setChunk({ row0: 0, rows: nb, units: groups });
        const mean = rt.pipeline(secondPass.name, secondPass.code, 'mean', {});
        const quantize = rt.pipeline(secondPass.name, secondPass.code, 'quantize', {});
        const bind = (p: GPUComputePipeline, entries: Array<[number, GPUBuffer]>) => bindAt(rt, p, [[0, q.uniform], ...entries], `${label}.double_quant`);
        submitDispatches(rt, `${label}.double_quant`, [
          { pipeline: mean, bindGroup: bind(mean, [[2, absmax], [4, stats]]), grid: [1, 1] },
          { pipeline: quantize, bindGroup: bind(quantize, [[2, absmax], [3, qabs], [4, stats], [5, dmap]]), grid: [Math.ceil(groups / 64), 1] },
        ]);
        q.finish();
        absmax.destroy();
        dmap.destroy();
        return { format: 'nf4-dq', rows, cols, buffers: [codes, qabs, stats], bytes: L.bytes, constants: {} };
      },
    };
  },
};

registerFormat(nf4Format);
registerFormat(nf4dqFormat);
