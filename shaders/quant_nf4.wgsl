// quant_nf4.wgsl — load-time quantizer: checkpoint rows → NF4 codes + f32 absmax per block of 64
// (appended to quant_common.wgsl). The first pass of both nf4 and nf4-dq: nf4 writes `absmax`
// into the weight's scale buffer, nf4-dq into a temporary buffer that quant_nf4dq.wgsl reduces.
//
// Math:     per block of 64 consecutive weights of a row (the last block of a row may be partial):
//           absmax = max |w|,  code = bnb's dQuantizeNF4(w / absmax)  (the nearest of the 16 NF4
//           values, by bitsandbytes' decision tree on the f32 midpoints; absmax = 0 → code 7 = 0.0).
//           bitsandbytes normalises with w * (1 / absmax); we divide once (correctly rounded).
// Buffers:  codes  u32[N * KW], KW = ceil(K / 8): bits 4(k % 8)..4(k % 8)+3 of word n * KW + k / 8
//                  hold the code of weight k (low nibble first; bnb puts the first weight of a byte
//                  in its high nibble); codes past K are 7 (0.0)
//           absmax f32[N * NG], NG = ceil(K / 64)
// Dispatch: one thread per (row, block): units = NG. A block owns 8 whole words.

@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> absmax: array<f32>;

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
  var amaxBits = 0u;
  for (var k = k0; k < k1; k++) { amaxBits = max(amaxBits, abs_bits(e0 + k)); }
  let amax = bitcast<f32>(amaxBits);
  let n = chunk.row0 + r;
  absmax[n * chunk.NG + b] = amax;
  for (var w = k0 / 8u; w < min(chunk.KW, k0 / 8u + 8u); w++) {
    var word = 0u;
    for (var i = 0u; i < 8u; i++) {
      let k = w * 8u + i;
      var c = 7u;
      if (k < k1 && amaxBits != 0u) { c = nf4_code(div_rn(load(e0 + k), amax)); }
      word |= c << (4u * i);
    }
    codes[n * chunk.KW + w] = word;
  }
}
