// quant_int8.wgsl — load-time quantizer: checkpoint rows → int8 codes + f32 scales (appended to
// quant_common.wgsl, which declares `chunk`, `src`, `load`, `div_rn`).
//
// Math:     per group of G consecutive weights of a row (the last group of a row may be partial):
//           absmax = max |w|,  s = absmax / 127,  q = clamp(round(w / s), -127, 127)
//           (`round` is half to even; absmax = 0 → s = 0 and q = 0).
// Buffers:  codes  u32[N * KW], KW = ceil(K / 4): byte k % 4 of word n * KW + k / 4 holds q
//                  (two's complement); bytes past K are 0
//           scales f32[N * NG], NG = ceil(K / G): scales[n * NG + g] = s
// Dispatch: one thread per (row, group): units = NG. G is a multiple of 4 or equals K, so a
//           group owns whole words and threads never share a word.

@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> scales: array<f32>;

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
  for (var k = k0; k < k1; k++) { amax = max(amax, abs_bits(e0 + k)); }
  var s = 0.0;
  if (amax != 0u) { s = div_rn(bitcast<f32>(amax), 127.0); }
  let n = chunk.row0 + r;
  scales[n * chunk.NG + g] = s;
  for (var k = k0; k < k1; k += 4u) {
    var word = 0u;
    for (var i = 0u; i < 4u; i++) {
      if (k + i < k1 && bitcast<u32>(s) != 0u) {
        let q = i32(clamp(round(div_rn(load(e0 + k + i), s)), -127.0, 127.0));
        word |= (u32(q) & 0xffu) << (8u * i);
      }
    }
    codes[n * chunk.KW + k / 4u] = word;
  }
}
