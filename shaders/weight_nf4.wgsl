// weight_nf4.wgsl — decoder of NF4 codes for matmul_dequant.wgsl / embed_dequant.wgsl (written by
// quant_nf4.wgsl), shared by nf4 and nf4-dq: one of weight_nf4_absmax.wgsl (f32 absmax) or
// weight_nf4dq_absmax.wgsl (double-quantized absmax) is appended and defines block_absmax() and
// prepare_absmax().
//
// Math:     w[n, k] = NF4[code[n, k]] · absmax[n, k / 64]   (NF4: bitsandbytes' 16-value codebook)
// Buffers:  codes u32[N * KW], KW = ceil(K / 8): bits 4(k % 8)..4(k % 8)+3 of word n * KW + k / 8
//                 hold the code of weight k (low nibble first); padding codes are 7 (0.0)
//           then the absmax buffers from binding WB + 1 (see the appended file)
// One code word = 8 weights of one block of 64. The codebook sits in workgroup memory.

const VPW = 8u;

@group(0) @binding(WB) var<storage, read> codes: array<u32>;

// bitsandbytes' nf4_dequantization_lut, as exact f32 bit patterns
const NF4_BITS = array<u32, 16>(
  0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu, 0xbdba7871u, 0x00000000u,
  0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au, 0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u);
var<workgroup> nf4_lut: array<f32, 16>;

fn prepare(tid: u32) {
  if (tid < 16u) { nf4_lut[tid] = bitcast<f32>(NF4_BITS[tid]); }
  prepare_absmax(tid);
}

fn dequant_word(n: u32, w: u32) -> array<f32, 8> {
  let c = codes[n * ((K + 7u) / 8u) + w];
  let a = block_absmax(n * ((K + 63u) / 64u) + w / 8u);
  var v: array<f32, 8>;
  for (var i = 0u; i < 8u; i++) { v[i] = nf4_lut[(c >> (4u * i)) & 15u] * a; }
  return v;
}
