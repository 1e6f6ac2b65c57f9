// embed_dequant.wgsl — token embedding lookup from a quantized table, for every quantized format.
// The format's decoder (weight_<format>.wgsl, prepended) supplies VPW, prepare() and
// dequant_word() (see matmul_dequant.wgsl); its buffers start at binding WB = 3 here.
//
// Math:     out[t, h] = dequant(table)[ids[t], h]        for t < step.T, h < H
//           (the same dequantization as the fused matmul, so with tied embeddings the lookup and
//           the LM head see the same numbers)
// Buffers:  step uniform Step (only T is read); ids u32[T]; out f32[T * H]; the table's buffers
//           from binding 3, rows = vocab, K = H.
// Dispatch: (ceil(H / 256), T, 1), workgroup 256; one thread per output element. Ids ≥ V write 0.

struct Step { T: u32, pos0: u32, headRows: u32, pad: u32 }

override H: u32;
override V: u32;
override K: u32 = H; // the decoders' row length

const WB = 3u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  prepare(tid);
  workgroupBarrier();
  let h = gid.x;
  let t = gid.y;
  if (h >= H || t >= step.T) { return; }
  let id = ids[t];
  var v = 0.0;
  if (id < V) { v = dequant_word(id, h / VPW)[h % VPW]; }
  out[t * H + h] = v;
}
