import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Sha256, sha256Hex } from '../../src/util/sha256.ts';
import { Checksum64 } from '../../src/cache/checksum.ts';

const ref = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('sha256 (incremental, plain TS)', () => {
  it('matches node:crypto on the FIPS test vectors and every length 0..300', () => {
    expect(sha256Hex(new Uint8Array(0))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(sha256Hex(new TextEncoder().encode('abc'))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(sha256Hex(new TextEncoder().encode('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'))).toBe(
      '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
    );
    for (let n = 0; n <= 300; n++) {
      const b = new Uint8Array(randomBytes(n));
      expect(sha256Hex(b), `length ${n}`).toBe(ref(b));
    }
  });

  it('gives the same digest for any split into updates (random splits, unaligned views)', () => {
    const data = new Uint8Array(randomBytes(1 << 20));
    const want = ref(data);
    let seed = 7;
    const rnd = (m: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % m);
    for (let trial = 0; trial < 6; trial++) {
      const h = new Sha256();
      let p = 0;
      while (p < data.length) {
        const n = Math.min(data.length - p, trial === 0 ? 1 + rnd(7) : 1 + rnd(200_000));
        h.update(data.subarray(p, p + n));
        p += n;
      }
      expect(h.bytes).toBe(data.length);
      expect(h.hex()).toBe(want);
    }
  });

  it('refuses updates after digest', () => {
    const h = new Sha256().update(new Uint8Array([1, 2, 3]));
    h.hex();
    expect(() => h.update(new Uint8Array([4]))).toThrow(/after digest/);
    expect(h.hex()).toBe(ref(new Uint8Array([1, 2, 3]))); // digest is stable
  });
});

describe('Checksum64 (cache entries)', () => {
  it('is independent of chunking and detects a flipped bit, truncation and extension', () => {
    const data = new Uint8Array(randomBytes(100_003));
    const whole = new Checksum64().update(data).hex();
    const parts = new Checksum64();
    for (let p = 0; p < data.length; p += 4097) parts.update(data.subarray(p, Math.min(data.length, p + 4097)));
    expect(parts.hex()).toBe(whole);
    const odd = new Checksum64();
    odd.update(data.subarray(0, 3)).update(data.subarray(3, 10)).update(data.subarray(10));
    expect(odd.hex()).toBe(whole);
    const flipped = data.slice();
    flipped[54_321] ^= 0x10;
    expect(new Checksum64().update(flipped).hex()).not.toBe(whole);
    expect(new Checksum64().update(data.subarray(0, data.length - 1)).hex()).not.toBe(whole);
    const longer = new Uint8Array(data.length + 4);
    longer.set(data);
    expect(new Checksum64().update(longer).hex()).not.toBe(whole);
  });
});
