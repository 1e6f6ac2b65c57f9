// weight_f16.wgsl — decoder of f16 weights for matmul_dequant.wgsl / embed_dequant.wgsl (written
// by quant_f16.wgsl). Needs no shader-f16: unpack2x16float converts a pair of halves to f32.
//
// Math:     w[n, k] = half k of the row, widened exactly to f32
// Buffers:  codes u32[N * KW], KW = ceil(K / 2): bits 16(k % 2).. of word n * KW + k / 2 hold
//                 weight k (low half = even k); the half past an odd K is 0

const VPW = 2u;

@group(0) @binding(WB) var<storage, read> codes: array<u32>;

fn prepare(tid: u32) {}

fn dequant_word(n: u32, w: u32) -> array<f32, 2> {
  let v = unpack2x16float(codes[n * ((K + 1u) / 2u) + w]);
  return array<f32, 2>(v.x, v.y);
}
