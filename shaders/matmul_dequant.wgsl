// matmul_dequant.wgsl — fused dequant-matmul y = x · Wᵀ (+ bias) (+= into y) for every quantized
// weight format. A format's decoder (weight_<format>.wgsl, prepended to this file) supplies:
//   const VPW: u32                                   weights per u32 word of codes
//   fn prepare(tid: u32)                             fills its workgroup lookup tables (may be empty)
//   fn dequant_word(n: u32, w: u32) -> array<f32, VPW>
//                                                    weights k = w·VPW … w·VPW + VPW-1 of row n
//   its buffers at bindings WB, WB + 1, … (the layouts are in the decoder's header)
// Rows are padded to whole words (KW = ceil(K / VPW) words per row; padding decodes to 0.0) and
// blocks of scales never straddle rows, so word w of row n is self-contained.
//
// Math:     y[m, n] (=|+=) Σ_k x[m, k] · dequant(W)[n, k] (+ bias[n])   m < M, n < N, k < K
//           M = step.T, or step.headRows when HEAD; ACCUM adds into y (the residual stream).
// Buffers:  step uniform Step { T, pos0, headRows, _ }; x f32[M * K] (bound as vec4<f32>, length
//           padded to 16 bytes); y f32[M * N]; bias f32[N] (read only when HAS_BIAS); the weight's
//           buffers from binding 4.
// gemv:     for M = 1 (decode). Workgroup 256 = 256/LANES lane groups × LANES lanes; a lane group
//           computes 4 output rows; lane l reads code words l, l + LANES, … of the 4 rows
//           (consecutive lanes, consecutive words: coalesced), dequantizes them in registers (one
//           u32 = VPW weights, one scale each) and accumulates against x, each x value serving 4
//           rows; then a tree reduction over the LANES partial sums. Nothing dequantized is written
//           to memory. Dispatch: (min(G, 65535), ceil(G / 65535), 1), G = ceil(N / (4·256/LANES)).
// gemm:     for M > 1 (the prompt). Workgroup (16, 16); a 64×64 output tile per workgroup, each
//           thread a 4×4 block; K is walked in tiles of 16: the x tile and the *dequantized* W tile
//           (64 rows × 16 weights = 64·16/VPW code words) are staged in workgroup memory.
//           Dispatch: (ceil(N / 64), ceil(M / 64), 1).

struct Step { T: u32, pos0: u32, headRows: u32, pad: u32 }

override K: u32;
override N: u32;
override HAS_BIAS: bool = false;
override ACCUM: bool = false;
override HEAD: bool = false;

const WB = 4u; // first binding of the weight's buffers

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>; // bound as vec4: 16-byte loads

fn xs(i: u32) -> f32 { return x4[i >> 2u][i & 3u]; }
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

fn rowsM() -> u32 {
  if (HEAD) { return step.headRows; }
  return step.T;
}

fn store(m: u32, n: u32, acc: f32) {
  var v = acc;
  if (HAS_BIAS) { v += bias[n]; }
  let i = m * N + n;
  if (ACCUM) { v += y[i]; }
  y[i] = v;
}

/** Code words per weight row. */
fn row_words() -> u32 { return (K + VPW - 1u) / VPW; }

// ---------------------------------------------------------------- gemv
// As matmul_f32's gemv: a lane group computes GEMV_R = 4 rows, so each x value a lane loads
// serves 4 rows; lane l reads code words l, l + LANES, … of each of its rows.
override LANES: u32 = 64u;
const GEMV_R = 4u;
var<workgroup> red: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  if (rowsM() == 0u) { return; } // (uniform) also keeps the step binding in the layout
  prepare(tid);
  workgroupBarrier();
  let lane = tid % LANES;
  let n0 = ((wid.x + wid.y * 65535u) * (256u / LANES) + tid / LANES) * GEMV_R;
  // rows past N decode row N-1 (in bounds) and are not stored
  let r0 = min(n0, N - 1u);
  let r1 = min(n0 + 1u, N - 1u);
  let r2 = min(n0 + 2u, N - 1u);
  let r3 = min(n0 + 3u, N - 1u);
  let KW = row_words();
  var acc = vec4<f32>(0.0);
  for (var w = lane; w < KW; w += LANES) {
    let v0 = dequant_word(r0, w);
    let v1 = dequant_word(r1, w);
    let v2 = dequant_word(r2, w);
    let v3 = dequant_word(r3, w);
    let k = w * VPW;
    for (var i = 0u; i < VPW; i++) {
      let xv = select(0.0, xs(k + i), k + i < K); // the row's padding past K meets x = 0
      acc += vec4<f32>(v0[i], v1[i], v2[i], v3[i]) * xv;
    }
  }
  red[tid] = acc;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { red[tid] += red[tid + s]; }
    workgroupBarrier();
  }
  if (lane == 0u) {
    let v = red[tid];
    for (var r = 0u; r < GEMV_R; r++) {
      if (n0 + r < N) { store(0u, n0 + r, v[r]); }
    }
  }
}

// ---------------------------------------------------------------- gemm
const TILE = 64u;
const TK = 16u;
const WPT = TK / VPW;               // code words per row of a W tile
var<workgroup> As: array<f32, 1024>; // [TK][TILE]: As[kk * 64 + mm] = x[m0 + mm, k0 + kk]
var<workgroup> Bs: array<f32, 1024>; // [TK][TILE]: Bs[kk * 64 + nn] = dequant(W)[n0 + nn, k0 + kk]

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = rowsM();
  let n0 = wid.x * TILE;
  let m0 = wid.y * TILE;
  let tid = lid.y * 16u + lid.x;
  let KW = row_words();
  prepare(tid);
  workgroupBarrier();
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < K; k0 += TK) {
    // x: 256 threads load 64×16, 4 elements each, k fastest
    for (var e = 0u; e < 4u; e++) {
      let idx = tid + e * 256u;
      let kk = idx % TK;
      let rr = idx / TK;
      let k = k0 + kk;
      let m = m0 + rr;
      var a = 0.0;
      if (m < M && k < K) { a = xs(m * K + k); }
      As[kk * TILE + rr] = a;
    }
    // W: 64 rows × WPT code words, one word per thread, dequantized straight into the tile
    for (var idx = tid; idx < TILE * WPT; idx += 256u) {
      let rr = idx / WPT;
      let wi = idx % WPT;
      let n = n0 + rr;
      let w = k0 / VPW + wi;
      var v: array<f32, VPW>;
      if (n < N && w < KW) { v = dequant_word(n, w); }
      for (var i = 0u; i < VPW; i++) { Bs[(wi * VPW + i) * TILE + rr] = v[i]; }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = As[kk * TILE + lid.y * 4u + i];
        bv[i] = Bs[kk * TILE + lid.x * 4u + i];
      }
      for (var i = 0u; i < 4u; i++) { for (var j = 0u; j < 4u; j++) { acc[i][j] += av[i] * bv[j]; } }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y * 4u + i;
    if (m >= M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x * 4u + j;
      if (n < N) { store(m, n, acc[i][j]); }
    }
  }
}
