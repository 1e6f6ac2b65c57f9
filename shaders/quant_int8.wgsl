// quant_int8.wgsl — load-time quantizer: checkpoint rows → int8 codes + f32 scales (appended to
// quant_common.wgsl, which declares `chunk`, `src`, `scan_block`,
// `quad_bits`, `quad_live`, `div_quad`, `div_rn`, `recip_ok`).
//
// Math:     per group of G consecutive weights of a row (the last group of a row may be partial):
//           absmax = max |w|,  s = absmax / 127,  q = clamp(round(w · inv), -127, 127) with
//           inv = 1 / s computed once per group (div_rn; `round` is half to even). Where
//           s ∉ [2^-100, 2^100) each q is round(w / s) instead (div_rn, as recip_ok in quant_common.wgsl says).
//           absmax = 0, or s rounding to 0 → s = 0 and q = 0; a group holding inf or NaN →
//           s = that absmax (inf / NaN) and q = 0.
// Buffers:  codes  u32[N * KW], KW = 4 · ceil(K / 16) = ceil(K / 4) rounded up to a multiple of 4
//                  (every row starts on a 16-byte boundary: the kernels load it as vec4<u32>):
//                  byte k % 4 of word n * KW + k / 4 holds q (two's complement); bytes past K are
//                  0, and so are the padding words, which no thread writes (buffers start zeroed)
//           scales f32[N * NG], NG = ceil(K / G): scales[n * NG + g] = s (written as bits)
// Dispatch: one thread per (row, group): units = NG. G is a multiple of 4 or equals K, so a
//           group owns whole words and threads never share a word. The thread reads its group
//           twice, 4 weights (one code word) at a time: absmax, then the codes, in one of three
//           loops chosen once per group (all 0 / w · inv / divided lane by lane); the first two,
//           the ones real checkpoints meet, have no per-weight branch.

@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> scales: array<u32>;

/** Four codes (each in -127..127; lanes not live → 0) as one word, byte i = lane i (two's complement). */
fn pack_codes(x: vec4<f32>, live: vec4<bool>) -> u32 {
  let q = bitcast<vec4<u32>>(vec4<i32>(clamp(round(x), vec4(-127.0), vec4(127.0)))) & vec4(0xffu);
  let b = select(vec4(0u), q, live);
  return b.x + b.y * 256u + b.z * 65536u + b.w * 16777216u;
}

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
  let scan = scan_block(e0, k0, k1);                  // (absmax bits, NaN / inf inputs)
  let amax = scan.x;
  let bad = scan.y;
  let finite = amax < 0x7f800000u;
  var sBits = amax;                                   // inf / NaN kept; 0 stays 0
  if (amax != 0u && finite) { sBits = bitcast<u32>(div_rn(bitcast<f32>(amax), 127.0)); }
  let n = chunk.row0 + r;
  note_nonfinite(n, bad);
  scales[n * chunk.NG + g] = sBits;
  let out = n * chunk.KW;
  let s = bitcast<f32>(sBits);
  if (!finite || sBits == 0u) {                       // every q is 0
    for (var k = k0; k < k1; k += 4u) { codes[out + k / 4u] = 0u; }
  } else if (recip_ok(sBits)) {                       // w / s as w * (1 / s), one division per group
    let inv = div_rn(1.0, s);
    for (var k = k0; k < k1; k += 4u) {
      codes[out + k / 4u] = pack_codes(bitcast<vec4<f32>>(quad_bits(e0 + k)) * inv, quad_live(k, k1));
    }
  } else {                                            // s outside [2^-100, 2^100): divide each weight
    for (var k = k0; k < k1; k += 4u) {
      let live = quad_live(k, k1);
      codes[out + k / 4u] = pack_codes(div_quad(bitcast<vec4<f32>>(quad_bits(e0 + k)), s, live), live);
    }
  }
}
