// quant_nf4.wgsl — load-time quantizer: checkpoint rows → NF4 codes + f32 absmax per block of 64
// (appended to quant_common.wgsl). The first pass of both nf4 and nf4-dq: nf4 writes `absmax`
// into the weight's scale buffer, nf4-dq into a temporary buffer that quant_nf4dq.wgsl reduces.
//
// Math:     per block of 64 consecutive weights of a row (the last block of a row may be partial):
//           absmax = max |w|,  code = bnb's dQuantizeNF4(w · inv), inv = 1 / absmax computed once
//           per block (div_rn), as bitsandbytes normalises (w * (1 / absmax)); the nearest of the
//           16 NF4 values, by bnb's decision tree on the f32 midpoints. Where absmax ∉
//           [2^-100, 2^100) each weight is divided instead (div_rn, as recip_ok in quant_common.wgsl says).
//           absmax = 0 → every code 7 (0.0); a block holding inf or NaN → every code 7 and its
//           absmax is that inf / NaN.
// Buffers:  codes  u32[N * KW], KW = 4 · ceil(K / 32) = ceil(K / 8) rounded up to a multiple of 4
//                  (every row starts on a 16-byte boundary: the kernels load it as vec4<u32>):
//                  bits 4(k % 8)..4(k % 8)+3 of word n * KW + k / 8 hold the code of weight k (low
//                  nibble first; bnb puts the first weight of a byte in its high nibble); codes
//                  past K are 7 (0.0): the last block of a row also writes the padding words
//                  (0x77777777), since code 0 is -1.0 and buffers start zeroed
//           absmax f32[N * NG], NG = ceil(K / 64) (written as bits)
// Dispatch: one thread per (row, block): units = NG. A block owns 8 whole words; the last block
//           of a row owns the words up to KW (at most 8: KW ≤ 8 · NG). The thread reads its
//           block twice, 4 weights at a time (quad_bits): absmax, then the codes, in one of three
//           loops chosen once per block (all 7 / w · inv / divided lane by lane, `div_quad`). No
//           private array (a 64-entry one spills to memory on some compilers), and the first two
//           loops have no per-weight branch: nf4_code4 is the decision tree as a ladder of selects
//           over 4 lanes.

@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> absmax: array<u32>;

// bitsandbytes' thresholds (f32 of the literals in dQuantizeNF4), as exact bit patterns: code c
// (1..15) is chosen over c - 1 when x > T<c>; they increase with c.
const T1 = 0xbf591cd8u; const T2 = 0xbf1c5270u; const T3 = 0xbeeb8480u; const T4 = 0xbeadea76u;
const T5 = 0xbe703cecu; const T6 = 0xbe0d38bcu; const T7 = 0xbd3a7871u; const T8 = 0x3d22faffu;
const T9 = 0x3df64862u; const T10 = 0x3e5067e0u; const T11 = 0x3e9582d4u; const T12 = 0x3ec753f9u;
const T13 = 0x3f006d04u; const T14 = 0x3f248dafu; const T15 = 0x3f5c89dau;

fn t4(bits: u32) -> vec4<f32> { return vec4(bitcast<f32>(bits)); }

/**
 * bnb's dQuantizeNF4 for 4 values: its decision tree is a binary search over T1..T15, taken here
 * one level per select (bit 3 of the code, then 2, 1, 0), the same comparisons in the same order.
 */
fn nf4_code4(x: vec4<f32>) -> vec4<u32> {
  let b3 = x > t4(T8);
  let b2 = x > select(t4(T4), t4(T12), b3);
  let b1 = x > select(select(t4(T2), t4(T6), b2), select(t4(T10), t4(T14), b2), b3);
  let lo = select(select(t4(T1), t4(T3), b1), select(t4(T5), t4(T7), b1), b2);
  let hi = select(select(t4(T9), t4(T11), b1), select(t4(T13), t4(T15), b1), b2);
  let b0 = x > select(lo, hi, b3);
  return select(vec4(0u), vec4(8u), b3) + select(vec4(0u), vec4(4u), b2) + select(vec4(0u), vec4(2u), b1) + select(vec4(0u), vec4(1u), b0);
}

/** Eight codes (lanes not live → 7, 0.0) as one word, nibble i = weight i. */
fn pack_nibbles(lo: vec4<u32>, hi: vec4<u32>, live_lo: vec4<bool>, live_hi: vec4<bool>) -> u32 {
  let a = select(vec4(7u), lo, live_lo);
  let b = select(vec4(7u), hi, live_hi);
  return a.x + a.y * 16u + a.z * 256u + a.w * 4096u + (b.x + b.y * 16u + b.z * 256u + b.w * 4096u) * 65536u;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = thread_index(wid, lid);
  if (t >= chunk.rows * chunk.units) { return; }
  let r = t / chunk.units;
  let b = t % chunk.units;
  let K = chunk.K;
  let k0 = b * 64u;
  let k1 = min(K, k0 + 64u);
  let e0 = r * K;
  let scan = scan_block(e0, k0, k1);                  // (absmax bits, NaN / inf inputs)
  let amaxBits = scan.x;
  let bad = scan.y;
  let n = chunk.row0 + r;
  note_nonfinite(n, bad);
  absmax[n * chunk.NG + b] = amaxBits;
  let amax = bitcast<f32>(amaxBits);
  let out = n * chunk.KW;
  // words of this block; the last block of the row also fills the padding words up to KW
  let w1 = select(k0 / 8u + 8u, chunk.KW, b + 1u == chunk.NG);
  if (amaxBits == 0u || amaxBits >= 0x7f800000u) {       // every code is 7
    for (var w = k0 / 8u; w < w1; w++) { codes[out + w] = 0x77777777u; }
  } else if (recip_ok(amaxBits)) {                       // w / absmax as w * (1 / absmax)
    let inv = div_rn(1.0, amax);
    for (var w = k0 / 8u; w < w1; w++) {
      let k = w * 8u;
      let lo = nf4_code4(bitcast<vec4<f32>>(quad_bits(e0 + k)) * inv);
      let hi = nf4_code4(bitcast<vec4<f32>>(quad_bits(e0 + k + 4u)) * inv);
      codes[out + w] = pack_nibbles(lo, hi, quad_live(k, k1), quad_live(k + 4u, k1));
    }
  } else {                                               // absmax outside [2^-100, 2^100): divide
    for (var w = k0 / 8u; w < w1; w++) {
      let k = w * 8u;
      let live_lo = quad_live(k, k1);
      let live_hi = quad_live(k + 4u, k1);
      let lo = nf4_code4(div_quad(bitcast<vec4<f32>>(quad_bits(e0 + k)), amax, live_lo));
      let hi = nf4_code4(div_quad(bitcast<vec4<f32>>(quad_bits(e0 + k + 4u)), amax, live_hi));
      codes[out + w] = pack_nibbles(lo, hi, live_lo, live_hi);
    }
  }
}
