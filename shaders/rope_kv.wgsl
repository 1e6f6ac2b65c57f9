// rope_kv.wgsl — rotary position embedding (Hugging Face rotate-half convention) on q and k,
// and the write of k and v into the KV cache, in one pass over the fused qkv projection.
//
// Math:     position p = step.pos0 + t. For head vector x (length D = head_dim), i < D/2:
//             c = cs[p, i].x = cos(p · inv_freq[i]),  s = cs[p, i].y = sin(p · inv_freq[i])
//             out[i]       = x[i] · c − x[i + D/2] · s
//             out[i + D/2] = x[i + D/2] · c + x[i] · s
//           q heads → q; k heads → kc at position p; v heads copied unrotated → vc at p.
//           KV16: the cache holds f16 (pack2x16float of two adjacent dims, low half first; no
//           shader-f16 needed), half the bytes; q stays f32.
// Buffers:  step uniform Step { T, pos0, … }
//           qkv f32[T * (NH + 2·NKV) · D]  row-major; per token [q heads | k heads | v heads]
//                                          (bias already added by the projection)
//           q   f32[T * NH · D]            row-major [token, head, dim]
//           kc  u32[NKV * CTX * D]         [kv head, position, dim] (this layer's cache): f32 bits,
//                                          or with KV16 u32[NKV * CTX * D / 2] of f16 pairs
//           vc  (same layout)
//           cs  vec2<f32>[CTX * D/2]       cos/sin table computed on the CPU (float64 → f32)
//                                          from the angle rounded to f32 as HF computes it
//                                          (inv_freq includes llama3 / linear rope scaling)
// Dispatch: (ceil(((NH + NKV) · D/4 + NKV · D/2) / 64), T, 1), workgroup 64: one thread per two
//           adjacent rotated pairs (dims i, i + 1 and i + D/2, i + D/2 + 1) or two adjacent v
//           elements, so each thread writes whole u32 words of an f16 cache. D % 4 = 0.

override NH: u32;
override NKV: u32;
override D: u32;
override CTX: u32;
override KV16: bool = false;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> kc: array<u32>;
@group(0) @binding(4) var<storage, read_write> vc: array<u32>;
@group(0) @binding(5) var<storage, read> cs: array<vec2<f32>>;

// Cache elements i, i + 1 (i even) ← a, b.
fn store_k(i: u32, a: f32, b: f32) {
  if (KV16) {
    kc[i / 2u] = pack2x16float(vec2<f32>(a, b));
  } else {
    kc[i] = bitcast<u32>(a);
    kc[i + 1u] = bitcast<u32>(b);
  }
}

fn store_v(i: u32, a: f32, b: f32) {
  if (KV16) {
    vc[i / 2u] = pack2x16float(vec2<f32>(a, b));
  } else {
    vc[i] = bitcast<u32>(a);
    vc[i + 1u] = bitcast<u32>(b);
  }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.y;
  let HALF = D / 2u;
  let Q = D / 4u;                   // threads per head: two rotated pairs each
  let nRot = (NH + NKV) * Q;
  let total = nRot + NKV * HALF;
  let e = gid.x;
  if (t >= step.T || e >= total) { return; }
  let p = step.pos0 + t;
  if (p >= CTX) { return; }
  let row = t * (NH + 2u * NKV) * D;
  if (e < nRot) {
    let head = e / Q;               // 0..NH-1 are q heads, NH..NH+NKV-1 are k heads
    let i = 2u * (e % Q);           // dims i, i + 1 (and i + HALF, i + HALF + 1)
    let src = row + head * D;
    let xa1 = qkv[src + i];
    let xa2 = qkv[src + i + HALF];
    let xb1 = qkv[src + i + 1u];
    let xb2 = qkv[src + i + 1u + HALF];
    let ca = cs[p * HALF + i];
    let cb = cs[p * HALF + i + 1u];
    let oa1 = xa1 * ca.x - xa2 * ca.y;
    let oa2 = xa2 * ca.x + xa1 * ca.y;
    let ob1 = xb1 * cb.x - xb2 * cb.y;
    let ob2 = xb2 * cb.x + xb1 * cb.y;
    if (head < NH) {
      let dst = (t * NH + head) * D;
      q[dst + i] = oa1;
      q[dst + i + 1u] = ob1;
      q[dst + i + HALF] = oa2;
      q[dst + i + 1u + HALF] = ob2;
    } else {
      let dst = ((head - NH) * CTX + p) * D;
      store_k(dst + i, oa1, ob1);
      store_k(dst + i + HALF, oa2, ob2);
    }
  } else {
    let v = 2u * (e - nRot);        // elements v, v + 1 of the token's v heads
    let kh = v / D;
    let d = v % D;
    let src = row + (NH + NKV) * D + v;
    store_v((kh * CTX + p) * D + d, qkv[src], qkv[src + 1u]);
  }
}
