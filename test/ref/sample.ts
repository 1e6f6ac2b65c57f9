/**
 * CPU reference of sample.wgsl (float64, sort-based where it helps), for the sampling tests:
 * the processed logits, the kept set / distribution (top-k, top-p, min-p with HF's semantics and
 * nibble's documented conventions: ties at a threshold are kept together; tokens more than 64
 * below the max, after temperature, are never drawn), and the Gumbel-max draw with the same RNG.
 */
import { rngGumbel } from '../../src/generate/rng.ts';

export interface RefSampling {
  temperature: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  logitBias?: Record<number, number>;
}

/** Logits after penalties (counts) and bias, before temperature. */
export function refProcess(logits: number[], s: RefSampling, counts: number[] = []): number[] {
  const rp = s.repetitionPenalty ?? 1;
  const pp = s.presencePenalty ?? 0;
  const fp = s.frequencyPenalty ?? 0;
  const u = logits.map((l, v) => {
    const c = counts[v] ?? 0;
    if (c > 0) {
      l = l > 0 ? l / rp : l * rp;
      l = l - c * fp - pp;
    }
    return l;
  });
  for (const [k, b] of Object.entries(s.logitBias ?? {})) u[Number(k)] += b;
  return u;
}

/** The kept distribution (0 outside the kept set) for processed logits u (sort-based, O(V log V)). */
export function refKept(u: ArrayLike<number>, s: RefSampling): number[] {
  const V = u.length;
  const z = Array.from(u, (x) => x / s.temperature);
  let m = -Infinity;
  for (const x of z) if (x > m) m = x;
  const e = z.map((x) => Math.exp(x - m));
  const order = z.map((_, i) => i).sort((a, b) => z[b] - z[a]);
  // tau: the kept set is {z >= tau}
  let tau = m - 64;
  if ((s.minP ?? 0) > 0) tau = Math.max(tau, m + Math.log(s.minP!));
  // top-k: v kept iff #{z > z_v} < k  ⇔  z_v >= the k-th largest value
  let tauK = m - 64;
  const k = s.topK ?? 0;
  if (k > 0 && k < V) tauK = Math.max(tauK, z[order[k - 1]]);
  tau = Math.max(tau, tauK);
  const p = s.topP ?? 1;
  if (p < 1) {
    let Z = 0;
    for (const v of order) if (z[v] >= tauK) Z += e[v];
    // walk groups of equal values from the top; a group is kept iff the mass strictly above it < pZ
    let above = 0;
    let tauP = Infinity;
    for (let i = 0; i < V; ) {
      const val = z[order[i]];
      if (val < tauK) break;
      if (!(above < p * Z)) break;
      tauP = val;
      let j = i;
      while (j < V && z[order[j]] === val) above += e[order[j++]];
      i = j;
    }
    tau = Math.max(tau, tauP);
  }
  let S = 0;
  for (let v = 0; v < V; v++) if (z[v] >= tau) S += e[v];
  return e.map((x, v) => (z[v] >= tau ? x / S : 0));
}

/** The token sample.wgsl draws at `pos` with `seed` (Gumbel-max over the kept set). */
export function refDraw(u: number[], s: RefSampling, seed: number, pos: number): number {
  const kept = refKept(u, s);
  let best = -Infinity;
  let bi = -1;
  for (let v = 0; v < u.length; v++) {
    if (kept[v] <= 0) continue;
    const g = u[v] / s.temperature + rngGumbel(v, pos, seed, 0);
    if (g > best) {
      best = g;
      bi = v;
    }
  }
  return bi;
}

/** Pearson chi-square statistic of observed counts against expected probabilities (cells with p > 0). */
export function chiSquare(counts: number[], probs: number[]): { stat: number; df: number } {
  const n = counts.reduce((a, b) => a + b, 0);
  let stat = 0;
  let df = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    const e = n * probs[i];
    stat += (counts[i] - e) ** 2 / e;
    df++;
  }
  return { stat, df };
}

/** Upper critical value of chi-square with df degrees of freedom at significance alpha (Wilson–Hilferty + refinement by bisection on the regularized gamma). */
export function chiSquareCritical(df: number, alpha: number): number {
  // bisection on the survival function computed from the regularized upper incomplete gamma
  let lo = 0;
  let hi = df + 20 * Math.sqrt(2 * df) + 50;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (chiSquareSurvival(mid, df) > alpha) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** P(X > x) for X ~ chi-square(df). */
export function chiSquareSurvival(x: number, df: number): number {
  return 1 - regularizedLowerGamma(df / 2, x / 2);
}

function regularizedLowerGamma(a: number, x: number): number {
  if (x <= 0) return 0;
  if (x < a + 1) {
    // series
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 1000; n++) {
      term *= x / (a + n);
      sum += term;
      if (term < sum * 1e-15) break;
    }
    return sum * Math.exp(-x + a * Math.log(x) - logGamma(a));
  }
  // continued fraction for the upper gamma (Lentz)
  let b = x + 1 - a;
  let c = 1 / 1e-300;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < 1e-300) d = 1e-300;
    c = b + an / c;
    if (Math.abs(c) < 1e-300) c = 1e-300;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return 1 - Math.exp(-x + a * Math.log(x) - logGamma(a)) * h;
}

function logGamma(x: number): number {
  // Lanczos approximation (g = 7, n = 9)
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}
