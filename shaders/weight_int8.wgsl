// weight_int8.wgsl — decoder of int8 weights for matmul.wgsl / embed.wgsl (written by
// quant_int8.wgsl).
//
// Math:     w[n, k] = q[n, k] · s[n, k / G]        q ∈ [-127, 127], s = absmax / 127 of the group
//           decoded as q · 2^24 (the byte moved to the top of an i32 with an integer multiply and a
//           mask, then converted: exact) times s · 2^-24 per scale block. No shift, no clamp:
//           software adapters (SwiftShader's JIT) emulate vector shifts lane by lane.
// Buffers:  codes  u32[N * KW], KW = 4 · ceil(K / 16) (rows padded to 16 bytes, padding 0): byte
//                  k % 4 of word n * KW + k / 4 = q (two's complement); bound as vec4<u32>
//           scales f32[N * NB], NB = ceil(K / G); G = group size (a multiple of 16, or K per row)
// One chunk = one vec4<u32> = 16 weights of one group; SB = ceil(G / 16) chunks per scale block.

const CPW = 16u;
const CV = 4u;
const SCALED = true;
override G: u32 = 64u;
override SB: u32 = (G + 15u) / 16u;
override NB: u32 = (K + G - 1u) / G;

@group(0) @binding(WB) var<storage, read> codes: array<vec4<u32>>;
@group(0) @binding(WB + 1u) var<storage, read> scales: array<f32>;

alias WC = vec4<u32>;

fn w_load(i: u32) -> vec4<u32> { return codes[i]; }

fn i8_quad(v: u32) -> vec4<f32> {
  return vec4<f32>(vec4<i32>(bitcast<i32>(v * 16777216u), bitcast<i32>((v * 65536u) & 0xff000000u),
                             bitcast<i32>((v * 256u) & 0xff000000u), bitcast<i32>(v & 0xff000000u)));
}
fn w_quad(w: vec4<u32>, j: u32) -> vec4<f32> { return i8_quad(w[j]); }
fn w_quad_at(i: u32, j: u32) -> vec4<f32> { return i8_quad(codes[i][j]); }

fn w_bscale(b: u32) -> f32 { return scales[b] * (1.0 / 16777216.0); }
