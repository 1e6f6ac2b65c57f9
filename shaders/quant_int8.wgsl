// quant_int8.wgsl — load-time quantizer: checkpoint rows → int8 codes + f32 scales (appended to
// quant_common.wgsl, which declares `chunk`, `src`, `load`, `div_rn`, `block_recip`, `norm_by`).
//
// Math:     per group of G consecutive weights of a row (the last group of a row may be partial):
//           absmax = max |w|,  s = absmax / 127,  q = clamp(round(w · inv), -127, 127) with
//           inv = 1 / s computed once per group (div_rn; `round` is half to even). Where
//           s ∉ [2^-100, 2^100) each q is round(w / s) instead (norm_by in quant_common.wgsl).
//           absmax = 0, or s rounding to 0 → s = 0 and q = 0; a group holding inf or NaN →
//           s = that absmax (inf / NaN) and q = 0.
// Buffers:  codes  u32[N * KW], KW = 4 · ceil(K / 16) = ceil(K / 4) rounded up to a multiple of 4
//                  (every row starts on a 16-byte boundary: the kernels load it as vec4<u32>):
//                  byte k % 4 of word n * KW + k / 4 holds q (two's complement); bytes past K are
//                  0, and so are the padding words, which no thread writes (buffers start zeroed)
//           scales f32[N * NG], NG = ceil(K / G): scales[n * NG + g] = s (written as bits)
// Dispatch: one thread per (row, group): units = NG. G is a multiple of 4 or equals K, so a
//           group owns whole words and threads never share a word.

@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> scales: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = thread_index(wid, lid);
  if (t >= chunk.rows * chunk.units) { return; }
  let r = t / chunk.units;
  let g = t % chunk.units;
  let K = chunk.K;
  let k0 = g * chunk.G;
  let k1 = min(K, k0 + chunk.G);
  let e0 = r * K;
  var amax = 0u;
  var bad = 0u;                                       // NaN / inf inputs (a corrupt checkpoint)
  for (var k = k0; k < k1; k++) {
    let a = abs_bits(e0 + k);
    amax = max(amax, a);
    bad += select(0u, 1u, a >= 0x7f800000u);
  }
  let finite = amax < 0x7f800000u;
  var sBits = amax;                                   // inf / NaN kept; 0 stays 0
  if (amax != 0u && finite) { sBits = bitcast<u32>(div_rn(bitcast<f32>(amax), 127.0)); }
  let n = chunk.row0 + r;
  note_nonfinite(n, bad);
  scales[n * chunk.NG + g] = sBits;
  let live = finite && sBits != 0u;                   // else every q is 0
  let s = bitcast<f32>(sBits);
  var inv = 0.0;
  if (live) { inv = block_recip(s); }
  for (var k = k0; k < k1; k += 4u) {
    var word = 0u;
    if (live) {
      for (var i = 0u; i < 4u; i++) {
        if (k + i < k1) {
          let q = i32(clamp(round(norm_by(load(e0 + k + i), s, inv)), -127.0, 127.0));
          word |= (u32(q) & 0xffu) << (8u * i);
        }
      }
    }
    codes[n * chunk.KW + k / 4u] = word;
  }
}
