import { describe, expect, it } from 'vitest';
import {
  PREFILL_ROWS,
  chooseMatmulVariant,
  expandQuads,
  expandRows,
  matmulWorkgroup,
  rowQuads,
  PREFILL_LARGE,
  PREFILL_UPGRADE_MIN,
  PREFILL_DEQUANT_MAX,
  prefillDequantBytes,
  scaledFormat,
  skeletonTags,
  tagged,
  type MatmulVariant,
} from '../../src/kernels/linear.ts';
import { getFormat } from '../../src/quant/format.ts';
import '../../src/quant/formats.ts';
import type { GpuContext } from '../../src/gpu/context.ts';
import matmulSrc from '../../shaders/matmul.wgsl?raw';

/** The matmul's build plan: which skeleton lines a build keeps, tiles and workgroup sizes per adapter. */
function ctx(cpuBacked: boolean, subgroupMinSize?: number): GpuContext {
  return {
    adapterInfo: { cpuBacked, subgroupMinSize, summary: cpuBacked ? 'swiftshader' : 'gpu' },
    features: { subgroups: subgroupMinSize !== undefined },
  } as unknown as GpuContext;
}

describe('matmul skeleton tags', () => {
  it('keeps a line only when the build has every tag it names, and strips the tags', () => {
    const src = ['a', 'b // @SC', 'c // @SC @R1', 'd // @NS', '// a comment', 'e // @XB'].join('\n');
    expect(tagged(src, new Set(['SC', 'R1']))).toBe(['a', 'b', 'c', '// a comment'].join('\n'));
    expect(tagged(src, new Set(['NS', 'RL', 'XB']))).toBe(['a', 'd', '// a comment', 'e'].join('\n'));
  });

  it('every build of matmul.wgsl has one chunk loop, one scale strategy and one accumulation per shape', () => {
    for (const scaled of [false, true]) {
      for (const lanes of [1, 8]) {
        for (const mr of [1, 5]) {
          const src = expandRows(expandQuads(tagged(matmulSrc, skeletonTags(lanes === 1, scaled, lanes, mr)), 4), mr, 2);
          const code = src.split('\n').filter((l) => !l.trimStart().startsWith('//')).join('\n');
          expect(code).not.toMatch(/\/\/ @[A-Z]/);
          expect(code).not.toMatch(/\$[jqm]/);
          expect(code.match(/for \(var c = /g)).toHaveLength(1);
          // each accumulator is updated once per chunk (MR activation rows × RQ quads), or once per
          // vec4 of the chunk (CV = 4 here) when several rows go quad by quad (one lane per row group)
          const quadByQuad = lanes === 1 && mr > 1;
          expect(code.match(/acc\d+_\d+ \+=/g)).toHaveLength(mr * 2 * (quadByQuad ? 4 : 1));
          // one row, one lane per row group: a partial sum per weight-row quad, per vec4 of the chunk
          expect(code.match(/p\d+ \+=/g) ?? []).toHaveLength(lanes === 1 && mr === 1 ? 4 * 2 : 0);
          expect(code.includes('w_quad_at(')).toBe(lanes === 1);
          expect(code.includes('w_bscale(')).toBe(scaled);
          // one lane walking whole rows keeps a scale-block counter; lanes that share rows divide
          expect(code.includes('c / SB')).toBe(scaled && lanes > 1);
          expect(code.includes('sk += 1u')).toBe(scaled && lanes === 1);
        }
      }
    }
  });

  it('expandQuads emits a //{quad body once per vec4 of a chunk, each copy in its own block', () => {
    const src = ['a', '  //{quad', '  let x = q$j($ju);', '  //}quad', 'b', '//{quad', '//}quad', 'c'].join('\n');
    expect(expandQuads(src, 2)).toBe(['a', '  {', '  let x = q0(0u);', '  }', '  {', '  let x = q1(1u);', '  }', 'b', 'c'].join('\n'));
  });

  it('every format declares whether it is scaled, and its scale blocks', () => {
    for (const name of ['f32', 'f16', 'int8', 'int8-row', 'nf4', 'nf4-dq']) {
      const f = getFormat(name)!;
      expect(typeof scaledFormat(f)).toBe('boolean');
      expect(f.decoder.code).toMatch(/\bSB\b/);
      expect(f.decoder.code).toMatch(/\bNB\b/);
      expect(f.decoder.code).toMatch(/fn w_bscale\(b: u32\)/);
      expect(f.decoder.code).toMatch(/fn w_load\(i: u32\)/);
      expect(f.decoder.code).toMatch(/fn w_quad_at\(i: u32, j: u32\) -> vec4<f32>/);
    }
    expect(scaledFormat(getFormat('f32')!)).toBe(false);
    expect(scaledFormat(getFormat('int8')!)).toBe(true);
  });
});

describe('matmul tiles and workgroups', () => {
  const cpu = chooseMatmulVariant(ctx(true, 4));
  const gpu = chooseMatmulVariant(ctx(false, 32));
  it('CPU adapters compute 8 weight rows per invocation where it measured faster', () => {
    expect(cpu.reduce).toBe('row');
    expect([16, 8, 4].map((cpw) => rowQuads(cpu, 'decode', cpw))).toEqual([2, 2, 2]);
    expect(rowQuads(cpu, 'decode', 32)).toBe(2);
    expect(rowQuads(cpu, 'prefill', 16)).toBe(2);
    expect(rowQuads(cpu, 'prefill', 32)).toBe(2);
    // verify: 16 weight rows (nf4 8) for big weights, the narrower tile for small ones (tiny models compile less)
    expect([4, 8, 16].map((cpw) => rowQuads(cpu, 'verify', cpw, 576 * 576))).toEqual([4, 4, 4]);
    expect(rowQuads(cpu, 'verify', 32, 576 * 576)).toBe(2);
    expect([4, 8, 16, 32].map((cpw) => rowQuads(cpu, 'verify', cpw, 64 * 172))).toEqual([1, 1, 2, 1]);
    for (const mode of ['decode', 'verify', 'prefill'] as const) expect(rowQuads(gpu, mode, 16)).toBe(1);
  });

  it('prefill tiles: 8 activation rows × 8 weight rows per invocation on CPU adapters', () => {
    for (const cpw of [4, 8, 16, 32]) expect([PREFILL_ROWS, 4 * rowQuads(cpu, 'prefill', cpw)]).toEqual([8, 8]);
    // the 576-row down_proj in 8-row slices: 9 workgroups of 8 invocations, none wasted
    expect(matmulWorkgroup(cpu, 1, 'prefill', 576, 2)).toBe(8);
    // after the load, 16 × 16 for weights of 2^18 or more (SmolLM2-135M's o_proj, 576 × 576, and up); never on GPUs
    expect(PREFILL_LARGE).toEqual({ mr: 16, rq: 4 });
    expect(cpu.prefillUpgradeMin).toBe(PREFILL_UPGRADE_MIN);
    expect(576 * 576).toBeGreaterThanOrEqual(PREFILL_UPGRADE_MIN);
    expect(64 * 172).toBeLessThan(PREFILL_UPGRADE_MIN); // stories260K's largest matmul
    expect(gpu.prefillUpgradeMin).toBe(Infinity);
    expect(cpu.wideVerifyMin).toBe(PREFILL_UPGRADE_MIN);
    expect(gpu.wideVerifyMin).toBe(Infinity);
  });

  it('CPU adapters prefill nf4 weights through an f32 copy: the scratch is the largest that fits; never on GPUs', () => {
    expect(cpu.prefillDequant).toBe(true);
    expect(gpu.prefillDequant).toBe(false);
    expect(chooseMatmulVariant(ctx(false, 32), 'row').prefillDequant).toBe(false); // 'row' forced on a GPU
    const smol = [
      { format: 'nf4', rows: 960, cols: 576 },
      { format: 'nf4', rows: 3072, cols: 576 },
      { format: 'int8', rows: 4096, cols: 576 }, // int8 decodes cheaply: no copy
      { format: 'nf4-dq', rows: 576, cols: 1536 },
    ];
    expect(prefillDequantBytes(true, smol, 128 * 2 ** 20)).toBe(3072 * 576 * 4);
    expect(prefillDequantBytes(false, smol, 128 * 2 ** 20)).toBe(0);
    expect(prefillDequantBytes(true, smol, 4 * 2 ** 20)).toBe(576 * 1536 * 4); // gate_up's copy would not bind: direct
    expect(prefillDequantBytes(true, [{ format: 'f32', rows: 64, cols: 64 }], 2 ** 30)).toBe(0);
    // Llama-3.2-1B: gate_up's f32 copy (128 MiB) is just within PREFILL_DEQUANT_MAX, over a 128 MiB binding it is not
    expect(prefillDequantBytes(true, [{ format: 'nf4', rows: 16384, cols: 2048 }], 2 ** 31)).toBe(PREFILL_DEQUANT_MAX);
    expect(prefillDequantBytes(true, [{ format: 'nf4', rows: 16384, cols: 2048 }, { format: 'nf4', rows: 2048, cols: 8192 }], 2 ** 27 - 4)).toBe(2048 * 8192 * 4);
  });

  it('CPU adapters: workgroups that cover the rows with little waste, ≥ 16 of them in decode and verify; GPUs keep 64', () => {
    const v: MatmulVariant = cpu;
    expect(matmulWorkgroup(v, 1, 'decode', 3072, 2)).toBe(16); // 12 groups of 256 rows would be < 16
    expect(matmulWorkgroup(v, 1, 'decode', 8192, 2)).toBe(64);
    expect(matmulWorkgroup(v, 1, 'decode', 576, 2)).toBe(4); // one SIMD group per workgroup: 18 groups
    expect(matmulWorkgroup(v, 1, 'decode', 256, 2)).toBe(4); // the smallest: 8 groups
    expect(matmulWorkgroup(v, 1, 'decode', 960, 1)).toBe(8); // 30 groups of 32 rows
    expect(matmulWorkgroup(v, 1, 'decode', 2048, 1)).toBe(32);
    expect(matmulWorkgroup(v, 1, 'verify', 1024, 1)).toBe(16);
    expect(matmulWorkgroup(v, 1, 'decode', 100, 2)).toBe(4); // 4 groups; 128 rows computed, the least
    expect(matmulWorkgroup(v, 1, 'prefill', 3072, 2)).toBe(64);
    expect(matmulWorkgroup(v, 1, 'prefill', 576, 2)).toBe(8); // 9 × 64 rows: none wasted (64: 1024 rows)
    expect(matmulWorkgroup(v, 1, 'prefill', 960, 2)).toBe(8);
    expect(matmulWorkgroup(gpu, 8, 'decode', 576, 1)).toBe(64);
  });
});
