/**
 * Plain-TypeScript CPU references for every kernel and for a whole Llama forward pass. Written
 * straight from the math (HF LlamaForCausalLM semantics), float64 accumulation, no cleverness.
 */

export function rng(seed: number): () => number {
  // mulberry32
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randn(n: number, seed: number, std = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12);
    const v = r();
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v) * std;
  }
  return out;
}

export function rmsnorm(x: Float32Array, w: Float32Array, T: number, H: number, eps: number): Float32Array {
  const out = new Float32Array(T * H);
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let i = 0; i < H; i++) s += x[t * H + i] ** 2;
    const inv = 1 / Math.sqrt(s / H + eps);
    for (let i = 0; i < H; i++) out[t * H + i] = x[t * H + i] * inv * w[i];
  }
  return out;
}

/** y[m, n] = Σ_k x[m, k] W[n, k] + bias[n] (+ y0[m, n]) */
export function matmul(
  x: Float32Array,
  W: Float32Array,
  M: number,
  N: number,
  K: number,
  bias?: Float32Array,
  y0?: Float32Array,
): Float32Array {
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * W[n * K + k];
      if (bias) s += bias[n];
      if (y0) s += y0[m * N + n];
      y[m * N + n] = s;
    }
  }
  return y;
}

/** HF rotate-half RoPE of one head vector at position p. */
export function rope(x: Float32Array, p: number, invFreq: Float32Array): Float32Array {
  const D = x.length;
  const half = D / 2;
  const out = new Float32Array(D);
  for (let i = 0; i < half; i++) {
    const ang = Math.fround(p * invFreq[i]);
    const c = Math.cos(ang);
    const s = Math.sin(ang);
    out[i] = x[i] * c - x[i + half] * s;
    out[i + half] = x[i + half] * c + x[i] * s;
  }
  return out;
}

export function invFreqDefault(D: number, theta: number): Float32Array {
  const f = new Float32Array(D / 2);
  for (let i = 0; i < D / 2; i++) f[i] = 1 / Math.pow(theta, (2 * i) / D);
  return f;
}

/**
 * Causal GQA attention for queries at positions pos0..pos0+T-1 over keys/values 0..pos0+T-1.
 * q: [T, NH, D]; k, v: [P, NKV, D] (P = pos0 + T, already rotated). Returns [T, NH, D].
 */
export function attention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  pos0: number,
  NH: number,
  NKV: number,
  D: number,
): Float32Array {
  const out = new Float32Array(T * NH * D);
  const group = NH / NKV;
  for (let t = 0; t < T; t++) {
    const p = pos0 + t;
    for (let h = 0; h < NH; h++) {
      const g = Math.floor(h / group);
      const scores = new Float64Array(p + 1);
      let mx = -Infinity;
      for (let j = 0; j <= p; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[(t * NH + h) * D + d] * k[(j * NKV + g) * D + d];
        scores[j] = s / Math.sqrt(D);
        mx = Math.max(mx, scores[j]);
      }
      let sum = 0;
      for (let j = 0; j <= p; j++) {
        scores[j] = Math.exp(scores[j] - mx);
        sum += scores[j];
      }
      for (let d = 0; d < D; d++) {
        let a = 0;
        for (let j = 0; j <= p; j++) a += scores[j] * v[(j * NKV + g) * D + d];
        out[(t * NH + h) * D + d] = a / sum;
      }
    }
  }
  return out;
}

export function swiglu(gu: Float32Array, T: number, I: number): Float32Array {
  const out = new Float32Array(T * I);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < I; i++) {
      const g = gu[t * 2 * I + i];
      const u = gu[t * 2 * I + I + i];
      out[t * I + i] = (g / (1 + Math.exp(-g))) * u;
    }
  }
  return out;
}

export function argmax(a: ArrayLike<number>): number {
  let bi = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[bi]) bi = i;
  return bi;
}

export interface RefWeights {
  embed: Float32Array; // [V, H]
  lmHead: Float32Array; // [V, H] (= embed when tied)
  finalNorm: Float32Array;
  layers: Array<{
    inputNorm: Float32Array;
    postNorm: Float32Array;
    q: Float32Array;
    k: Float32Array;
    v: Float32Array;
    o: Float32Array;
    qBias?: Float32Array;
    kBias?: Float32Array;
    vBias?: Float32Array;
    gate: Float32Array;
    up: Float32Array;
    down: Float32Array;
  }>;
}

export interface RefDims {
  H: number;
  I: number;
  NH: number;
  NKV: number;
  D: number;
  V: number;
  eps: number;
  invFreq: Float32Array;
}

/** Full-sequence Llama forward (no cache): logits [T, V] for token ids. */
export function llamaForward(ids: number[], w: RefWeights, c: RefDims): Float32Array {
  const T = ids.length;
  const { H, I, NH, NKV, D, V, eps, invFreq } = c;
  const h = new Float32Array(T * H);
  for (let t = 0; t < T; t++) h.set(w.embed.subarray(ids[t] * H, ids[t] * H + H), t * H);
  for (const L of w.layers) {
    const xn = rmsnorm(h, L.inputNorm, T, H, eps);
    const q = matmul(xn, L.q, T, NH * D, H, L.qBias);
    const k = matmul(xn, L.k, T, NKV * D, H, L.kBias);
    const v = matmul(xn, L.v, T, NKV * D, H, L.vBias);
    for (let t = 0; t < T; t++) {
      for (let hh = 0; hh < NH; hh++) q.set(rope(q.subarray((t * NH + hh) * D, (t * NH + hh + 1) * D), t, invFreq), (t * NH + hh) * D);
      for (let hh = 0; hh < NKV; hh++) k.set(rope(k.subarray((t * NKV + hh) * D, (t * NKV + hh + 1) * D), t, invFreq), (t * NKV + hh) * D);
    }
    const a = attention(q, k, v, T, 0, NH, NKV, D);
    const o = matmul(a, L.o, T, H, NH * D);
    for (let i = 0; i < h.length; i++) h[i] += o[i];
    const xn2 = rmsnorm(h, L.postNorm, T, H, eps);
    const g = matmul(xn2, L.gate, T, I, H);
    const u = matmul(xn2, L.up, T, I, H);
    const gu = new Float32Array(T * 2 * I);
    for (let t = 0; t < T; t++) {
      gu.set(g.subarray(t * I, t * I + I), t * 2 * I);
      gu.set(u.subarray(t * I, t * I + I), t * 2 * I + I);
    }
    const act = swiglu(gu, T, I);
    const d = matmul(act, L.down, T, H, I);
    for (let i = 0; i < h.length; i++) h[i] += d[i];
  }
  const hf = rmsnorm(h, w.finalNorm, T, H, eps);
  return matmul(hf, w.lmHead, T, V, H);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = d; // NaN propagates as the max
  }
  return m;
}
