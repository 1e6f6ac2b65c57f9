// quant_common.wgsl — shared prelude of the load-time quantizers (quant_*.wgsl are appended to it).
//
// A weight builder uploads each chunk of checkpoint rows, raw, into `src` and dispatches one
// quantizer over it; the quantizer writes codes and scales straight into the weight's buffers.
// Buffers:  chunk uniform Chunk (below), written before every dispatch
//           src   u32[]  the chunk's raw little-endian bytes: rows × K elements of DTYPE, row-major,
//                        flat element e = r * K + k (2-byte dtypes: half e % 2 of word e / 2; the
//                        upload is zero-padded to whole words, so odd K and odd byte lengths work)
//           nonfinite  atomic<u32>[2]: [NaN / ±inf inputs seen, the first weight row holding one]
//                  (0, 0xffffffff initially; the loader reads it back after the weight is built
//                  and fails with bad-tensor: see NonFiniteCheck in src/quant/gpu-builder.ts)
// Constant: DTYPE, the checkpoint dtype (0 = F32, 1 = F16, 2 = BF16), a pipeline-overridable
//           constant: ChunkQuantizer builds one pipeline per dtype it meets, so the decode below
//           has no per-element branch on the dtype.
// Dispatch: 1-D over `rows * units` threads (a unit is a group, a block or a word: see each
//           quantizer), workgroup 64, split over x and y: (min(G, 65535), ceil(G / 65535), 1).
// Speed:    a thread reads its weights 4 at a time (quad_bits: one u32 word per two 2-byte
//           elements, vector decode without branches) and normalises a block in a loop with no
//           per-weight branch; shifts by constants and multiplies only (CPU-backed adapters such
//           as SwiftShader emulate variable shifts lane by lane).
//
// Bit-exactness: the CPU reference (test/ref/quant.ts) rounds every f32 operation once, so the
// kernels only use operations WGSL specifies exactly: f32 +, -, *, comparisons, `round` (half to
// even), bitcasts, integer ops. WGSL's `/` may be 2.5 ULP off, so division is `div_rn` below
// (integer long division, round to nearest even); absmax is a max over |bits| (integers), which
// no implementation can flush or reorder. div_rn is slow (25 iterations), so a quantizer divides
// once per block: it normalises weights by a block scale d as w * inv, inv = div_rn(1, d)
// (bitsandbytes normalises with w * (1 / absmax) too), `*` being correctly rounded. GPUs may flush
// subnormal operands and results of `*`, so `recip_ok` below keeps that path to 2^-100 ≤ d <
// 2^100, where inv is normal and any product that meets a subnormal has |x| < 2^-26 (a code of
// 0.0 either way); outside it, it divides each weight exactly (int8 and nf4 test recip_ok once
// per block and run one loop or the other; nf4-dq tests it per value, in `norm_by`). The CPU reference branches alike.
// The first pass's scales (int8's s, nf4's absmax) are stored as bits (array<u32>), so no
// implementation can canonicalise a NaN or flush a subnormal on the way.

override DTYPE: u32 = 0u;

struct Chunk {
  row0: u32,   // first weight row this chunk fills
  rows: u32,   // rows in the chunk (threads = rows * units)
  K: u32,      // elements per row
  G: u32,      // group / block size along K
  KW: u32,     // u32 words per weight row
  NG: u32,     // groups / blocks per row (= ceil(K / G))
  units: u32,  // threads per row
  pad: u32,
}

@group(0) @binding(0) var<uniform> chunk: Chunk;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(6) var<storage, read_write> nonfinite: array<atomic<u32>, 2>;

/** Whether f32 bits are NaN or ±inf. */
fn nonfinite_bits(b: u32) -> bool { return (b & 0x7fffffffu) >= 0x7f800000u; }

/** Records n > 0 non-finite inputs in weight row `row` (every quantizer's main entry calls it). */
fn note_nonfinite(row: u32, n: u32) {
  if (n > 0u) {
    atomicAdd(&nonfinite[0], n);
    atomicMin(&nonfinite[1], row);
  }
}

/** The thread's index: (unit within the row, row within the chunk); valid when t < rows * units. */
fn thread_index(wid: vec3<u32>, lid: u32) -> u32 {
  return (wid.x + wid.y * 65535u) * 64u + lid;
}

/** f16 bits → f32 bits, exact (subnormals normalised; inf/NaN kept). */
fn f16_bits_to_f32_bits(h: u32) -> u32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0x1fu) { return sign | 0x7f800000u | (m << 13u); }
  if (e != 0u) { return sign | ((e + 112u) << 23u) | (m << 13u); }
  if (m == 0u) { return sign; }
  let s = countLeadingZeros(m) - 21u;          // shifts that bring the leading 1 to bit 10
  return sign | ((113u - s) << 23u) | (((m << s) & 0x3ffu) << 13u);
}

/** Bits of the f32 value of element e of the chunk. */
fn load_bits(e: u32) -> u32 {
  if (DTYPE == 0u) { return src[e]; }
  let h = (src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu;
  if (DTYPE == 2u) { return h * 65536u; }
  return f16_bits_to_f32_bits(h);
}

/** f16 bits → f32 bits for 4 values at once, exact like f16_bits_to_f32_bits, without branches. */
fn f16x4_bits_to_f32_bits(h: vec4<u32>) -> vec4<u32> {
  let sign = (h & vec4(0x8000u)) * 65536u;
  let em = h & vec4(0x7fffu);                              // exponent and mantissa, 15 bits
  let normal = em * 8192u + 0x38000000u;                   // rebias: (e + 112) << 23 | m << 13
  let special = (em * 8192u) | vec4(0x7f800000u);           // e = 31: inf / NaN, payload kept
  let sub = bitcast<vec4<u32>>(vec4<f32>(em) * 5.9604644775390625e-8); // m · 2^-24, exact and normal
  let mag = select(select(normal, special, em >= vec4(0x7c00u)), sub, em < vec4(0x400u));
  return sign | mag;
}

/**
 * Bits of the f32 values of elements e .. e + 3 of the chunk, for any e (2-byte dtypes: two or, at
 * an odd e, three word loads). Lanes past the chunk's data hold arbitrary bits (a read past `src`
 * is clamped by WebGPU's robust access): callers mask them.
 */
fn quad_bits(e: u32) -> vec4<u32> {
  if (DTYPE == 0u) { return vec4(src[e], src[e + 1u], src[e + 2u], src[e + 3u]); }
  let i = e >> 1u;
  let a = src[i];
  let b = src[i + 1u];
  var hi: vec4<u32>;                                       // each value in the top half of a word
  if ((e & 1u) == 0u) {
    hi = vec4(a * 65536u, a, b * 65536u, b);
  } else {
    hi = vec4(a, b * 65536u, b, src[i + 2u] * 65536u);
  }
  hi &= vec4(0xffff0000u);
  if (DTYPE == 2u) { return hi; }
  return f16x4_bits_to_f32_bits(hi >> vec4(16u));
}

/** Lanes of the quad at row offset k that lie before the end k1 (of a group, a block, a row). */
fn quad_live(k: u32, k1: u32) -> vec4<bool> { return vec4(k) + vec4(0u, 1u, 2u, 3u) < vec4(k1); }

/**
 * One pass over row elements k0 .. k1 - 1 (k0 a multiple of 4) of the row starting at element e0:
 * (max |w| as bits, the count of NaN / ±inf inputs, a corrupt checkpoint).
 */
fn scan_block(e0: u32, k0: u32, k1: u32) -> vec2<u32> {
  var amax4 = vec4(0u);
  var bad = 0u;
  for (var k = k0; k < k1; k += 4u) {
    let live = quad_live(k, k1);
    let v = quad_bits(e0 + k);
    amax4 = max(amax4, select(vec4(0u), v & vec4(0x7fffffffu), live));
    bad += count_nonfinite(v, live);
  }
  return vec2(max(max(amax4.x, amax4.y), max(amax4.z, amax4.w)), bad);
}

/** w / d for the live lanes (div_rn, exact; the others 0): blocks outside recip_ok's range. */
fn div_quad(w: vec4<f32>, d: f32, live: vec4<bool>) -> vec4<f32> {
  var x = vec4(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (live[i]) { x[i] = div_rn(w[i], d); }
  }
  return x;
}

/** Non-finite lanes (NaN / ±inf) among the live ones, counted. */
fn count_nonfinite(bits: vec4<u32>, live: vec4<bool>) -> u32 {
  let n = select(vec4(0u), vec4(1u), live & ((bits & vec4(0x7fffffffu)) >= vec4(0x7f800000u)));
  return n.x + n.y + n.z + n.w;
}

/**
 * a / b rounded to nearest even, like an IEEE f32 division (and Math.fround(a / b) on the CPU),
 * for finite a and finite non-zero b. Subnormal inputs and results are handled exactly.
 */
fn div_rn(a: f32, b: f32) -> f32 {
  let ua = bitcast<u32>(a);
  let ub = bitcast<u32>(b);
  let sign = (ua ^ ub) & 0x80000000u;
  var ea = i32((ua >> 23u) & 0xffu);
  var ma = ua & 0x7fffffu;
  var eb = i32((ub >> 23u) & 0xffu);
  var mb = ub & 0x7fffffu;
  if (ea == 0 && ma == 0u) { return bitcast<f32>(sign); }
  // 24-bit significands with the leading 1 at bit 23 (subnormals normalised)
  if (ea == 0) { let s = countLeadingZeros(ma) - 8u; ma <<= s; ea = 1 - i32(s); } else { ma |= 0x800000u; }
  if (eb == 0) { let s = countLeadingZeros(mb) - 8u; mb <<= s; eb = 1 - i32(s); } else { mb |= 0x800000u; }
  var e = ea - eb + 127;                       // biased exponent of the quotient
  if (ma < mb) { ma <<= 1u; e -= 1; }          // now 1 ≤ ma / mb < 2
  // 25 quotient bits (24 + a guard bit) by restoring division; the remainder is the sticky bit
  var q = 0u;
  var r = ma;
  for (var i = 0u; i < 25u; i++) {
    q <<= 1u;
    if (r >= mb) { r -= mb; q |= 1u; }
    r <<= 1u;
  }
  // drop 1 bit (normal result) or more (subnormal), rounding to nearest even
  var shift = 1u;
  if (e < 1) { shift = u32(min(2 - e, 26)); }
  var m = q >> shift;
  let rest = q & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (r != 0u || (m & 1u) == 1u))) { m += 1u; }
  var bits = m;                                // a carry out of the significand bumps the exponent
  if (e >= 1) { bits = (u32(e - 1) << 23u) + m; }
  if (bits >= 0x7f800000u) { bits = 0x7f800000u; } // overflow → inf
  return bitcast<f32>(sign | bits);
}

/** Whether normalising by d (bits of a positive finite f32) may multiply by div_rn(1, d): 2^-100 ≤ d < 2^100. */
fn recip_ok(d_bits: u32) -> bool { return d_bits >= 0x0d800000u && d_bits < 0x71800000u; }

/** The once-per-block reciprocal of d for `norm_by` (unused, 0, when !recip_ok(d)). */
fn block_recip(d: f32) -> f32 {
  if (recip_ok(bitcast<u32>(d))) { return div_rn(1.0, d); }
  return 0.0;
}

/** w / d as the quantizers compute it: w * inv (inv = block_recip(d)), or div_rn(w, d) outside recip_ok. */
fn norm_by(w: f32, d: f32, inv: f32) -> f32 {
  if (recip_ok(bitcast<u32>(d))) { return w * inv; }
  return div_rn(w, d);
}
