// rope_kv.wgsl — rotary position embedding (Hugging Face rotate-half convention) on q and k,
// and the write of k and v into the KV cache, in one pass over the fused qkv projection.
//
// Math:     position p = step.pos0 + t. For head vector x (length D = head_dim), i < D/2:
//             c = cs[p, i].x = cos(p · inv_freq[i]),  s = cs[p, i].y = sin(p · inv_freq[i])
//             out[i]       = x[i] · c − x[i + D/2] · s
//             out[i + D/2] = x[i + D/2] · c + x[i] · s
//           q heads → q; k heads → kc at position p; v heads copied unrotated → vc at p.
// Buffers:  step uniform Step { T, pos0, … }
//           qkv f32[T * (NH + 2·NKV) · D]  row-major; per token [q heads | k heads | v heads]
//                                          (bias already added by the projection)
//           q   f32[T * NH · D]            row-major [token, head, dim]
//           kc  f32[NKV * CTX * D]         [kv head, position, dim] (this layer's cache)
//           vc  f32[NKV * CTX * D]         same layout
//           cs  vec2<f32>[CTX * D/2]       cos/sin table computed on the CPU (float64 → f32)
//                                          from the angle rounded to f32 as HF computes it
//                                          (inv_freq includes llama3 / linear rope scaling)
// Dispatch: (ceil(((NH + NKV) · D/2 + NKV · D) / 64), T, 1), workgroup 64: one thread per
//           rotated pair or per copied v element.

struct Step { T: u32, pos0: u32, headRows: u32, pad: u32 }

override NH: u32;
override NKV: u32;
override D: u32;
override CTX: u32;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> kc: array<f32>;
@group(0) @binding(4) var<storage, read_write> vc: array<f32>;
@group(0) @binding(5) var<storage, read> cs: array<vec2<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.y;
  let HALF = D / 2u;
  let nRot = (NH + NKV) * HALF;
  let total = nRot + NKV * D;
  let e = gid.x;
  if (t >= step.T || e >= total) { return; }
  let p = step.pos0 + t;
  if (p >= CTX) { return; }
  let row = t * (NH + 2u * NKV) * D;
  if (e < nRot) {
    let head = e / HALF;            // 0..NH-1 are q heads, NH..NH+NKV-1 are k heads
    let i = e % HALF;
    let src = row + head * D;
    let x1 = qkv[src + i];
    let x2 = qkv[src + i + HALF];
    let c = cs[p * HALF + i];
    let o1 = x1 * c.x - x2 * c.y;
    let o2 = x2 * c.x + x1 * c.y;
    if (head < NH) {
      let dst = (t * NH + head) * D;
      q[dst + i] = o1;
      q[dst + i + HALF] = o2;
    } else {
      let kh = head - NH;
      let dst = (kh * CTX + p) * D;
      kc[dst + i] = o1;
      kc[dst + i + HALF] = o2;
    }
  } else {
    let v = e - nRot;
    let kh = v / D;
    let d = v % D;
    vc[(kh * CTX + p) * D + d] = qkv[row + (NH + NKV) * D + v];
  }
}
