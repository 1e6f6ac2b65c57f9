// argmax.wgsl — greedy token choice on the GPU: the index of the largest logit of the last row.
//
// Math:     out[0] = argmax_v logits[(step.headRows − 1) · V + v]  (lowest index on ties, NaN ignored)
// Buffers:  step uniform Step { …, headRows, … }
//           logits f32[headRows * V]   row-major
//           out    u32[…]              out[0] receives the token id (it is also the next step's
//                                      embedding input, so the id never has to visit the CPU first)
// Dispatch: (1, 1, 1), workgroup 256: strided scan, then a tree reduction on (value, index).

struct Step { T: u32, pos0: u32, headRows: u32, pad: u32 }

override V: u32;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) tid: u32) {
  let base = (step.headRows - 1u) * V;
  var best = -3.4e38;
  var besti = 0xffffffffu;
  for (var v = tid; v < V; v += 256u) {
    let l = logits[base + v];
    if (l > best) { best = l; besti = v; } // strictly greater: first occurrence wins within a thread
  }
  bv[tid] = best;
  bi[tid] = besti;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (tid < s) {
      let ov = bv[tid + s];
      let oi = bi[tid + s];
      if (ov > bv[tid] || (ov == bv[tid] && oi < bi[tid])) { bv[tid] = ov; bi[tid] = oi; }
    }
    workgroupBarrier();
  }
  if (tid == 0u) {
    var r = bi[0];
    if (r == 0xffffffffu) { r = 0u; }
    out[0] = r;
  }
}
