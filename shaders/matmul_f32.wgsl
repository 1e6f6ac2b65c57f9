// matmul_f32.wgsl — linear layer y = x · Wᵀ (+ bias) (+= into y), f32 weights. Two entry points.
//
// Math:     y[m, n] (=|+=) Σ_k x[m, k] · W[n, k] (+ bias[n])      m < M, n < N, k < K
//           M = step.T, or step.headRows when HEAD (the LM head runs on the last rows only).
//           ACCUM = true adds into y (the residual stream: o_proj and down_proj write h += …).
// Buffers:  step uniform Step { T, pos0, headRows, _ }
//           x    f32[M * K]  row-major activations (bound as vec4<f32>, length padded to 16 bytes)
//           y    f32[M * N]  row-major output
//           bias f32[N]      read only when HAS_BIAS (else a dummy binding)
//           W    f32[N * K]  row-major [out, in], exactly HF's `*.weight` layout (bound as vec4)
// gemv:     for M = 1 (decode). Workgroup 256 = 256/LANES lane groups × LANES lanes; a lane group
//           computes 4 output rows; lanes stride over k (coalesced), then a tree reduction in
//           workgroup memory. Dispatch: (min(G, 65535), ceil(G / 65535), 1), G = ceil(N / (4·256/LANES)).
//           Batches of M > 1 use gemm: with M ≤ 64 it still reads every weight exactly once.
// gemm:     for the prompt. Workgroup (16,16); a 64×64 output tile per workgroup, each thread a
//           4×4 block; K is walked in tiles of 16 staged in workgroup memory.
//           Dispatch: (ceil(N/64), ceil(M/64), 1).

struct Step { T: u32, pos0: u32, headRows: u32, pad: u32 }

override K: u32;
override N: u32;
override HAS_BIAS: bool = false;
override ACCUM: bool = false;
override HEAD: bool = false;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> W4: array<vec4<f32>>;

// x and W are bound as vec4 arrays (16-byte loads on the gemv fast path); scalar access:
fn xs(i: u32) -> f32 { return x4[i >> 2u][i & 3u]; }
fn ws(i: u32) -> f32 { return W4[i >> 2u][i & 3u]; }

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

// ---------------------------------------------------------------- gemv
// One activation row (decode). A workgroup of 256 = (256 / LANES) lane groups × LANES lanes;
// each lane group computes 4 output rows (so each x[k] a lane loads serves 4 rows), lanes stride
// over k (coalesced across lanes), then a tree reduction over the LANES partial sums of each row.
// LANES (a power of two, 4..64) is picked on the CPU from K so each lane has ≥ ~16 products.
override LANES: u32 = 64u;
const GEMV_R = 4u;
var<workgroup> red: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  if (rowsM() == 0u) { return; } // (uniform) also keeps the step binding in the layout
  let lane = tid % LANES;
  let n0 = ((wid.x + wid.y * 65535u) * (256u / LANES) + tid / LANES) * GEMV_R;
  var acc = vec4<f32>(0.0);
  // rows past N read row N-1 (in bounds) and are not stored
  let r0 = min(n0, N - 1u) * K;
  let r1 = min(n0 + 1u, N - 1u) * K;
  let r2 = min(n0 + 2u, N - 1u) * K;
  let r3 = min(n0 + 3u, N - 1u) * K;
  if (K % 4u == 0u) {
    // vector path: each lane reads 16-byte pieces of the 4 rows
    let K4 = K / 4u;
    for (var k4 = lane; k4 < K4; k4 += LANES) {
      let xv = x4[k4];
      acc += vec4<f32>(dot(W4[r0 / 4u + k4], xv), dot(W4[r1 / 4u + k4], xv), dot(W4[r2 / 4u + k4], xv), dot(W4[r3 / 4u + k4], xv));
    }
  } else {
    for (var k = lane; k < K; k += LANES) {
      let xv = xs(k);
      acc += vec4<f32>(ws(r0 + k), ws(r1 + k), ws(r2 + k), ws(r3 + k)) * xv;
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
var<workgroup> As: array<f32, 1024>; // [TK][TILE]: As[kk * 64 + mm] = x[m0 + mm, k0 + kk]
var<workgroup> Bs: array<f32, 1024>; // [TK][TILE]: Bs[kk * 64 + nn] = W[n0 + nn, k0 + kk]

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = rowsM();
  let n0 = wid.x * TILE;
  let m0 = wid.y * TILE;
  let tid = lid.y * 16u + lid.x;
  var acc: array<array<f32, 4>, 4>;
  for (var i = 0u; i < 4u; i++) { for (var j = 0u; j < 4u; j++) { acc[i][j] = 0.0; } }
  for (var k0 = 0u; k0 < K; k0 += TK) {
    // 256 threads load 64×16 of x and 64×16 of W: 4 elements each, k fastest for coalescing.
    for (var e = 0u; e < 4u; e++) {
      let idx = tid + e * 256u;   // 0..1023
      let kk = idx % TK;
      let rr = idx / TK;          // 0..63
      let k = k0 + kk;
      let m = m0 + rr;
      let n = n0 + rr;
      var a = 0.0;
      if (m < M && k < K) { a = xs(m * K + k); }
      As[kk * TILE + rr] = a;
      var b = 0.0;
      if (n < N && k < K) { b = ws(n * K + k); }
      Bs[kk * TILE + rr] = b;
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
