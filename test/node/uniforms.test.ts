import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../src/node/paths.ts';
import { withPrelude } from '../../src/kernels/runtime.ts';
import {
  COMMON_WGSL,
  SAMPLE_PARAMS_BYTES,
  SAMPLE_PARAMS_LAYOUT,
  STEP_BYTES,
  STEP_LAYOUT,
  encodeSampleParams,
  encodeStep,
  type UniformLayout,
} from '../../src/kernels/uniforms.ts';

/**
 * The uniform structs of shaders/common.wgsl against their TypeScript encoders
 * (src/kernels/uniforms.ts): offsets computed from the WGSL source by WGSL's layout rules.
 */

const SCALARS: Record<string, { size: number; align: number }> = {
  u32: { size: 4, align: 4 },
  i32: { size: 4, align: 4 },
  f32: { size: 4, align: 4 },
  'vec2<u32>': { size: 8, align: 8 },
  'vec2<f32>': { size: 8, align: 8 },
  'vec3<u32>': { size: 12, align: 16 },
  'vec3<f32>': { size: 12, align: 16 },
  'vec4<u32>': { size: 16, align: 16 },
  'vec4<f32>': { size: 16, align: 16 },
};

interface Field { name: string; type: string; offset: number }

/** A struct's fields with their WGSL offsets, and its size (WGSL spec §13.4 memory layout). */
function wgslLayout(src: string, struct: string): { fields: Field[]; size: number } {
  const m = new RegExp(`struct\\s+${struct}\\s*\\{([^}]*)\\}`).exec(src);
  if (!m) throw new Error(`struct ${struct} not found`);
  const fields: Field[] = [];
  let offset = 0;
  let maxAlign = 1;
  for (const part of m[1]!.split(',')) {
    const t = part.replace(/\/\/.*$/gm, '').trim();
    if (!t) continue;
    const [name, type] = t.split(':').map((x) => x.trim()) as [string, string];
    const s = SCALARS[type];
    if (!s) throw new Error(`unhandled member type ${type}`);
    offset = Math.ceil(offset / s.align) * s.align;
    fields.push({ name, type, offset });
    offset += s.size;
    maxAlign = Math.max(maxAlign, s.align);
  }
  return { fields, size: Math.ceil(offset / maxAlign) * maxAlign };
}

function tableFields(layout: UniformLayout<string>): Field[] {
  return Object.entries(layout).map(([name, [offset, type]]) => ({ name, type, offset }));
}

const common = readFileSync(join(repoRoot(), 'shaders', 'common.wgsl'), 'utf8');

describe('shaders/common.wgsl uniforms', () => {
  it('the bundled prelude is the file on disk', () => {
    expect(COMMON_WGSL).toBe(common);
  });

  it('Step: the encoder layout is the WGSL layout', () => {
    const w = wgslLayout(common, 'Step');
    expect(tableFields(STEP_LAYOUT)).toEqual(w.fields);
    expect(STEP_BYTES).toBe(w.size);
  });

  it('SampleParams: the encoder layout is the WGSL layout', () => {
    const w = wgslLayout(common, 'SampleParams');
    expect(tableFields(SAMPLE_PARAMS_LAYOUT)).toEqual(w.fields);
    expect(SAMPLE_PARAMS_BYTES).toBe(w.size);
  });

  it('the encoders write each field at its WGSL offset, with its type', () => {
    const p = {
      temperature: 0.7,
      topK: 40,
      topP: 0.9,
      minP: 0.05,
      repetitionPenalty: 1.1,
      presencePenalty: -0.5,
      frequencyPenalty: 0.25,
      seed: 0xdeadbeef,
      nBias: 3,
      penalize: 1,
    };
    const buf = encodeSampleParams(p);
    expect(buf.byteLength).toBe(SAMPLE_PARAMS_BYTES);
    const v = new DataView(buf);
    for (const f of wgslLayout(common, 'SampleParams').fields) {
      const want = (p as Record<string, number>)[f.name] ?? 0;
      const got = f.type === 'f32' ? v.getFloat32(f.offset, true) : v.getUint32(f.offset, true);
      expect(got, f.name).toBe(f.type === 'f32' ? Math.fround(want) : want >>> 0);
    }
    const s = new DataView(encodeStep({ T: 5, pos0: 1234, headRows: 3 }, new ArrayBuffer(STEP_BYTES)));
    const sf = Object.fromEntries(wgslLayout(common, 'Step').fields.map((f) => [f.name, s.getUint32(f.offset, true)]));
    expect(sf).toEqual({ T: 5, pos0: 1234, headRows: 3, pad: 0 });
  });

  it('no shader declares its own copy of the prelude', () => {
    const dir = join(repoRoot(), 'shaders');
    for (const f of readdirSync(dir)) {
      if (!f.endsWith('.wgsl') || f === 'common.wgsl') continue;
      const src = readFileSync(join(dir, f), 'utf8');
      expect(src, f).not.toMatch(/struct\s+(Step|SampleParams)\b/);
      expect(src, f).not.toMatch(/\b(const|fn)\s+(NONE|argmaxBetter)\b/);
    }
  });
});

describe('withPrelude', () => {
  it('puts the shader directives before the prelude and keeps the rest in order', () => {
    const code = 'enable subgroups;\ndiagnostic(off, subgroup_uniformity);\nconst MR = 1u;\nfn main() {}';
    const lines = withPrelude(code).split('\n');
    expect(lines.slice(0, 2)).toEqual(['enable subgroups;', 'diagnostic(off, subgroup_uniformity);']);
    expect(lines.slice(2, 2 + COMMON_WGSL.split('\n').length).join('\n')).toBe(COMMON_WGSL);
    expect(lines.slice(-2)).toEqual(['const MR = 1u;', 'fn main() {}']);
  });
});
