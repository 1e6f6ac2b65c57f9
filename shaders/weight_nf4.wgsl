// weight_nf4.wgsl — decoder of NF4 codes for matmul.wgsl / embed.wgsl (written by quant_nf4.wgsl),
// shared by nf4 and nf4-dq: one of weight_nf4_absmax.wgsl (f32 absmax) or weight_nf4dq_absmax.wgsl
// (double-quantized absmax) is appended and defines block_absmax(i).
//
// Math:     w[n, k] = NF4[code[n, k]] · absmax[n, k / 64]   (NF4: bitsandbytes' 16-value codebook)
// Buffers:  codes u32[N * KW], KW = 4 · ceil(K / 32) (rows padded to 16 bytes): bits 4(k % 8)..
//                 4(k % 8)+3 of word n * KW + k / 8 hold the code of weight k (low nibble first);
//                 codes past K are 7 (0.0); bound as vec4<u32>
//           then the absmax buffers from binding WB + 1 (see the appended file)
// One chunk = one vec4<u32> = 32 weights, half a block. The codebook is a private array (no
// workgroup table, so no barrier).

const CPW = 32u;
const CV = 8u;
const SCALED = true;
const SB = 2u;                           // chunks per 64-weight block
override NB: u32 = (K + 63u) / 64u;      // blocks per row

@group(0) @binding(WB) var<storage, read> codes: array<vec4<u32>>;

// bitsandbytes' nf4_dequantization_lut, as exact f32 bit patterns. A private variable, not a
// `const`: a const array indexed at run time is copied into a local array at every use by some
// compilers (4× slower decode on SwiftShader), a private one is initialised once per invocation.
var<private> NF4_BITS: array<u32, 16> = array<u32, 16>(
  0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu, 0xbdba7871u, 0x00000000u,
  0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au, 0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u);

alias WC = vec4<u32>;

fn w_load(i: u32) -> vec4<u32> { return codes[i]; }

fn nf4_quad(v: u32, s: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(vec4<u32>(NF4_BITS[(v >> s) & 15u], NF4_BITS[(v >> (s + 4u)) & 15u],
                                      NF4_BITS[(v >> (s + 8u)) & 15u], NF4_BITS[(v >> (s + 12u)) & 15u]));
}
fn w_quad(w: vec4<u32>, j: u32) -> vec4<f32> { return nf4_quad(w[j / 2u], (j % 2u) * 16u); }
// loads word j / 2 for each of its two quads (the skeleton's one-row pass goes quad by quad)
fn w_quad_at(i: u32, j: u32) -> vec4<f32> { return nf4_quad(codes[i][j / 2u], (j % 2u) * 16u); }

fn w_bscale(b: u32) -> f32 { return block_absmax(b); }
