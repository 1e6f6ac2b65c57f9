// quant_common.wgsl — shared prelude of the load-time quantizers (quant_*.wgsl are appended to it).
//
// A weight builder uploads each chunk of checkpoint rows, raw, into `src` and dispatches one
// quantizer over it; the quantizer writes codes and scales straight into the weight's buffers.
// Buffers:  chunk uniform Chunk (below), written before every dispatch
//           src   u32[]  the chunk's raw little-endian bytes: rows × K elements of `dtype`, row-major,
//                        flat element e = r * K + k (2-byte dtypes: half e % 2 of word e / 2; the
//                        upload is zero-padded to whole words, so odd K and odd byte lengths work)
//           nonfinite  atomic<u32>[2]: [NaN / ±inf inputs seen, the first weight row holding one]
//                  (0, 0xffffffff initially; the loader reads it back after the weight is built
//                  and fails with bad-tensor: see NonFiniteCheck in src/quant/gpu-builder.ts)
// Dispatch: 1-D over `rows * units` threads (a unit is a group, a block or a word: see each
//           quantizer), workgroup 64, split over x and y: (min(G, 65535), ceil(G / 65535), 1).
//
// Bit-exactness: the CPU reference (test/ref/quant.ts) rounds every f32 operation once, so the
// kernels only use operations WGSL specifies exactly: f32 +, -, *, comparisons, `round` (half to
// even), bitcasts, integer ops. WGSL's `/` may be 2.5 ULP off, so division is `div_rn` below
// (integer long division, round to nearest even); absmax is a max over |bits| (integers), which
// no implementation can flush or reorder. div_rn is slow (25 iterations), so a quantizer divides
// once per block: it normalises weights by a block scale d as w * inv, inv = div_rn(1, d)
// (bitsandbytes normalises with w * (1 / absmax) too), `*` being correctly rounded. GPUs may flush
// subnormal operands and results of `*`, so `norm_by` below keeps that path to 2^-100 ≤ d <
// 2^100, where inv is normal and any product that meets a subnormal has |x| < 2^-26 (a code of
// 0.0 either way); outside it, it divides each weight exactly. The CPU reference branches alike.
// The first pass's scales (int8's s, nf4's absmax) are stored as bits (array<u32>), so no
// implementation can canonicalise a NaN or flush a subnormal on the way.

struct Chunk {
  row0: u32,   // first weight row this chunk fills
  rows: u32,   // rows in the chunk (threads = rows * units)
  dtype: u32,  // 0 = F32, 1 = F16, 2 = BF16
  K: u32,      // elements per row
  G: u32,      // group / block size along K
  KW: u32,     // u32 words per weight row
  NG: u32,     // groups / blocks per row (= ceil(K / G))
  units: u32,  // threads per row
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
  if (chunk.dtype == 0u) { return src[e]; }
  let h = (src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu;
  if (chunk.dtype == 2u) { return h << 16u; }
  return f16_bits_to_f32_bits(h);
}

fn load(e: u32) -> f32 { return bitcast<f32>(load_bits(e)); }

/** |x| as bits: for non-negative floats, integer order is float order. */
fn abs_bits(e: u32) -> u32 { return load_bits(e) & 0x7fffffffu; }

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
