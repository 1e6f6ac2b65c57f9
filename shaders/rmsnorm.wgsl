// rmsnorm.wgsl — RMSNorm over the hidden dimension (Llama / HF LlamaRMSNorm, computed in f32).
//
// Math:     out[r, i] = x[r', i] / sqrt(mean_j(x[r', j]^2) + EPS) * w[i]
//           LAST = false: r' = r for r < step.T                       (every row)
//           LAST = true:  r' = step.T - step.headRows + r, r < headRows (the last rows only: the
//                         final norm before the LM head, written compactly to out rows 0..headRows)
// Buffers:  step uniform Step; x f32[rows * H] row-major; w f32[H]; out f32[rows * H].
// Dispatch: (rows, 1, 1), workgroup 256: one workgroup per row, a strided sum of squares and a
//           tree reduction in workgroup memory.

struct Step { T: u32, pos0: u32, headRows: u32, pad: u32 }

override H: u32;
override EPS: f32;
override LAST: bool = false;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let r = wid.x;
  var rows = step.T;
  var src = r;
  if (LAST) {
    rows = step.headRows;
    src = step.T - step.headRows + r;
  }
  if (r >= rows) { return; } // uniform per workgroup, so the barriers below stay uniform
  let base = src * H;
  var s = 0.0;
  for (var i = tid; i < H; i += 256u) {
    let v = x[base + i];
    s += v * v;
  }
  partial[tid] = s;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    if (tid < stride) { partial[tid] += partial[tid + stride]; }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(partial[0] / f32(H) + EPS);
  let obase = r * H;
  for (var i = tid; i < H; i += 256u) {
    out[obase + i] = x[base + i] * inv * w[i];
  }
}
