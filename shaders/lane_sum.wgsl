// lane_sum.wgsl — the three ways matmul.wgsl adds the partial sums of a lane group's LANES lanes
// (src/kernels/linear.ts prepends exactly one of the sections below, chosen per adapter). Each is
// called by every invocation of the workgroup, after the hot loop, in uniform control flow.
//
//   none:      LANES = 1, a lane group is one invocation: nothing to add.
//   subgroup:  LANES ≤ the adapter's minimum subgroup size (lane groups never straddle subgroups):
//              a butterfly of subgroupShuffleXor; every lane ends with the total.
//   workgroup: no subgroups: a tree in workgroup memory (log2(LANES) barriers, after the loop).
// Buffers:   workgroup: red vec4<f32>[64] (one slot per invocation).

//#none
fn lane_sum(v: vec4<f32>, tid: u32) -> vec4<f32> { return v; }

//#subgroup
fn lane_sum(v: vec4<f32>, tid: u32) -> vec4<f32> {
  var s = v;
  for (var o = LANES / 2u; o > 0u; o >>= 1u) { s += subgroupShuffleXor(s, o); }
  return s;
}

//#workgroup
var<workgroup> red: array<vec4<f32>, 64>;
fn lane_sum(v: vec4<f32>, tid: u32) -> vec4<f32> {
  let lane = tid % LANES;
  red[tid] = v;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { red[tid] += red[tid + s]; }
    workgroupBarrier();
  }
  let total = red[tid - lane];
  workgroupBarrier();
  return total;
}
