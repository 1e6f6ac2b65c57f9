/**
 * The synthetic weights' random numbers (src/node/synth.ts): xoshiro128** seeded through splitmix32
 * from hash(seed, name); normals by the ziggurat method (Marsaglia & Tsang 2000, 128 layers), with the
 * layer index taken from bits not used for the value (Doornik's fix), so samples are exactly N(0,1) up
 * to float rounding and cost ~1 PRNG call each. The streams are part of the synthetic checkpoints'
 * bytes (the bench's `.cache/synth/` relies on them): changing a value here changes every checkpoint,
 * so bump synth.ts's GENERATOR_VERSION with it.
 */

function fnv1a(s: string, h = 0x811c9dc5): number {
  const bytes = new TextEncoder().encode(s);
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  return h >>> 0;
}

function splitmix32(state: number): () => number {
  let a = state | 0;
  return () => {
    a = (a + 0x9e3779b9) | 0;
    let t = a ^ (a >>> 16);
    t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
}

// Ziggurat tables (128 layers, values scaled for signed 32-bit integers).
const ZIG_R = 3.442619855899;
const ZK = new Float64Array(128);
const ZW = new Float64Array(128);
const ZF = new Float64Array(128);
{
  const m1 = 2147483648.0;
  const vn = 9.91256303526217e-3;
  let dn = ZIG_R;
  let tn = dn;
  const q = vn / Math.exp(-0.5 * dn * dn);
  ZK[0] = (dn / q) * m1;
  ZK[1] = 0;
  ZW[0] = q / m1;
  ZW[127] = dn / m1;
  ZF[0] = 1;
  ZF[127] = Math.exp(-0.5 * dn * dn);
  for (let i = 126; i >= 1; i--) {
    dn = Math.sqrt(-2 * Math.log(vn / dn + Math.exp(-0.5 * dn * dn)));
    ZK[i + 1] = (dn / tn) * m1;
    tn = dn;
    ZF[i] = Math.exp(-0.5 * dn * dn);
    ZW[i] = dn / m1;
  }
}

/** A stream of N(0,1) samples (xoshiro128** + ziggurat), deterministic for (seed, key). */
export class NormalStream {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number, key: string) {
    const sm = splitmix32(fnv1a(key, fnv1a(`nibble-synth:${seed >>> 0}`)));
    this.s0 = sm() | 0;
    this.s1 = sm() | 0;
    this.s2 = sm() | 0;
    this.s3 = sm() | 0;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next 32 random bits (xoshiro128**) as an unsigned integer. */
  nextU32(): number {
    const s1 = this.s1;
    const r = Math.imul(s1, 5);
    const out = Math.imul((r << 7) | (r >>> 25), 9) >>> 0;
    const t = s1 << 9;
    let s0 = this.s0;
    let s2 = this.s2;
    let s3 = this.s3;
    s2 ^= s0;
    s3 ^= s1;
    this.s1 = s1 ^ s2;
    s0 ^= s3;
    s2 ^= t;
    this.s0 = s0;
    this.s2 = s2;
    this.s3 = (s3 << 11) | (s3 >>> 21);
    return out;
  }

  /** Uniform in (0, 1). */
  private uni(): number {
    return ((this.nextU32() >>> 8) + 0.5) / 16777216;
  }

  /** One N(0,1) sample. */
  next(): number {
    return this.finish(this.nextU32());
  }

  /** The ziggurat step for the 32 random bits `u`, drawing more bits when `u` is rejected. */
  private finish(u: number): number {
    for (;;) {
      const iz = u & 127;
      const hz = (u & ~127) | 0; // sign and magnitude from the upper 25 bits
      const x = hz * ZW[iz]!;
      if (Math.abs(hz) < ZK[iz]!) return x;
      if (iz === 0) {
        // the tail beyond R
        let tx: number;
        let ty: number;
        do {
          tx = -Math.log(this.uni()) / ZIG_R;
          ty = -Math.log(this.uni());
        } while (ty + ty < tx * tx);
        return hz > 0 ? ZIG_R + tx : -ZIG_R - tx;
      }
      if (ZF[iz]! + this.uni() * (ZF[iz - 1]! - ZF[iz]!) < Math.exp(-0.5 * x * x)) return x;
      u = this.nextU32();
    }
  }

  /** out[i] = mean + std * z_i for the next out.length samples of the stream (same values as next()). */
  fill(out: Float32Array, mean: number, std: number): void {
    const n = out.length;
    let s0 = this.s0;
    let s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    for (let i = 0; i < n; i++) {
      // xoshiro128** inline
      const r = Math.imul(s1, 5);
      const u = Math.imul((r << 7) | (r >>> 25), 9);
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      // ziggurat fast path (~98.8% of draws)
      const iz = u & 127;
      const hz = u & ~127;
      if (Math.abs(hz) < ZK[iz]!) {
        out[i] = mean + std * (hz * ZW[iz]!);
        continue;
      }
      this.s0 = s0;
      this.s1 = s1;
      this.s2 = s2;
      this.s3 = s3;
      out[i] = mean + std * this.finish(u >>> 0);
      s0 = this.s0;
      s1 = this.s1;
      s2 = this.s2;
      s3 = this.s3;
    }
    this.s0 = s0;
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
  }
}
