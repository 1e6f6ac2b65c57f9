/**
 * Incremental SHA-256 (FIPS 180-4) in plain TypeScript. WebCrypto's `digest` needs the whole
 * message at once; the loader hashes multi-GB weight files chunk by chunk as they stream, so it
 * needs `update()` / `digest()`. Speed matters (every LFS byte goes through here): the block
 * function works on local variables and a reused Int32Array schedule.
 *
 *   const h = new Sha256(); h.update(a); h.update(b); h.hex() === sha256(a ‖ b)
 */
import { NibbleError } from '../errors.ts';

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
  0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
  0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
  0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
  0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

export class Sha256 {
  private readonly h = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  private readonly w = new Int32Array(64);
  /** Partial block carried between updates. */
  private readonly buf = new Uint8Array(64);
  private bufLen = 0;
  /** Message length in bytes (exact up to 2^53). */
  private length = 0;
  private done = false;

  /** Bytes hashed so far. */
  get bytes(): number {
    return this.length;
  }

  update(data: Uint8Array): this {
    if (this.done) throw new NibbleError('bad-argument', 'Sha256: update() after digest()');
    let pos = 0;
    const n = data.length;
    this.length += n;
    if (this.bufLen > 0) {
      const take = Math.min(64 - this.bufLen, n);
      this.buf.set(data.subarray(0, take), this.bufLen);
      this.bufLen += take;
      pos = take;
      if (this.bufLen < 64) return this;
      this.blocks(this.buf, 0, 64);
      this.bufLen = 0;
    }
    const whole = (n - pos) & ~63;
    if (whole > 0) {
      this.blocks(data, pos, pos + whole);
      pos += whole;
    }
    if (pos < n) {
      this.buf.set(data.subarray(pos), 0);
      this.bufLen = n - pos;
    }
    return this;
  }

  /** The 32-byte digest; the hasher cannot be updated afterwards. */
  digest(): Uint8Array {
    if (!this.done) {
      const bitsHi = Math.floor(this.length / 0x20000000); // length * 8 / 2^32
      const bitsLo = (this.length * 8) >>> 0;
      const pad = new Uint8Array(this.bufLen < 56 ? 64 : 128);
      pad.set(this.buf.subarray(0, this.bufLen));
      pad[this.bufLen] = 0x80;
      const v = new DataView(pad.buffer);
      v.setUint32(pad.length - 8, bitsHi);
      v.setUint32(pad.length - 4, bitsLo);
      this.blocks(pad, 0, pad.length);
      this.done = true;
    }
    const out = new Uint8Array(32);
    const v = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) v.setInt32(i * 4, this.h[i]!);
    return out;
  }

  /** Lowercase hex of the digest. */
  hex(): string {
    let s = '';
    for (const b of this.digest()) s += (b < 16 ? '0' : '') + b.toString(16);
    return s;
  }

  /** Compresses the 64-byte blocks in data[start, end). */
  private blocks(data: Uint8Array, start: number, end: number): void {
    const w = this.w;
    const H = this.h;
    let h0 = H[0]!, h1 = H[1]!, h2 = H[2]!, h3 = H[3]!, h4 = H[4]!, h5 = H[5]!, h6 = H[6]!, h7 = H[7]!;
    for (let p = start; p < end; p += 64) {
      for (let i = 0; i < 16; i++) {
        const j = p + i * 4;
        w[i] = (data[j]! << 24) | (data[j + 1]! << 16) | (data[j + 2]! << 8) | data[j + 3]!;
      }
      for (let i = 16; i < 64; i++) {
        let u = w[i - 2]!;
        const s1 = ((u >>> 17) | (u << 15)) ^ ((u >>> 19) | (u << 13)) ^ (u >>> 10);
        u = w[i - 15]!;
        const s0 = ((u >>> 7) | (u << 25)) ^ ((u >>> 18) | (u << 14)) ^ (u >>> 3);
        w[i] = (((s1 + w[i - 7]!) | 0) + ((s0 + w[i - 16]!) | 0)) | 0;
      }
      let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
      for (let i = 0; i < 64; i++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const t1 = (((S1 + ((e & f) ^ (~e & g))) | 0) + ((h + ((K[i]! + w[i]!) | 0)) | 0)) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g;
        g = f;
        f = e;
        e = (d + t1) | 0;
        d = c;
        c = b;
        b = a;
        a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0;
      h1 = (h1 + b) | 0;
      h2 = (h2 + c) | 0;
      h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0;
      h5 = (h5 + f) | 0;
      h6 = (h6 + g) | 0;
      h7 = (h7 + h) | 0;
    }
    H[0] = h0;
    H[1] = h1;
    H[2] = h2;
    H[3] = h3;
    H[4] = h4;
    H[5] = h5;
    H[6] = h6;
    H[7] = h7;
  }
}

/** One-shot SHA-256 as lowercase hex. */
export function sha256Hex(data: Uint8Array): string {
  return new Sha256().update(data).hex();
}
