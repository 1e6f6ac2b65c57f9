import commonSrc from '../../shaders/common.wgsl?raw';

/**
 * The TypeScript side of the uniform structs in shaders/common.wgsl (the prelude Runtime prepends
 * to every shader): each encoder writes its fields at the byte offsets of a layout table, and
 * test/node/uniforms.test.ts checks every table against the offsets WGSL gives the struct.
 */
export const COMMON_WGSL: string = commonSrc;

export type FieldType = 'u32' | 'f32';
/** A uniform struct's fields: name → [byte offset, type]. */
export type UniformLayout<K extends string> = { readonly [F in K]: readonly [number, FieldType] };

export interface StepFields {
  T: number;
  pos0: number;
  headRows: number;
}

export const STEP_LAYOUT: UniformLayout<'T' | 'pos0' | 'headRows' | 'pad'> = {
  T: [0, 'u32'],
  pos0: [4, 'u32'],
  headRows: [8, 'u32'],
  pad: [12, 'u32'],
};
export const STEP_BYTES = 16;

export interface SampleParamFields {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  seed: number;
  nBias: number;
  penalize: number;
}

export const SAMPLE_PARAMS_LAYOUT: UniformLayout<keyof SampleParamFields | 'pad0' | 'pad1'> = {
  temperature: [0, 'f32'],
  topK: [4, 'u32'],
  topP: [8, 'f32'],
  minP: [12, 'f32'],
  repetitionPenalty: [16, 'f32'],
  presencePenalty: [20, 'f32'],
  frequencyPenalty: [24, 'f32'],
  seed: [28, 'u32'],
  nBias: [32, 'u32'],
  penalize: [36, 'u32'],
  pad0: [40, 'u32'],
  pad1: [44, 'u32'],
};
export const SAMPLE_PARAMS_BYTES = 48;

function encode<K extends string>(layout: UniformLayout<K>, values: Partial<Record<K, number>>, view: DataView): void {
  for (const name of Object.keys(layout) as K[]) {
    const [offset, type] = layout[name];
    const v = values[name] ?? 0;
    if (type === 'f32') view.setFloat32(offset, v, true);
    else view.setUint32(offset, v >>> 0, true);
  }
}

/** Writes a Step into `out` (16 bytes; reused by Runtime.setStep every pass). */
export function encodeStep(s: StepFields, out: ArrayBuffer): ArrayBuffer {
  encode(STEP_LAYOUT, s, new DataView(out, 0, STEP_BYTES));
  return out;
}

/** A request's sampling settings as the SampleParams uniform (48 bytes). */
export function encodeSampleParams(p: SampleParamFields): ArrayBuffer {
  const buf = new ArrayBuffer(SAMPLE_PARAMS_BYTES);
  encode(SAMPLE_PARAMS_LAYOUT, p, new DataView(buf));
  return buf;
}
