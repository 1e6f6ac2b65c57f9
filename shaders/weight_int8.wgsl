// weight_int8.wgsl — decoder of int8 weights for matmul.wgsl / embed.wgsl (written by
// quant_int8.wgsl).
//
// Math:     w[n, k] = q[n, k] · s[n, k / G]        q ∈ [-127, 127], s = absmax / 127 of the group
//           decoded as unpack4x8snorm(q) = q / 127 (one builtin per 4 weights) times s · 127 per
//           chunk: the same value up to f32 rounding (≤ 2 ulp).
// Buffers:  codes  u32[N * KW], KW = 4 · ceil(K / 16) (rows padded to 16 bytes, padding 0): byte
//                  k % 4 of word n * KW + k / 4 = q (two's complement); bound as vec4<u32>
//           scales f32[N * NG], NG = ceil(K / G); G = group size (a multiple of 16, or K per row)
// One chunk = one vec4<u32> = 16 weights of one group.

const CPW = 16u;
const CV = 4u;
override G: u32 = 64u;

@group(0) @binding(WB) var<storage, read> codes: array<vec4<u32>>;
@group(0) @binding(WB + 1u) var<storage, read> scales: array<f32>;

alias WC = vec4<u32>;

fn w_load(n: u32, c: u32) -> vec4<u32> { return codes[n * ((K + 15u) / 16u) + c]; }

fn w_quad(w: vec4<u32>, j: u32) -> vec4<f32> { return unpack4x8snorm(w[j]); }

fn w_scale(n: u32, c: u32) -> f32 {
  return scales[n * ((K + G - 1u) / G) + (c * 16u) / G] * 127.0;
}
