// spec_accept.wgsl — speculative sampling's acceptance rule (Leviathan et al. 2023; Chen et al. 2023)
// on the GPU, so a round reads back only token ids. (kernels/sample.ts prepends rng.wgsl.)
//
// Math:     the target verified k = step.T − 1 drafted tokens d_1..d_k at positions pos0 + 1..pos0 + k
//           (tokens[0] is the token before them). q_i = the draft's distribution d_i was drawn from,
//           p_i = the target's at the same position (both after temperature / top-k / top-p / min-p,
//           written by sample.wgsl with PROBS). For i = 1..k in order:
//             accept d_i if U_i < p_i(d_i) / q_i(d_i),  U_i = rngUniform(0, pos0 + i, seed, 1)
//           at the first rejection (i = n + 1) the token at that position is drawn from the residual
//             r(v) ∝ max(0, p_i(v) − q_i(v))   (Gumbel-max over ln r with stream 2)
//           and if all k are accepted, the bonus token at pos0 + k + 1 is drawn from p_{k+1} (Gumbel-max
//           over ln p with stream 0: the same noise sample.wgsl draws with). The emitted tokens are then
//           distributed exactly as the target's own sampling, whatever the draft proposes.
//           If the residual is empty (p ≤ q everywhere, only by rounding) the token is drawn from p_i.
// Buffers:  step   uniform Step { T = k + 1, pos0, … }
//           params uniform SampleParams (common.wgsl; only seed is read)
//           p      f32[(k + 1) · V]   target rows (row i: position pos0 + i + 1)
//           q      f32[k · V]         draft rows  (row i: the distribution of d_{i+1})
//           tokens u32[k + 1]         [token before, d_1, …, d_k] (the verify pass's input ids)
//           out    u32[2]             out[0] = n accepted, out[1] = the next token
// Dispatch: (1, 1, 1), workgroup 256: thread 0 runs the accept loop (k scalar reads), then all threads
//           draw the next token over one row with a strided scan and a tree reduction.

override V: u32;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: SampleParams;
@group(0) @binding(2) var<storage, read> p: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> tokens: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<u32>;

const LOWEST = -3.0e38;

var<workgroup> accepted: u32;
var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

// Gumbel-max over ln w(v) for one row; w(v) = p(v) − q(v) (clipped at 0) when residual, else p(v).
fn draw(prow: u32, qrow: u32, residual: bool, pos: u32, stream: u32, tid: u32) -> u32 {
  var best = LOWEST;
  var besti = NONE;
  for (var v = tid; v < V; v += 256u) {
    var w = p[prow + v];
    if (residual) { w = w - q[qrow + v]; }
    if (w > 0.0) {
      let g = log(w) + rngGumbel(v, pos, params.seed, stream);
      if (g > best || besti == NONE) { best = g; besti = v; }
    }
  }
  bv[tid] = best;
  bi[tid] = besti;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (tid < s) {
      let ov = bv[tid + s];
      let oi = bi[tid + s];
      if (argmaxBetter(ov, oi, bv[tid], bi[tid])) {
        bv[tid] = ov;
        bi[tid] = oi;
      }
    }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&bi[0]);
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) tid: u32) {
  let k = step.T - 1u;
  if (tid == 0u) {
    var n = k;
    for (var i = 0u; i < k; i++) {
      let d = tokens[i + 1u];
      let pd = p[i * V + d];
      let qd = q[i * V + d];
      let u = rngUniform(0u, step.pos0 + i + 1u, params.seed, 1u);
      if (!(u * qd < pd)) {
        n = i;
        break;
      }
    }
    accepted = n;
  }
  let n = workgroupUniformLoad(&accepted);
  let pos = step.pos0 + n + 1u;
  let rejected = n < k;
  var tok = draw(n * V, n * V, rejected, pos, select(0u, 2u, rejected), tid);
  if (tok == NONE) { tok = draw(n * V, 0u, false, pos, 2u, tid); }
  if (tok == NONE) { tok = 0u; }
  if (tid == 0u) {
    out[0] = n;
    out[1] = tok;
  }
}
