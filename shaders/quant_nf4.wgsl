// quant_nf4.wgsl — load-time quantizer: checkpoint rows → NF4 codes + f32 absmax per block of 64
// (appended to quant_common.wgsl). The first pass of both nf4 and nf4-dq: nf4 writes `absmax`
// into the weight's scale buffer, nf4-dq into a temporary buffer that quant_nf4dq.wgsl reduces.
//
// Math:     per block of 64 consecutive weights of a row (the last block of a row may be partial):
//           absmax = max |w|,  code = bnb's dQuantizeNF4(w · inv), inv = 1 / absmax computed once
//           per block (div_rn), as bitsandbytes normalises (w * (1 / absmax)); the nearest of the
//           16 NF4 values, by bnb's decision tree on the f32 midpoints. Where absmax ∉
//           [2^-100, 2^100) each weight is divided instead (norm_by in quant_common.wgsl).
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
//           of a row owns the words up to KW (at most 8: KW ≤ 8 · NG). The thread decodes its
//           block's input once, into a private array, for both passes (absmax, then codes).

@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> absmax: array<u32>;

// bitsandbytes' thresholds (f32 of the literals in dQuantizeNF4), as exact bit patterns
fn nf4_code(x: f32) -> u32 {
  if (x > bitcast<f32>(0x3d22faffu)) {
    if (x > bitcast<f32>(0x3ec753f9u)) {
      if (x > bitcast<f32>(0x3f248dafu)) { return select(14u, 15u, x > bitcast<f32>(0x3f5c89dau)); }
      return select(12u, 13u, x > bitcast<f32>(0x3f006d04u));
    }
    if (x > bitcast<f32>(0x3e5067e0u)) { return select(10u, 11u, x > bitcast<f32>(0x3e9582d4u)); }
    return select(8u, 9u, x > bitcast<f32>(0x3df64862u));
  }
  if (x > bitcast<f32>(0xbeadea76u)) {
    if (x > bitcast<f32>(0xbe0d38bcu)) { return select(6u, 7u, x > bitcast<f32>(0xbd3a7871u)); }
    return select(4u, 5u, x > bitcast<f32>(0xbe703cecu));
  }
  if (x > bitcast<f32>(0xbf1c5270u)) { return select(2u, 3u, x > bitcast<f32>(0xbeeb8480u)); }
  return select(0u, 1u, x > bitcast<f32>(0xbf591cd8u));
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
  var vals: array<u32, 64>;                              // the block's f32 bits, decoded once
  var amaxBits = 0u;
  var bad = 0u;                                          // NaN / inf inputs (a corrupt checkpoint)
  for (var k = k0; k < k1; k++) {
    let v = load_bits(e0 + k);
    vals[k - k0] = v;
    amaxBits = max(amaxBits, v & 0x7fffffffu);
    bad += select(0u, 1u, nonfinite_bits(v));
  }
  let n = chunk.row0 + r;
  note_nonfinite(n, bad);
  absmax[n * chunk.NG + b] = amaxBits;
  let live = amaxBits != 0u && amaxBits < 0x7f800000u;   // else every code is 7
  let amax = bitcast<f32>(amaxBits);
  var inv = 0.0;
  if (live) { inv = block_recip(amax); }
  // words of this block; the last block of the row also fills the padding words up to KW
  let w1 = select(k0 / 8u + 8u, chunk.KW, b + 1u == chunk.NG);
  for (var w = k0 / 8u; w < w1; w++) {
    var word = 0x77777777u;
    if (live) {
      for (var i = 0u; i < 8u; i++) {
        let k = w * 8u + i;
        if (k < k1) {
          let c = nf4_code(norm_by(bitcast<f32>(vals[k - k0]), amax, inv));
          word = (word & ~(15u << (4u * i))) | (c << (4u * i));
        }
      }
    }
    codes[n * chunk.KW + w] = word;
  }
}
