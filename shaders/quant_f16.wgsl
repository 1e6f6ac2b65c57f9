// quant_f16.wgsl — load-time conversion: checkpoint rows (f32 / f16 / bf16) → IEEE half pairs
// (appended to quant_common.wgsl). Runs without the shader-f16 feature: integer arithmetic only.
//
// Math:     h = f32 → binary16, round to nearest even; f16 subnormals are rounded exactly;
//           |w| ≥ 65520 (65504 + half an ulp) → ±inf; ±inf → ±inf; NaN → 0x7e00 (sign kept).
//           F16 input is copied bit for bit. (WGSL's pack2x16float may round either way, so it is
//           not used.)
// Buffers:  codes u32[N * KW], KW = 4 · ceil(K / 8) = ceil(K / 2) rounded up to a multiple of 4
//                 (every row starts on a 16-byte boundary: the kernels load it as vec4<u32>):
//                 bits 16(k % 2).. of word n * KW + k / 2 hold weight k (low half = even k, as
//                 unpack2x16float's .x); the half past an odd K is 0, and so are the padding words
//                 past ceil(K / 2), which no thread writes (buffers start zeroed)
// Dispatch: one thread per word that holds weights: units = ceil(K / 2).

@group(0) @binding(2) var<storage, read_write> codes: array<u32>;

fn f32_bits_to_f16_bits(u: u32) -> u32 {
  let sign = (u >> 16u) & 0x8000u;
  let a = u & 0x7fffffffu;
  if (a > 0x7f800000u) { return sign | 0x7e00u; }           // NaN
  if (a >= 0x477ff000u) { return sign | 0x7c00u; }          // ≥ 65520 (and inf) → inf
  let e = i32(a >> 23u) - 127;
  if (e < -25) { return sign; }                             // < half the smallest subnormal (f32 subnormals too)
  var m = (a & 0x7fffffu) | 0x800000u;                      // 24-bit significand (a is normal here)
  // keep 11 bits (normal) or fewer (subnormal): drop `shift` bits with round to nearest even
  var shift = 13u;
  if (e < -14) { shift = u32(13 + (-14 - e)); }
  let rest = m & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  m >>= shift;
  if (rest > half || (rest == half && (m & 1u) == 1u)) { m += 1u; }
  if (e < -14) { return sign | m; }                         // subnormal (a carry gives 0x400, the smallest normal)
  return sign | ((u32(e + 14) << 10u) + m);                 // m has the implicit bit: a carry bumps the exponent
}

fn half_bits(e: u32) -> u32 {
  if (DTYPE == 1u) { return (src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu; }
  return f32_bits_to_f16_bits(load_bits(e));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = thread_index(wid, lid);
  if (t >= chunk.rows * chunk.units) { return; }
  let r = t / chunk.units;
  let w = t % chunk.units;
  let k = w * 2u;
  let e0 = r * chunk.K;
  var word = half_bits(e0 + k);
  var bad = select(0u, 1u, nonfinite_bits(load_bits(e0 + k)));  // NaN / inf inputs (a corrupt checkpoint)
  if (k + 1u < chunk.K) {
    word |= half_bits(e0 + k + 1u) << 16u;
    bad += select(0u, 1u, nonfinite_bits(load_bits(e0 + k + 1u)));
  }
  note_nonfinite(chunk.row0 + r, bad);
  codes[(chunk.row0 + r) * chunk.KW + w] = word;
}
