// rng.wgsl — the counter-based random numbers of sampling (a snippet: kernels/sample.ts prepends it
// to sample.wgsl and spec_accept.wgsl; src/generate/rng.ts is the same function in TypeScript).
//
// Math:     bits(v, pos, seed, stream) = pcg4d(pcg4d((v, pos, seed, stream))).x   (u32 arithmetic mod 2^32)
//           pcg4d: Jarzynski & Olano, "Hash Functions for GPU Rendering" (JCGT 2020): an LCG step on
//           each lane, then lanes mixed by products, xorshift 16, mixed again. Applied twice.
//           U = (⌊bits / 2^8⌋ + 0.5) / 2^24 ∈ (0, 1)   (24 bits, never 0 or 1)
//           Gumbel noise g = −ln(−ln U)
//           v = token id (or 0), pos = sequence position of the token being chosen, stream: 0 draw,
//           1 speculative acceptance, 2 speculative residual draw. No state: the same inputs give the
//           same numbers on every device and in every runtime, and a rolled-back position reuses them.
// Buffers:  none.  Dispatch: none (functions only).

fn pcg4d(a: vec4<u32>) -> vec4<u32> {
  var v = a * 1664525u + vec4<u32>(1013904223u);
  v.x += v.y * v.w;
  v.y += v.z * v.x;
  v.z += v.x * v.y;
  v.w += v.y * v.z;
  v = v ^ (v >> vec4<u32>(16u));
  v.x += v.y * v.w;
  v.y += v.z * v.x;
  v.z += v.x * v.y;
  v.w += v.y * v.z;
  return v;
}

fn rngBits(v: u32, pos: u32, seed: u32, stream: u32) -> u32 {
  return pcg4d(pcg4d(vec4<u32>(v, pos, seed, stream))).x;
}

fn rngUniform(v: u32, pos: u32, seed: u32, stream: u32) -> f32 {
  return (f32(rngBits(v, pos, seed, stream) >> 8u) + 0.5) * (1.0 / 16777216.0);
}

fn rngGumbel(v: u32, pos: u32, seed: u32, stream: u32) -> f32 {
  return -log(-log(rngUniform(v, pos, seed, stream)));
}
