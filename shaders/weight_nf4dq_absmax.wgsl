// weight_nf4dq_absmax.wgsl — nf4-dq's double-quantized block scales (appended to weight_nf4.wgsl;
// written by quant_nf4dq.wgsl).
//
// Math:     absmax_i = dmap[q_i] · stats[1 + i / 256] + stats[0]    i = n * NG + b (flat block index)
//           dmap = bitsandbytes' create_dynamic_map(signed=True): for i = 0..6, the 2^i midpoints
//           of torch.linspace(0.1, 1, 2^i + 1) times ±10^(i-6), plus 0 and 1, sorted. The kernels
//           evaluate it with torch's f32 operations (dyn_value below), so
//           no weight carries a copy; where a GPU fuses a multiply-add the value may differ from the
//           quantizer's exact map by an ulp.
// Buffers:  qabs  u32[ceil(nb / 4)]         byte i % 4 of word i / 4 = q_i (8-bit code)
//           stats f32[1 + ceil(nb / 256)]   stats[0] = offset (mean absmax), stats[1 + j] = absmax2 of group j
// The map is evaluated per chunk (once per 32 weights) rather than kept in a workgroup table, so
// the matmul needs no barrier.

@group(0) @binding(WB + 1u) var<storage, read> qabs: array<u32>;
@group(0) @binding(WB + 2u) var<storage, read> stats: array<f32>;

/** linspace(0.1, 1, 2^e + 1)[j] as torch's CPU kernel computes it: from the nearer end. */
fn linspace_01(j: u32, e: u32) -> f32 {
  let step = ldexp(bitcast<f32>(0x3f666666u), -i32(e)); // f32(1 - f32(0.1)) / 2^e, exact
  let steps = (1u << e) + 1u;
  if (j < steps / 2u) { return bitcast<f32>(0x3dcccccdu) + step * f32(j); }
  return 1.0 - step * f32(steps - 1u - j);
}

/** dmap[q] for q < 256 (ascending; dmap[127] = 0, dmap[255] = 1, dmap[q] = -dmap[254 - q]). */
fn dyn_value(q: u32) -> f32 {
  if (q == 127u) { return 0.0; }
  if (q == 255u) { return 1.0; }
  let p = select(126u - q, q - 128u, q > 127u);   // rank among the 127 magnitudes
  let e = firstLeadingBit(p + 1u);                // decade: 2^e values in [10^(e-7), 10^(e-6))
  let j = p + 1u - (1u << e);
  let mean = (linspace_01(j, e) + linspace_01(j + 1u, e)) * 0.5;
  var p10 = 1.0;                                  // f32(10^(e-6))
  switch e {
    case 0u: { p10 = bitcast<f32>(0x358637bdu); }
    case 1u: { p10 = bitcast<f32>(0x3727c5acu); }
    case 2u: { p10 = bitcast<f32>(0x38d1b717u); }
    case 3u: { p10 = bitcast<f32>(0x3a83126fu); }
    case 4u: { p10 = bitcast<f32>(0x3c23d70au); }
    case 5u: { p10 = bitcast<f32>(0x3dcccccdu); }
    default: {}
  }
  let v = p10 * mean;
  return select(-v, v, q > 127u);
}

fn block_absmax(i: u32) -> f32 {
  let q = (qabs[i / 4u] >> (8u * (i % 4u))) & 0xffu;
  return dyn_value(q) * stats[1u + i / 256u] + stats[0];
}
