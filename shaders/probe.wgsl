// probe.wgsl — the roofline probe: how fast this adapter streams a large buffer from memory.
//
// Math:     each invocation g sums the vec4<f32> elements of `src` it is assigned and writes
//           out[g] = Σ (x + y + z + w) (one partial sum per invocation, so no load can be elided);
//           the host divides the bytes of `src` by the GPU time of the dispatch (GB/s).
//           Which elements an invocation reads is the MODE override:
//             MODE 0  grid-stride: element i goes to invocation i mod N (N = all invocations);
//                     neighbouring invocations read neighbouring 16 bytes on every iteration
//             MODE 1  slab: invocation g reads the contiguous elements [g·per, (g+1)·per)
//             MODE 2  block: workgroup b reads the contiguous elements [b·per, (b+1)·per),
//                     its invocations strided by WG inside the block (coalesced)
// Buffers:  p   uniform Params { n: u32 (vec4 elements of src), per: u32 (elements per slab
//               (MODE 1) or per block (MODE 2); unused by MODE 0), pad, pad }
//           src vec4<f32>[n]  (read only; `fill` writes it once beforehand)
//           out f32[N]        one partial sum per invocation, N = WG · workgroups
// Dispatch: `main`: (Gx, Gy, 1) workgroups of WG (override, e.g. 64 or 256) invocations; the
//           workgroup index is x + y · Gx (y > 1 only past 65535 workgroups).
//           `fill`: (ceil(n / 256) split over x and y, 1) workgroups of 256: src[i] = small
//           non-zero values (so the probe never reads a zero page).

struct Params { n: u32, per: u32, pad0: u32, pad1: u32 }

override WG: u32 = 256u;
override MODE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let group = wid.x + wid.y * nwg.x;
  let g = group * WG + lid;
  let groups = nwg.x * nwg.y;
  var acc = vec4<f32>(0.0);
  if (MODE == 0u) {
    let stride = groups * WG;
    for (var i = g; i < p.n; i += stride) {
      acc += src[i];
    }
  } else if (MODE == 1u) {
    let start = g * p.per;
    let end = min(start + p.per, p.n);
    for (var i = start; i < end; i++) {
      acc += src[i];
    }
  } else {
    let start = group * p.per;
    let end = min(start + p.per, p.n);
    for (var i = start + lid; i < end; i += WG) {
      acc += src[i];
    }
  }
  out[g] = acc.x + acc.y + acc.z + acc.w;
}

@group(0) @binding(0) var<uniform> fp: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= fp.n) { return; }
  let f = f32(i & 1023u) * 0.0009765625;
  dst[i] = vec4<f32>(f, f + 0.25, f + 0.5, f + 0.75);
}
