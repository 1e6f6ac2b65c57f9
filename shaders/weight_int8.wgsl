// weight_int8.wgsl — decoder of int8 weights for matmul_dequant.wgsl / embed_dequant.wgsl
// (written by quant_int8.wgsl).
//
// Math:     w[n, k] = q[n, k] · s[n, k / G]        q ∈ [-127, 127], s = absmax / 127 of the group
// Buffers:  codes  u32[N * KW], KW = ceil(K / 4): byte k % 4 of word n * KW + k / 4 = q (two's
//                  complement); padding bytes are 0
//           scales f32[N * NG], NG = ceil(K / G); G = group size (a multiple of 4, or K per row)
// One code word = 4 weights of one group (groups start on word boundaries).

const VPW = 4u;
override G: u32 = 64u;

@group(0) @binding(WB) var<storage, read> codes: array<u32>;
@group(0) @binding(WB + 1u) var<storage, read> scales: array<f32>;

fn prepare(tid: u32) {}

fn dequant_word(n: u32, w: u32) -> array<f32, 4> {
  let c = codes[n * ((K + 3u) / 4u) + w];
  let s = scales[n * ((K + G - 1u) / G) + (w * 4u) / G];
  let q = vec4<i32>(bitcast<i32>(c << 24u), bitcast<i32>(c << 16u), bitcast<i32>(c << 8u), bitcast<i32>(c)) >> vec4<u32>(24u);
  let v = vec4<f32>(q) * s;
  return array<f32, 4>(v.x, v.y, v.z, v.w);
}
