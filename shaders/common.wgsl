// common.wgsl — the prelude: kernels/runtime.ts prepends this file to every shader it compiles
// (Runtime.pipeline / pipelineAsync), so the structs shared with TypeScript are written once.
// Their TypeScript encoders are src/kernels/uniforms.ts; test/node/uniforms.test.ts computes the
// WGSL offsets of every struct below and checks the encoders write each field there.
//
// Step          uniform, binding 0 of every op: the only data written per pass (Runtime.setStep).
//               T = rows (tokens) in this pass, pos0 = position of the first, headRows = rows the
//               LM head computes (the last headRows of the pass).
// SampleParams  uniform of sample.wgsl and spec_accept.wgsl, written once per request
//               (generate/sampler.ts: Sampler.configure).
// argmaxBetter  the argmax rule every token choice reduces with: the larger value wins, the lower
//               index among equal values; NONE (no candidate yet) loses to any candidate.
// No bindings, no entry points, no workgroup memory: the prelude costs the shaders nothing.

struct Step { T: u32, pos0: u32, headRows: u32, pad: u32 }

struct SampleParams {
  temperature: f32,
  topK: u32,
  topP: f32,
  minP: f32,
  repetitionPenalty: f32,
  presencePenalty: f32,
  frequencyPenalty: f32,
  seed: u32,
  nBias: u32,
  penalize: u32,
  pad0: u32,
  pad1: u32,
}

const NONE = 0xffffffffu;

// Whether candidate (v, i) beats the current best (bv, bi).
fn argmaxBetter(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  return i != NONE && (bi == NONE || v > bv || (v == bv && i < bi));
}
