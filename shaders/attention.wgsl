// attention.wgsl — causal grouped-query attention of new queries over the KV cache in one dispatch:
// online softmax per lane, the keys (flash-decoding) or head_dim split over a workgroup's lanes.
//
// Math:     query t at position p = step.pos0 + t, head h, its KV head g = h / G (G = NH / NKV):
//             s_j          = (q[t, h, :] · kc[g, j, :]) / sqrt(D)      for j ≤ p (causal), j < CTX
//             out[t, h, :] = Σ_j softmax(s)_j · vc[g, j, :]
// Buffers:  step uniform Step { T, pos0, … }
//           q   f32[T * NH * D]       row-major [token, head, dim] (rotated), read as vec4
//           kc  f32[NKV * CTX * D]    [kv head, position, dim], read as vec4 rows; with KV16 f16
//                                     pairs (pack2x16float, low half first) read as vec2<u32>
//           vc  f32[NKV * CTX * D]    same layout (and the same KV16 storage)
//           out f32[T * NH * D]       row-major [token, head, dim], written as vec4
// Work:     a workgroup owns one KV head g, a chunk of R of its G query heads (HC = ceil(G / R)
//           chunks; padded rows repeat the last head and are not stored) and TQ consecutive
//           queries: ROWS = TQ · R (query, head) rows that all read the same keys, so each k and v
//           row loaded (16-byte loads) serves all of them. Every lane keeps, per row, a running
//           max m, a running sum l and vec4 accumulators in registers (an online softmax); rows
//           whose causal range ends before the block's last query mask the extra keys. No
//           barrier in the key loop. Two ways to spread the work over the WG lanes:
//           - split-K (flash-decoding): lane i walks keys j = i, i + WG, … with all D dims; after
//             the loop the lanes' partial (m, l, acc) are merged once, with subgroup max/add
//             when the workgroup is one subgroup (MERGE_SG), else through workgroup memory with a
//             few barriers per row (MERGE_WG).
//           - split-D (SPLITD, needs subgroups): WG = DS ≤ 4 lanes, one subgroup; lane i holds
//             dims [i·D/DS, (i+1)·D/DS) of every row and walks every key; a subgroupAdd completes
//             each score. Nothing to merge. A quarter of the registers per lane of split-K, so
//             more rows fit (the CPU adapters' choice: compile time grows with the unrolled state).
//           TQ = 1 is the decode kernel (any T); TQ > 1 the prefill kernel (queries tiled).
// Dispatch: (NKV · HC, ceil(T / TQ), 1), workgroup WG.
//
// Template: src/kernels/ops.ts (attentionSource) expands this file before compiling it, because
//           per-row / per-vec4 state must be named registers (indexing private arrays in a loop
//           puts them in memory on some compilers). `//#for r` … `//#end` repeats lines for every
//           row r < ROWS ({t}, {h}: that row's query and head offset in the block); `//#for t`
//           for every query t < TQ; `//#for d` for every vec4 d < DL of the lane's slice of head_dim
//           (DL = D4 = D/4 in split-K, D4 / DS in split-D); `//#for c` for every merge chunk
//           ({c0}: its first vec4, {CL}: its length ≤ MC), inside which `//#for d` covers the chunk
//           and {e} = d − c0. `//#if FLAG` / `//#else` / `//#endif` select the mode (and KV16,
//           the f16 cache).
//           {D4} {DL} {MC} {R} {TQ} {ROWS} are numbers.
//#if SUBGROUPS
enable subgroups;
//#endif

override NH: u32;
override NKV: u32;
override D: u32;
override CTX: u32;
override WG: u32 = 4u;   // lanes
override HC: u32 = 1u;   // head chunks per KV head

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
//#if KV16
@group(0) @binding(3) var<storage, read> kc: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> vc: array<vec2<u32>>;
fn kv_load(w: vec2<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
//#else
@group(0) @binding(3) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> vc: array<vec4<f32>>;
fn kv_load(w: vec4<f32>) -> vec4<f32> { return w; }
//#endif

const D4 = {D4}u;
const DL = {DL}u;
const R = {R}u;
const TQ = {TQ}u;
const ROWS = {ROWS}u;
const NEG = -3.0e38;

//#if MERGE_WG
const MC = {MC}u;
var<workgroup> wm: array<f32, WG * ROWS>;
var<workgroup> wl: array<f32, WG * ROWS>;
var<workgroup> wacc: array<vec4<f32>, WG * MC>;
//#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) i: u32) {
  let G = NH / NKV;
  let g = wid.x / HC;
  let h0 = (wid.x % HC) * R;
  let tb = wid.y * TQ;
  if (tb >= step.T) { return; }
  let scale = 1.0 / sqrt(f32(D));
//#if SPLITD
  let part = i * DL;   // this lane's slice of every row
  let j0 = 0u;         // and every key
  let stride = 1u;
//#else
  let part = 0u;
  let j0 = i;
  let stride = WG;
//#endif
  // keys of the block's last query; each query row t keeps its own causal count nk{t}
  let nk = min(step.pos0 + min(tb + TQ, step.T), CTX);
  //#for t
  let t{t} = min(tb + {t}u, step.T - 1u);
  let nk{t} = min(step.pos0 + t{t} + 1u, CTX);
  //#end
  //#for r
  let qo{r} = (t{t} * NH + g * G + min(h0 + {h}u, G - 1u)) * D4 + part;
  //#for d
  let q{r}_{d} = q[qo{r} + {d}u] * scale;
  var a{r}_{d} = vec4<f32>(0.0);
  //#end
  var m{r} = NEG;
  var l{r} = 0.0;
  //#end
  let base = g * CTX * D4 + part;
  for (var j = j0; j < nk; j += stride) {
    let kb = base + j * D4;
    //#for d
    let k{d} = kv_load(kc[kb + {d}u]);
    //#end
    //#for r
    var s{r} = vec4<f32>(0.0);
    //#for d
    s{r} = fma(q{r}_{d}, k{d}, s{r});
    //#end
//#if SPLITD
    let x{r} = subgroupAdd(s{r}.x + s{r}.y + s{r}.z + s{r}.w);
//#else
    let x{r} = s{r}.x + s{r}.y + s{r}.z + s{r}.w;
//#endif
    //#end
    //#for r
    let y{r} = select(NEG, x{r}, j < nk{t});
    let mn{r} = max(m{r}, y{r});
    let c{r} = exp(m{r} - mn{r});
    let e{r} = select(0.0, exp(y{r} - mn{r}), j < nk{t});
    l{r} = l{r} * c{r} + e{r};
    m{r} = mn{r};
    //#end
    //#for d
    let v{d} = kv_load(vc[kb + {d}u]);
    //#end
    //#for r
    //#for d
    a{r}_{d} = fma(vec4<f32>(e{r}), v{d}, a{r}_{d} * c{r});
    //#end
    //#end
  }
//#if SPLITD
  // one key slot: the lane's slice is final
  //#for r
  let st{r} = tb + {t}u < step.T && h0 + {h}u < G;
  //#for d
  if (st{r}) { out[qo{r} + {d}u] = a{r}_{d} / l{r}; }
  //#end
  //#end
//#endif
  // split-K merge: M = max m, f = exp(m − M), out = Σ f·acc / Σ f·l (lanes without keys: f = 0)
//#if MERGE_SG
  //#for r
  let f{r} = exp(m{r} - subgroupMax(m{r}));
  let L{r} = subgroupAdd(l{r} * f{r});
  let st{r} = i == 0u && tb + {t}u < step.T && h0 + {h}u < G;
  //#for d
  let o{r}_{d} = subgroupAdd(a{r}_{d} * f{r});
  if (st{r}) { out[qo{r} + {d}u] = o{r}_{d} / L{r}; }
  //#end
  //#end
//#endif
//#if MERGE_WG
  //#for r
  wm[{r}u * WG + i] = m{r};
  //#end
  workgroupBarrier();
  //#for r
  var M{r} = NEG;
  for (var w = 0u; w < WG; w++) { M{r} = max(M{r}, wm[{r}u * WG + w]); }
  let f{r} = exp(m{r} - M{r});
  wl[{r}u * WG + i] = l{r} * f{r};
  //#end
  // the accumulators go through wacc in chunks of MC vec4 per lane
  //#for r
  //#for c
  //#for d
  wacc[i * MC + {e}u] = a{r}_{d} * f{r};
  //#end
  workgroupBarrier();
  for (var e = i; e < {CL}u; e += WG) {
    var o = vec4<f32>(0.0);
    var L = 0.0;
    for (var w = 0u; w < WG; w++) {
      o += wacc[w * MC + e];
      L += wl[{r}u * WG + w];
    }
    if (tb + {t}u < step.T && h0 + {h}u < G) { out[qo{r} + {c0}u + e] = o / L; }
  }
  workgroupBarrier();
  //#end
  //#end
//#endif
}
