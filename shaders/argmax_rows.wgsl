// argmax_rows.wgsl — greedy token choice for several logits rows at once (speculative verification:
// the target's pick after each of the k + 1 positions it checked in one pass).
//
// Math:     out[r] = argmax_v logits[(step.headRows − rows + r) · V + v]   r < rows
//           (lowest index on ties, NaN ignored: argmaxBetter of common.wgsl, as sample.wgsl's greedy choice)
// Buffers:  step uniform Step { …, headRows, … }
//           logits f32[headRows · V]  row-major
//           out    u32[rows]
// Dispatch: (rows, 1, 1), workgroup 256 per row: strided scan, then a tree reduction on (value, index).

override V: u32;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  let r = wid.x;
  let base = (step.headRows - nwg.x + r) * V;
  var best = -3.4e38;
  var besti = NONE;
  for (var v = tid; v < V; v += 256u) {
    let l = logits[base + v];
    if (l > best) { best = l; besti = v; }
  }
  bv[tid] = best;
  bi[tid] = besti;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (tid < s) {
      let ov = bv[tid + s];
      let oi = bi[tid + s];
      if (argmaxBetter(ov, oi, bv[tid], bi[tid])) { bv[tid] = ov; bi[tid] = oi; }
    }
    workgroupBarrier();
  }
  if (tid == 0u) {
    var res = bi[0];
    if (res == NONE) { res = 0u; }
    out[r] = res;
  }
}
