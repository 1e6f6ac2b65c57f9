// attention.wgsl — causal grouped-query attention of new queries over the KV cache
// (one pass per query row with an online softmax, as in FlashAttention).
//
// Math:     query t at position p = step.pos0 + t, head h, its KV head g = h / (NH / NKV):
//             s_j   = (q[t, h, :] · kc[g, j, :]) / sqrt(D)       for j ≤ p (causal)
//             out[t, h, :] = Σ_j softmax(s)_j · vc[g, j, :]
// Buffers:  step uniform Step { T, pos0, … }
//           q   f32[T * NH * D]       row-major [token, head, dim] (rotated)
//           kc  f32[NKV * CTX * D]    [kv head, position, dim]
//           vc  f32[NKV * CTX * D]
//           out f32[T * NH * D]       row-major [token, head, dim]
// Dispatch: (NH, T, 1), workgroup 64. Keys are walked in tiles of 64: thread j scores key j of
//           the tile, the tile's max and sum update the running (max, sum) and each thread
//           rescales and accumulates output dims d = tid, tid + 64, … (D ≤ 256).

struct Step { T: u32, pos0: u32, headRows: u32, pad: u32 }

override NH: u32;
override NKV: u32;
override D: u32;
override CTX: u32;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<f32>;
@group(0) @binding(4) var<storage, read> vc: array<f32>;

const TILE = 64u;
var<workgroup> qs: array<f32, 256>;
var<workgroup> ps: array<f32, 64>;
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let t = wid.y;
  if (t >= step.T) { return; }
  let p = step.pos0 + t;
  let g = h / (NH / NKV);
  let qbase = (t * NH + h) * D;
  for (var d = tid; d < D; d += TILE) { qs[d] = q[qbase + d]; }
  workgroupBarrier();
  let scale = 1.0 / sqrt(f32(D));
  let kvbase = g * CTX * D;
  var acc: array<f32, 4>;
  for (var i = 0u; i < 4u; i++) { acc[i] = 0.0; }
  var runMax = -3.4e38;
  var runSum = 0.0;
  let nKeys = min(p + 1u, CTX);
  for (var j0 = 0u; j0 < nKeys; j0 += TILE) {
    let j = j0 + tid;
    var s = -3.4e38;
    if (j < nKeys) {
      var dot = 0.0;
      let kb = kvbase + j * D;
      for (var d = 0u; d < D; d++) { dot += qs[d] * kc[kb + d]; }
      s = dot * scale;
    }
    red[tid] = s;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st >>= 1u) {
      if (tid < st) { red[tid] = max(red[tid], red[tid + st]); }
      workgroupBarrier();
    }
    let tileMax = red[0];
    let newMax = max(runMax, tileMax);
    workgroupBarrier();
    var e = 0.0;
    if (j < nKeys) { e = exp(s - newMax); }
    ps[tid] = e;
    red[tid] = e;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st >>= 1u) {
      if (tid < st) { red[tid] += red[tid + st]; }
      workgroupBarrier();
    }
    let corr = exp(runMax - newMax);
    runSum = runSum * corr + red[0];
    runMax = newMax;
    let cnt = min(TILE, nKeys - j0);
    for (var i = 0u; i < 4u; i++) {
      let d = tid + i * TILE;
      if (d < D) {
        var a = acc[i] * corr;
        for (var jj = 0u; jj < cnt; jj++) { a += ps[jj] * vc[kvbase + (j0 + jj) * D + d]; }
        acc[i] = a;
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let d = tid + i * TILE;
    if (d < D) { out[qbase + d] = acc[i] / runSum; }
  }
}
