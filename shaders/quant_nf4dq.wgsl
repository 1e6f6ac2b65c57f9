// quant_nf4dq.wgsl — second pass of nf4-dq (appended to quant_common.wgsl), run once at finish()
// over the f32 absmax of every block of the weight (written by quant_nf4.wgsl as chunks arrived):
// bitsandbytes' double quantization (compress_statistics) of the absmax values.
//
// Math:     offset = mean(absmax) over all n blocks of the weight;
//           per group j of 256 consecutive absmax (flat index i = row * NG + block; groups
//           straddle rows, like bnb's flat absmax vector; the last group may be partial):
//             absmax2_j = max_i |absmax_i - offset|
//             q_i = bnb's dQuantize<0>(dmap, (absmax_i - offset) · inv_j)  (the nearest of the
//                   256 values of create_dynamic_map(signed=True)), inv_j = 1 / absmax2_j once per
//                   group (div_rn; bnb's blockwise quantizer multiplies by 1 / absmax too; outside
//                   [2^-100, 2^100) each value is divided: norm_by); absmax2_j = 0, inf or NaN →
//                   q_i = 127 = 0.0
//           dequantized: absmax_i ≈ dmap[q_i] * absmax2_j + offset.
//           The mean has a fixed order: 256 threads sum strided values (thread t: t, t+256, …)
//           in f32, then a tree (s = 128 … 1); mean = sum / n, rounded once.
// Buffers:  chunk  uniform; only `rows` = n (absmax count) and `units` = groups are read
//           absmax f32[n]              temporary, freed after this pass
//           qabs   u32[ceil(n / 4)]    byte i % 4 of word i / 4 holds q_i
//           stats  f32[1 + groups]     stats[0] = offset, stats[1 + j] = absmax2_j
//           dmap   f32[256]            the dynamic map, sorted ascending (dmap[127] = 0), uploaded
//                                      by the builder (exact f32 values) and freed after this pass
// Dispatch: `mean`: one workgroup (1, 1, 1) of 256 threads; then `quantize`: one thread per group
//           of 256 absmax, workgroup 64, grid (ceil(groups / 64), 1, 1).

@group(0) @binding(2) var<storage, read> absmax: array<f32>;
@group(0) @binding(3) var<storage, read_write> qabs: array<u32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read> dmap: array<f32, 256>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn mean(@builtin(local_invocation_index) t: u32) {
  let n = chunk.rows;
  var s = 0.0;
  for (var i = t; i < n; i += 256u) { s += absmax[i]; }
  red[t] = s;
  workgroupBarrier();
  for (var h = 128u; h > 0u; h >>= 1u) {
    if (t < h) { red[t] += red[t + h]; }
    workgroupBarrier();
  }
  if (t == 0u) { stats[0] = div_rn(red[0], f32(n)); }
}

/** bitsandbytes' dQuantize<0>: binary search from pivot 127, then the nearer neighbour by midpoint. */
fn dyn_code(x: f32) -> u32 {
  var pivot = 127u;
  var upper_pivot = 255u;
  var lower_pivot = 0u;
  var lower = -1.0;
  var upper = 1.0;
  var val = dmap[pivot];
  for (var i = 64u; i > 0u; i >>= 1u) {
    if (x > val) { lower_pivot = pivot; lower = val; pivot += i; }
    else { upper_pivot = pivot; upper = val; pivot -= i; }
    val = dmap[pivot];
  }
  if (upper_pivot == 255u) { upper = dmap[255]; }
  if (lower_pivot == 0u) { lower = dmap[0]; }
  if (x > val) { return select(pivot, upper_pivot, x > (upper + val) * 0.5); }
  return select(pivot, lower_pivot, x < (lower + val) * 0.5);
}

@compute @workgroup_size(64)
fn quantize(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= chunk.units) { return; }
  let n = chunk.rows;
  let offset = stats[0];
  let i0 = j * 256u;
  let i1 = min(n, i0 + 256u);
  var m = 0u;
  for (var i = i0; i < i1; i++) { m = max(m, bitcast<u32>(absmax[i] - offset) & 0x7fffffffu); }
  let amax2 = bitcast<f32>(m);
  stats[1u + j] = amax2;
  let live = m != 0u && m < 0x7f800000u;
  var inv = 0.0;
  if (live) { inv = block_recip(amax2); }
  // 256 values = 64 whole words (a group starts on a word boundary)
  for (var w = i0 / 4u; w * 4u < i1; w++) {
    var word = 0u;
    for (var b = 0u; b < 4u; b++) {
      let i = w * 4u + b;
      if (i < i1) {
        var q = 127u;
        if (live) { q = dyn_code(norm_by(absmax[i] - offset, amax2, inv)); }
        word |= q << (8u * b);
      }
    }
    qabs[w] = word;
  }
}
