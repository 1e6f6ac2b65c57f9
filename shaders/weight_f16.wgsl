// weight_f16.wgsl — decoder of f16 weights for matmul.wgsl / embed.wgsl (written by
// quant_f16.wgsl). Needs no shader-f16: unpack2x16float widens a pair of halves to f32, exactly.
//
// Math:     w[n, k] = half k of row n
// Buffers:  codes u32[N * KW], KW = 4 · ceil(K / 8) (rows padded to 16 bytes, padding 0): bits
//             16(k % 2).. of word n * KW + k / 2 hold weight k (low half = even k); bound as vec4<u32>.
// One chunk = one vec4<u32> = 8 weights.

const CPW = 8u;
const CV = 2u;
const SCALED = false; // no scale blocks (w_bscale is 1)
const SB = 1u;
const NB = 1u;

@group(0) @binding(WB) var<storage, read> codes: array<vec4<u32>>;

alias WC = vec4<u32>;

fn w_load(i: u32) -> vec4<u32> { return codes[i]; }

fn w_quad(w: vec4<u32>, j: u32) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(w[2u * j]), unpack2x16float(w[2u * j + 1u]));
}

fn w_quad_at(i: u32, j: u32) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(codes[i][2u * j]), unpack2x16float(codes[i][2u * j + 1u]));
}

fn w_bscale(b: u32) -> f32 { return 1.0; }
