/**
 * A fast non-cryptographic 64-bit checksum (two 32-bit multiply-rotate lanes over little-endian
 * u32 words; trailing bytes zero-padded) for cache entries: it detects truncation, bit rot and
 * partial writes at memory speed. It is not a defence against tampering — the downloaded files
 * themselves are checked with sha256.
 */
export class Checksum64 {
  private h1 = 0x243f6a88 | 0;
  private h2 = 0x85a308d3 | 0;
  private carry = new Uint8Array(4);
  private carryLen = 0;
  private n = 0;

  update(data: Uint8Array): this {
    this.n += data.length;
    let p = 0;
    if (this.carryLen > 0) {
      while (this.carryLen < 4 && p < data.length) this.carry[this.carryLen++] = data[p++]!;
      if (this.carryLen < 4) return this;
      this.word(this.carry[0]! | (this.carry[1]! << 8) | (this.carry[2]! << 16) | (this.carry[3]! << 24));
      this.carryLen = 0;
    }
    const words = (data.length - p) >>> 2;
    if (words > 0) {
      const off = data.byteOffset + p;
      let h1 = this.h1;
      let h2 = this.h2;
      if (off % 4 === 0) {
        const u = new Int32Array(data.buffer, off, words);
        for (let i = 0; i < words; i++) {
          const w = u[i]!;
          h1 = Math.imul(h1 ^ w, 0x9e3779b1);
          h1 = (h1 << 13) | (h1 >>> 19);
          h2 = Math.imul(h2 + w, 0x85ebca77);
          h2 ^= h2 >>> 15;
        }
      } else {
        for (let i = 0; i < words; i++) {
          const j = p + i * 4;
          const w = data[j]! | (data[j + 1]! << 8) | (data[j + 2]! << 16) | (data[j + 3]! << 24);
          h1 = Math.imul(h1 ^ w, 0x9e3779b1);
          h1 = (h1 << 13) | (h1 >>> 19);
          h2 = Math.imul(h2 + w, 0x85ebca77);
          h2 ^= h2 >>> 15;
        }
      }
      this.h1 = h1;
      this.h2 = h2;
      p += words * 4;
    }
    while (p < data.length) this.carry[this.carryLen++] = data[p++]!;
    return this;
  }

  private word(w: number): void {
    const h1 = Math.imul(this.h1 ^ w, 0x9e3779b1);
    this.h1 = (h1 << 13) | (h1 >>> 19);
    const h2 = Math.imul(this.h2 + w, 0x85ebca77);
    this.h2 = h2 ^ (h2 >>> 15);
  }

  /** 16 hex digits; mixes in the length and any trailing bytes. Does not change the state. */
  hex(): string {
    let h1 = this.h1;
    let h2 = this.h2;
    if (this.carryLen > 0) {
      let w = 0;
      for (let i = 0; i < this.carryLen; i++) w |= this.carry[i]! << (8 * i);
      h1 = Math.imul(h1 ^ w, 0x9e3779b1);
      h2 = Math.imul(h2 + w, 0x85ebca77);
    }
    h1 = Math.imul(h1 ^ (this.n >>> 0), 0x85ebca6b);
    h2 = Math.imul(h2 ^ Math.floor(this.n / 4294967296), 0xc2b2ae35);
    h1 ^= h2 >>> 13;
    h2 ^= h1 >>> 16;
    return (h1 >>> 0).toString(16).padStart(8, '0') + (h2 >>> 0).toString(16).padStart(8, '0');
  }
}
