// sample.wgsl — token choice on the GPU: penalties, logit bias, temperature, top-k, top-p, min-p and
// a seeded draw, one logits row per workgroup, without sorting the vocabulary.
// (kernels/sample.ts prepends rng.wgsl: rngGumbel.)
//
// Math (one row, vocabulary V; the order of Hugging Face's logits processors):
//   u_v = logit_v                                       (NaN → LOWEST = −3e38, clamped to ±3e38)
//   penalties, when params.penalize (c_v = counts[v] = occurrences of v in prompt + generated text):
//     if c_v > 0:  u_v = u_v / ρ if u_v > 0 else u_v · ρ                (repetition ρ, CTRL / HF)
//                  u_v = u_v − c_v · α_freq − α_pres                      (frequency / presence, OpenAI)
//   u_v += bias_v                                       (logit bias, sparse list, ids unique)
//   greedy (temperature ≤ 0 or top_k = 1): token = argmax_v u_v, lowest index on ties. Done.
//   z_v = u_v / T,  m = max_v z_v,  e_v = exp(z_v − m)
//   window: z_v < m − 64 is never drawn (its probability is < e^−64 · V < 1e−22)
//   min-p:  keep z_v ≥ τ_min = m + ln(min_p)            (p_v ≥ min_p · p_max)
//   top-k:  keep v if #{u : z_u > z_v} < k                (all ties of the k-th value kept, like HF)
//   top-p:  keep v if Σ_{u ∈ K, z_u > z_v} e_u < p · Σ_{u ∈ K} e_u,  K = the top-k set (HF: drop the
//           smallest tokens whose cumulative probability ≤ 1 − p; tied values are kept or dropped together)
//   kept S = {v : z_v ≥ τ},  τ = max(m − 64, τ_min, τ_k, τ_p)
//   draw:   token = argmax_{v ∈ S} (z_v + g_v), g_v = rngGumbel(v, position, seed, 0): the Gumbel-max
//           trick, P(token = v) = e_v / Σ_{u ∈ S} e_u exactly. position = step.pos0 + step.T − rows + r + 1
//           is the sequence position of the drawn token, so results do not depend on batching or timing.
//   PROBS:  scratch row ← the kept distribution e_v / Σ_S e (0 outside S) — speculative sampling's p, q.
//   COUNTS: counts[token] += 1 (the next step's penalties see it without a CPU round trip).
//
// Thresholds by histogram refinement (τ_k: weight = 1, θ = k; τ_p: weight = e, θ = p · Σ_K e): both
// are "the smallest value whose weight strictly above it is < θ". Over a value interval [a, b]
// (first [m − 64, m], resp. [τ_k, m]) one pass puts every z ∈ [a, b] into one of 256 equal-width
// bins, bin = min(255, ⌊256 (z − a) / (b − a)⌋) (monotone in z), accumulating with workgroup atomics
// the bin's weight — mass as 64-bit fixed point ⌊e · 2^31⌋ (a carry into a high word), exact integer
// sums that do not depend on the order threads add them — and the bin's min and max value (as
// order-preserving u32 keys). Thread 0 scans bins from the top adding weights; the first non-empty
// bin j where (weight above j) + W_j ≥ θ holds the threshold: every value in bins above is kept,
// every value in bins below is dropped. If min_j = max_j, τ = that value; else recurse into
// [min_j, max_j] with the weight above carried. Each level splits its interval into ≥ 2 non-empty
// bins and shrinks it ≥ 256×: typically 3–4 passes over the row (≤ 12 levels; when the cap is hit
// τ = the last interval's min, which keeps a superset). Tokens with e < 2^−31 weigh 0 in top-p.
//
// Buffers:  step    uniform Step { T, pos0, headRows, _ }
//           params  uniform SampleParams (common.wgsl), written once per request
//           logits  f32[headRows · V]         row-major; this dispatch reads the last `rows` rows
//           out     u32[rows]                 out[r] ← the token (SAMPLE = false: the greedy argmax)
//           scratch f32[rows · V]             per-row work space (u), then the kept distribution (PROBS)
//           counts  u32[V]                    token counts for the penalties (prompt-seeded by the CPU)
//           bias    vec2<u32>[nBias]          (token id, bitcast f32 bias)
// Dispatch: (rows, 1, 1), workgroup WG (256; 64 for small vocabularies); workgroup r handles logits row step.headRows − rows + r.
//           A pass over the row: 1 (greedy), + 1 per bias, + top-k levels + top-p levels + 1 draw
//           (+ 1 with PROBS). Only out (4 bytes a row) is read by the CPU.

override V: u32;
override PROBS: bool = false; // write the kept distribution into the scratch row
override SAMPLE: bool = true; // draw (false: out[r] = argmax of u, no draw)
override COUNTS: bool = true; // counts[token] += 1 (single-row decode only)
override WG: u32 = 256u;      // workgroup size: a power of two ≥ 64 (kernels/sample.ts: 64 for V ≤ 4096)

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: SampleParams;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(5) var<storage, read_write> counts: array<u32>;
@group(0) @binding(6) var<storage, read> bias: array<vec2<u32>>;

const NB = 256u; // histogram bins
const LOWEST = -3.0e38;
const HIGHEST = 3.0e38;
const WINDOW = 64.0;
const MAX_LEVELS = 12u;
const FIX = 2147483648.0; // 2^31: fixed-point scale of e ∈ (0, 1]

var<workgroup> redF: array<f32, WG>;
var<workgroup> redU: array<u32, WG>;
var<workgroup> hLo: array<atomic<u32>, 256>;
var<workgroup> hHi: array<atomic<u32>, 256>;
var<workgroup> hMin: array<atomic<u32>, 256>;
var<workgroup> hMax: array<atomic<u32>, 256>;

// State of one threshold search, written by thread 0, read by all through workgroupUniformLoad.
struct Search {
  a: f32,
  b: f32,
  theta: f32,
  tau: f32,
  offLo: u32,
  offHi: u32,
  done: u32,
  pad: u32,
}
var<workgroup> st: Search;

struct VI { v: f32, i: u32 }

// Order-preserving map f32 → u32 (a < b ⇔ key(a) < key(b) for non-NaN values).
fn orderKey(f: f32) -> u32 {
  let b = bitcast<u32>(f);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn fromKey(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

fn wide(hi: u32, lo: u32) -> f32 {
  return f32(hi) * 4294967296.0 + f32(lo);
}

// Workgroup argmax of (value, index): largest value, lowest index among equals. Uniform result.
fn reduceMax(v0: f32, i0: u32, tid: u32) -> VI {
  redF[tid] = v0;
  redU[tid] = i0;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) {
      let ov = redF[tid + s];
      let oi = redU[tid + s];
      if (argmaxBetter(ov, oi, redF[tid], redU[tid])) {
        redF[tid] = ov;
        redU[tid] = oi;
      }
    }
    workgroupBarrier();
  }
  let r = VI(workgroupUniformLoad(&redF[0]), workgroupUniformLoad(&redU[0]));
  workgroupBarrier();
  return r;
}

fn reduceSum(x: f32, tid: u32) -> f32 {
  redF[tid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) { redF[tid] += redF[tid + s]; }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&redF[0]);
  workgroupBarrier();
  return r;
}

// Thread 0, after a histogram pass: find the bin holding the threshold (see the header).
fn scanBins(useMass: bool, first: bool) {
  let s = st;
  var theta = s.theta;
  if (useMass && first) {
    // top-p: θ = p · (mass of the whole first interval)
    var zl = 0u;
    var zh = 0u;
    for (var j = 0u; j < NB; j++) {
      let l = atomicLoad(&hLo[j]);
      let nl = zl + l;
      zh += atomicLoad(&hHi[j]) + select(0u, 1u, nl < zl);
      zl = nl;
    }
    theta = s.theta * wide(zh, zl);
    st.theta = theta;
  }
  var al = s.offLo;
  var ah = s.offHi;
  for (var jj = 0u; jj < NB; jj++) {
    let j = NB - 1u - jj;
    let mn = atomicLoad(&hMin[j]);
    let mx = atomicLoad(&hMax[j]);
    if (mn > mx) { continue; } // empty bin
    let nl = al + atomicLoad(&hLo[j]);
    let nh = ah + atomicLoad(&hHi[j]) + select(0u, 1u, nl < al);
    if (wide(nh, nl) >= theta) {
      if (mn == mx) {
        st.done = 1u;
        st.tau = fromKey(mn);
      } else {
        st.a = fromKey(mn);
        st.b = fromKey(mx);
        st.offLo = al;
        st.offHi = ah;
      }
      return;
    }
    al = nl;
    ah = nh;
  }
  // the whole interval weighs < θ: all of it is kept
  st.done = 1u;
  st.tau = s.a;
}

// The smallest value τ in [a0, b0] whose weight strictly above is < θ (θ = p for mass: scaled inside).
fn search(useMass: bool, a0: f32, b0: f32, theta0: f32, sbase: u32, invT: f32, m: f32, tid: u32) -> f32 {
  workgroupBarrier();
  if (tid == 0u) {
    st = Search(a0, b0, theta0, a0, 0u, 0u, select(0u, 1u, !(b0 > a0)), 0u);
  }
  for (var level = 0u; level < MAX_LEVELS; level++) {
    let s = workgroupUniformLoad(&st);
    if (s.done != 0u) { break; }
    for (var j = tid; j < NB; j += WG) {
      atomicStore(&hLo[j], 0u);
      atomicStore(&hHi[j], 0u);
      atomicStore(&hMin[j], NONE);
      atomicStore(&hMax[j], 0u);
    }
    workgroupBarrier();
    let w = s.b - s.a;
    for (var v = tid; v < V; v += WG) {
      let z = scratch[sbase + v] * invT;
      if (z >= s.a && z <= s.b) {
        let bin = min(NB - 1u, u32(max(0.0, (z - s.a) / w * f32(NB))));
        var inc = 1u;
        if (useMass) { inc = u32(exp(z - m) * FIX); }
        if (inc != 0u) {
          let old = atomicAdd(&hLo[bin], inc);
          if (old + inc < old) { atomicAdd(&hHi[bin], 1u); }
        }
        let k = orderKey(z);
        atomicMin(&hMin[bin], k);
        atomicMax(&hMax[bin], k);
      }
    }
    workgroupBarrier();
    if (tid == 0u) { scanBins(useMass, level == 0u); }
  }
  let s = workgroupUniformLoad(&st);
  return select(s.a, s.tau, s.done != 0u);
}

fn finish(r: u32, token: u32) {
  out[r] = token;
  if (COUNTS) { counts[token] += 1u; }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  let rows = nwg.x;
  let r = wid.x;
  let lbase = (step.headRows - rows + r) * V;
  let sbase = r * V;
  let pos = step.pos0 + step.T - rows + r + 1u;

  // 1. u = penalized logits → scratch, with the running argmax
  var bv = LOWEST;
  var bi = NONE;
  for (var v = tid; v < V; v += WG) {
    var u = logits[lbase + v];
    if (!(u >= LOWEST)) { u = LOWEST; }
    if (u > HIGHEST) { u = HIGHEST; }
    if (params.penalize != 0u) {
      let c = counts[v];
      if (c > 0u) {
        u = select(u * params.repetitionPenalty, u / params.repetitionPenalty, u > 0.0);
        u = max(LOWEST, u - f32(c) * params.frequencyPenalty - params.presencePenalty);
      }
    }
    scratch[sbase + v] = u;
    if (u > bv || bi == NONE) { bv = u; bi = v; }
  }
  // 2. logit bias (sparse), then the argmax again
  if (params.nBias > 0u) {
    storageBarrier();
    for (var i = tid; i < params.nBias; i += WG) {
      let e = bias[i];
      if (e.x < V) { scratch[sbase + e.x] = clamp(scratch[sbase + e.x] + bitcast<f32>(e.y), LOWEST, HIGHEST); }
    }
    storageBarrier();
    bv = LOWEST;
    bi = NONE;
    for (var v = tid; v < V; v += WG) {
      let u = scratch[sbase + v];
      if (u > bv || bi == NONE) { bv = u; bi = v; }
    }
  }
  let am = reduceMax(bv, bi, tid);
  var best = am.i;
  if (best == NONE) { best = 0u; }

  let greedy = params.temperature <= 0.0 || params.topK == 1u || am.v <= LOWEST;
  if (greedy || (!SAMPLE && !PROBS)) {
    if (PROBS) {
      for (var v = tid; v < V; v += WG) { scratch[sbase + v] = select(0.0, 1.0, v == best); }
    }
    if (tid == 0u) { finish(r, best); }
    return;
  }

  let invT = 1.0 / params.temperature;
  let m = am.v * invT;
  let floorZ = m - WINDOW;
  var tau = floorZ;
  if (params.minP > 0.0) { tau = max(tau, m + log(min(params.minP, 1.0))); }
  var tauK = floorZ;
  if (params.topK > 0u && params.topK < V) {
    tauK = max(floorZ, search(false, floorZ, m, f32(params.topK), sbase, invT, m, tid));
    tau = max(tau, tauK);
  }
  if (params.topP < 1.0) {
    tau = max(tau, search(true, tauK, m, max(params.topP, 0.0), sbase, invT, m, tid));
  }

  // 3. draw: Gumbel-max over the kept set (and its normalizer for PROBS)
  var gv = LOWEST;
  var gi = NONE;
  var zs = 0.0;
  for (var v = tid; v < V; v += WG) {
    let z = scratch[sbase + v] * invT;
    if (z >= tau) {
      if (SAMPLE) {
        let g = z + rngGumbel(v, pos, params.seed, 0u);
        if (g > gv || gi == NONE) { gv = g; gi = v; }
      }
      if (PROBS) { zs += exp(z - m); }
    }
  }
  var pick = best;
  if (SAMPLE) {
    let w = reduceMax(gv, gi, tid);
    if (w.i != NONE) { pick = w.i; }
  }
  if (PROBS) {
    let Z = reduceSum(zs, tid);
    for (var v = tid; v < V; v += WG) {
      let z = scratch[sbase + v] * invT;
      scratch[sbase + v] = select(0.0, exp(z - m) / Z, z >= tau);
    }
  }
  if (tid == 0u) { finish(r, pick); }
}
