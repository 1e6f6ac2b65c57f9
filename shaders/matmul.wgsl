// matmul.wgsl — the one matmul skeleton: y = norm?(x) · Wᵀ (+ bias) (=|+=) for every weight format,
// for decode (1 row), speculative verify (a few rows) and prefill (many rows).
//
// A format's decoder (weight_<format>.wgsl) supplies:
//   const CPW: u32                        weights per 16-byte chunk of codes (f32 4, f16 8, int8 16, nf4 32)
//   const CV: u32                         vec4s of weights per chunk (CPW / 4)
//   alias WC                              one chunk of codes as loaded (vec4<u32>, or vec4<f32> for f32)
//   fn w_load(i: u32) -> WC               chunk i = n · KC + c (chunk c of row n): one 16-byte load
//   fn w_quad(w: WC, j: u32) -> vec4<f32> weights 4j … 4j + 3 of a chunk, unscaled (j < CV, constant)
//   fn w_quad_at(i: u32, j: u32) -> vec4<f32>  the same quad of chunk i, loading only its codes
//   const SCALED: bool                    whether the weights have scale blocks (else w_bscale is 1)
//   SB, NB: u32                           chunks per scale block, scale blocks per row (const or override)
//   fn w_bscale(b: u32) -> f32            scale block b = n · NB + c / SB (absmax, group scale)
//   its buffers at bindings WB, WB + 1, …  (layouts in the decoder's header)
// src/kernels/linear.ts prepends it with the variant's constants (MR, the lane reduction
// `lane_sum` from lane_sum.wgsl) and the chunk helpers generated for CV (struct XC of CV vec4s of
// activations or decoded weights; x_load, g_load, x_mask, x_sumsq, xc_mul, w_decode = all
// w_quad(w, j) of a chunk, xc_dot; x_quad, g_quad, q_mask: one vec4), keeps the lines whose end
// tags the build has (`// @SC` scaled / `@NS` unscaled format, `@R1` one lane per row group / `@RL`
// lanes sharing rows, `@M1` one activation row / `@MN` several, `@XB` xBroadcast, `@CH` whole
// chunks (lanes sharing rows) / `@QM`, `@QN` quad by quad for one / several activation rows (one
// lane per row group); see skeletonTags), emits the lines between `//{quad` and `//}quad` once per
// quad j < CV of a chunk (`$j` = j, each copy in its own block), then each line that contains `$q`
// once per quad of weight rows q < RQ, then each line that contains `$m` once per activation row
// m < MR. The hot loop is then straight-line code on named registers: no private arrays, no dynamic
// indices, each weight chunk (or quad) decoded once for all MR activation rows and each activation
// chunk (or quad) loaded once for all R weight rows. CPU adapters go quad by quad so few values are
// live at once (SwiftShader's JIT spills the rest to memory); GPUs load whole 16-byte chunks per lane.
// Every row of codes is padded to whole 16-byte chunks (KC = ceil(K / CPW) chunks per row; the
// padding decodes to 0.0) and a scale block never straddles a chunk, so one vector load of codes
// and one scale serve CPW weights: the scale multiplies the chunk's partial dot product, once (in
// the quad-by-quad passes of several rows, each decoded weight quad, once for all MR rows).
// Nothing in the hot loop divides, shifts or branches around a load: software adapters
// (SwiftShader's JIT) emulate vector division and shifts lane by lane, and a load under a branch
// is masked lane by lane. Row bases are computed before the loop; one lane walking whole rows
// (@R1) keeps its scale blocks' index up to date with a counter.
//
// Math:     y[m, n] (=|+=) s_m · Σ_k x[m, k] · g[k] · W[n, k] (+ bias[n])   m < M, n < N, k < K
//           M = step.T, or step.headRows when HEAD (then x rows T - headRows … T - 1 are read);
//           NORM fuses the RMSNorm before the matmul: g = the norm weight, s_m = 1 / sqrt(mean_k
//           x[m, k]² + EPS) (else g = 1, s_m = 1); ACCUM adds into y (the residual stream).
// Buffers:  step uniform Step { T, pos0, headRows, _ } (common.wgsl); x f32[rows × K] (bound as vec4:
//           K % 4 = 0); y f32[M × YN] (YN = N, or the whole weight's rows when this weight is a row
//           part of a split one: row n is then y column Y0 + n); bias f32[YN] (read when HAS_BIAS);
//           g f32[K] (vec4; read when NORM); the weight's buffers from binding WB = 5.
// Shape:    workgroup WG (64; on CPU adapters 64 … 4, sized by linear.ts's matmulWorkgroup to cover
//           the rows with little waste and, in decode and verify, make ≥ 16 workgroups) = WG / LANES
//           lane groups of LANES lanes. A lane group computes R = 4 · RQ
//           rows n0 … n0 + R - 1 for MR activation rows m0 … m0 + MR - 1 (m0 = workgroup_id.y · MR);
//           RQ = 2 in decode and prefill on CPU adapters, 4 in verify of big weights (nf4: 2), else 1. Lane l
//           walks chunks l, l + LANES, … of its R weight rows (consecutive lanes read consecutive
//           16-byte chunks: coalesced), decodes each chunk once in registers, and uses it for all
//           MR activation rows; then `lane_sum` adds the LANES partial sums (subgroupShuffleXor, a
//           workgroup-memory tree after the loop, or nothing when LANES = 1). No barrier and no
//           per-weight bounds check in the hot loop: only the last, partial chunk (K % CPW ≠ 0)
//           masks its activations.
//           decode: MR = 1; verify: MR = rows of the pass; prefill: MR = 8 (CPU adapters, weights
//           of ≥ 2^18: MR = 16 and RQ = 4 once compiled after the load, linear.ts's PREFILL_LARGE). CPU adapters run
//           LANES = 1 (the 'row' variant): the lanes of a SIMD group then read the same
//           activations, and with subgroups (xBroadcast) lane i loads only component i of each
//           vec4 and subgroupBroadcast hands it to the others: one load instead of four. The lines
//           tagged `@XB` exist only in that build (the subgroup lane id), and every lane walks the
//           same chunks there, so the broadcasts are in subgroup-uniform control flow.
//           Dispatch: (min(G, 65535), ceil(M / MR), ceil(G / 65535)), G = ceil(N / (R · WG / LANES)).

override K: u32;
override N: u32;
override LANES: u32 = 1u;
override HAS_BIAS: bool = false;
override ACCUM: bool = false;
override HEAD: bool = false;
override NORM: bool = false;
override EPS: f32 = 1e-5;
override YN: u32 = N;  // y's row length: a row part of a split weight writes N of a wider y's YN columns
override Y0: u32 = 0u; // y column of weight row 0 (the part's first row in the whole weight)

const WB = 5u;     // first binding of the weight's buffers
override WG: u32 = 64u; // invocations per workgroup (≤ 64)
const R = 4u * RQ; // weight rows per lane group (RQ quads, from linear.ts)

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> g4: array<vec4<f32>>;

fn store(m: u32, n: u32, acc: f32) {
  var v = acc;
  if (HAS_BIAS) { v += bias[Y0 + n]; }
  let i = m * YN + Y0 + n;
  if (ACCUM) { v += y[i]; }
  y[i] = v;
}

fn store_rows(m: u32, M: u32, n0: u32, acc: vec4<f32>, ss: f32) {
  if (m >= M) { return; }
  var v = acc;
  if (NORM) { v *= inverseSqrt(ss / f32(K) + EPS); }
  for (var r = 0u; r < 4u; r++) {
    if (n0 + r < N) { store(m, n0 + r, v[r]); }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32,
        @builtin(subgroup_invocation_id) sgl: u32, // @XB
        ) {
  XL = sgl & 3u; // @XB
  var M = step.T;
  var xr0 = 0u;
  if (HEAD) {
    M = step.headRows;
    xr0 = step.T - step.headRows;
  }
  if (M == 0u) { return; } // (uniform) also keeps the step binding in the layout
  let lane = tid % LANES;
  let n0 = ((wid.x + wid.z * 65535u) * (WG / LANES) + tid / LANES) * R;
  // rows past N decode row N - 1 (in bounds) and are not stored
  let rr$q = min(vec4<u32>(n0 + 4u * $qu) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(N - 1u));
  let m0 = wid.y * MR;
  var acc$m_$q = vec4<f32>(0.0);
  var ss$m = 0.0;
  let x$m = xr0 + min(m0 + $mu, M - 1u);
  let KF = K / CPW;               // whole chunks
  let KC = (K + CPW - 1u) / CPW;  // chunks, the last one partial when K % CPW ≠ 0
  let rb$q = rr$q * KC;           // each weight row's first chunk
  let xb$m = x$m * (K / 4u);      // each activation row's first vec4
  // scaled formats: the R rows' current scales; one lane per row group: the R rows' current scale
  // blocks and the chunks of the current block done so far
  var sc$q = vec4<f32>(0.0); // @SC
  var sb$q = rr$q * NB; // @SC @R1
  var sk = 0u; // @SC @R1
  for (var c = lane; c < KC; c += LANES) {
    let tail = c == KF; // one compare per chunk; only the partial chunk masks its activations
    var g: XC; // the norm weight's chunk, loaded once for all MR rows // @CH
    if (NORM) { g = g_load(c * CV); } // @CH
    // each activation row's chunk, loaded once for all R weight rows
    var xv$m = x_load(xb$m + c * CV); // @CH
    if (tail) { xv$m = x_mask(xv$m, c * CPW); } // @CH
    if (NORM) { ss$m += x_sumsq(xv$m); xv$m = xc_mul(xv$m, g); } // @CH
    // scales: one lane walks whole blocks and moves to the next block after SB chunks (an index
    // kept up to date, no division); lanes that stride over chunks find each chunk's block
    sc$q = vec4<f32>(w_bscale(sb$q.x), w_bscale(sb$q.y), w_bscale(sb$q.z), w_bscale(sb$q.w)); // @SC @R1
    sk += 1u; // @SC @R1
    let next = sk == SB; // @SC @R1
    sb$q += vec4<u32>(select(0u, 1u, next)); // @SC @R1
    sk = select(sk, 0u, next); // @SC @R1
    let cb = c / SB; // @SC @RL
    sc$q = vec4<f32>(w_bscale(rr$q.x * NB + cb), w_bscale(rr$q.y * NB + cb), w_bscale(rr$q.z * NB + cb), w_bscale(rr$q.w * NB + cb)); // @SC @RL
    // one activation row, lanes sharing rows (GPUs): each weight row's chunk is decoded and used at
    // once, one 16-byte load of codes per lane
    acc0_$q += vec4<f32>(xc_dot(w_decode(w_load(rb$q.x + c)), xv0), xc_dot(w_decode(w_load(rb$q.y + c)), xv0), xc_dot(w_decode(w_load(rb$q.z + c)), xv0), xc_dot(w_decode(w_load(rb$q.w + c)), xv0)) * sc$q; // @M1 @CH @SC
    acc0_$q += vec4<f32>(xc_dot(w_decode(w_load(rb$q.x + c)), xv0), xc_dot(w_decode(w_load(rb$q.y + c)), xv0), xc_dot(w_decode(w_load(rb$q.z + c)), xv0), xc_dot(w_decode(w_load(rb$q.w + c)), xv0)); // @M1 @CH @NS
    // one activation row, one lane per row group (CPU adapters): the chunk goes quad by quad (the
    // //{quad … //}quad lines emitted once per quad j < CV), each activation quad loaded and each
    // weight quad loaded and decoded where it is used, so few values are live at once (SwiftShader
    // spills the rest to memory: int8 decode 1.16–1.20× faster than whole chunks)
    var p$q = vec4<f32>(0.0); // @QM
    //{quad
    var xq = x_quad(xb0 + c * CV + $ju); // @QM
    if (tail) { xq = q_mask(xq, c * CPW + 4u * $ju); } // @QM
    if (NORM) { ss0 += dot(xq, xq); xq *= g_quad(c * CV + $ju); } // @QM
    p$q += vec4<f32>(dot(w_quad_at(rb$q.x + c, $ju), xq), dot(w_quad_at(rb$q.y + c, $ju), xq), dot(w_quad_at(rb$q.z + c, $ju), xq), dot(w_quad_at(rb$q.w + c, $ju), xq)); // @QM
    //}quad
    acc0_$q += p$q * sc$q; // @QM @SC
    acc0_$q += p$q; // @QM @NS
    // several activation rows: the chunk of each of the R weight rows, decoded once for all MR rows
    let w$q_0 = w_decode(w_load(rb$q.x + c)); // @MN @CH
    let w$q_1 = w_decode(w_load(rb$q.y + c)); // @MN @CH
    let w$q_2 = w_decode(w_load(rb$q.z + c)); // @MN @CH
    let w$q_3 = w_decode(w_load(rb$q.w + c)); // @MN @CH
    acc$m_$q += vec4<f32>(xc_dot(w$q_0, xv$m), xc_dot(w$q_1, xv$m), xc_dot(w$q_2, xv$m), xc_dot(w$q_3, xv$m)) * sc$q; // @MN @CH @SC
    acc$m_$q += vec4<f32>(xc_dot(w$q_0, xv$m), xc_dot(w$q_1, xv$m), xc_dot(w$q_2, xv$m), xc_dot(w$q_3, xv$m)); // @MN @CH @NS
    // several activation rows, one lane per row group (CPU adapters): quad by quad as well, each
    // weight quad decoded (and scaled) once for all MR rows
    //{quad
    var gq = vec4<f32>(1.0); // @QN
    if (NORM) { gq = g_quad(c * CV + $ju); } // @QN
    var xq$m = x_quad(xb$m + c * CV + $ju); // @QN
    if (tail) { xq$m = q_mask(xq$m, c * CPW + 4u * $ju); } // @QN
    if (NORM) { ss$m += dot(xq$m, xq$m); xq$m *= gq; } // @QN
    let w$q_0 = w_quad_at(rb$q.x + c, $ju) * sc$q.x; // @QN @SC
    let w$q_1 = w_quad_at(rb$q.y + c, $ju) * sc$q.y; // @QN @SC
    let w$q_2 = w_quad_at(rb$q.z + c, $ju) * sc$q.z; // @QN @SC
    let w$q_3 = w_quad_at(rb$q.w + c, $ju) * sc$q.w; // @QN @SC
    let w$q_0 = w_quad_at(rb$q.x + c, $ju); // @QN @NS
    let w$q_1 = w_quad_at(rb$q.y + c, $ju); // @QN @NS
    let w$q_2 = w_quad_at(rb$q.z + c, $ju); // @QN @NS
    let w$q_3 = w_quad_at(rb$q.w + c, $ju); // @QN @NS
    acc$m_$q += vec4<f32>(dot(w$q_0, xq$m), dot(w$q_1, xq$m), dot(w$q_2, xq$m), dot(w$q_3, xq$m)); // @QN
    //}quad
  }
  acc$m_$q = lane_sum(acc$m_$q, tid);
  if (NORM) { ss$m = lane_sum(vec4<f32>(ss$m, 0.0, 0.0, 0.0), tid).x; }
  if (lane != 0u) { return; }
  store_rows(m0 + $mu, M, n0 + 4u * $qu, acc$m_$q, ss$m);
}
