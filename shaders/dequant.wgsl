// dequant.wgsl — a quantized weight decoded to f32 rows, once per prefill pass, for CPU adapters'
// prefill matmuls of formats whose per-weight decode is dear there (nf4: a codebook lookup per
// weight, which SwiftShader's JIT turns into a per-lane gather). The f32 matmul then reads the
// rows; each weight is decoded once per pass instead of once per tile of activation rows. See
// src/kernels/linear.ts (prefillDequant) for when it runs.
// The format's decoder (weight_<format>.wgsl, prepended, with its buffers from binding WB = 2)
// supplies CPW, CV, SB, NB, SCALED, w_load(), w_quad() and w_bscale() (see matmul.wgsl).
//
// Math:     out[n, k] = W[n, k] (decoded: code · scale)        n < N, k < K (K % 4 = 0)
// Buffers:  step uniform Step (common.wgsl; unused but bound, as by every op); out f32[N * K]
//           (row-major [out, in]: the f32 format's layout, K % 4 = 0 so no row padding), bound as
//           vec4; the weight's buffers from binding 2 (layouts in the decoder's header).
// Dispatch: (gx, gy, 1) workgroups of 64, gx · gy · 64 ≥ N · KC (KC = ceil(K / CPW) chunks per
//           row; split over x and y past 65535 workgroups); one invocation per 16-byte chunk of
//           codes: one load, one scale, CV vec4 stores (those past the row's end, in the partial
//           last chunk, are skipped). No loop, no barrier.

override K: u32;
override N: u32;

const WB = 2u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read_write> out4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let KC = (K + CPW - 1u) / CPW;
  let i = gid.y * nwg.x * 64u + gid.x; // chunk i = n · KC + c
  if (i >= N * KC || step.T == 0u) { return; }
  let n = i / KC;
  let c = i - n * KC;
  let KQ = K / 4u;
  let w = w_load(i);
  var s = 1.0;
  if (SCALED) { s = w_bscale(n * NB + c / SB); }
  //{quad
  if (c * CV + $ju < KQ) { out4[n * KQ + c * CV + $ju] = w_quad(w, $ju) * s; }
  //}quad
}
