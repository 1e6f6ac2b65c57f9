// embed.wgsl — token embedding lookup for every weight format. The format's decoder
// (weight_<format>.wgsl, prepended) supplies CPW, CV, SB, NB, w_load(), w_quad() and w_bscale()
// (see matmul.wgsl; w_quad_at is the matmul's only);
// its buffers start at binding WB = 3 here. With tied embeddings the lookup and the LM head decode
// the same table with the same decoder, so they see the same numbers.
//
// Math:     out[t, h] = W[ids[t], h]        for t < step.T, h < H (W dequantized: raw · scale)
// Buffers:  step uniform Step (common.wgsl; only T is read); ids u32[T]; out f32[T * H] (row-major [token,
//           hidden]); the table's buffers from binding 3 (rows = vocab, K = H, rows padded to
//           whole chunks as the decoder's header says).
// Split tables (a vocabulary too large for one binding, src/quant/format.ts SplitWeight): one
//           dispatch per row part, whose buffers hold rows R0 … R0 + RN − 1; an invocation writes
//           only the ids of its part, so the parts' dispatches together write every row.
// Dispatch: (ceil(ceil(H / CPW) / 64), T, 1), workgroup 64; one invocation per chunk of CPW
//           outputs. Ids ≥ V write zeros (in the dispatch of the part with R0 = 0; the engine
//           validates ids on the CPU, this keeps reads in bounds).

override H: u32;
override V: u32;       // rows of the whole table
override R0: u32 = 0u; // first row of this part
override RN: u32 = V;  // rows of this part
override K: u32 = H; // the decoders' row length

const WB = 3u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let t = gid.y;
  if (c * CPW >= H || t >= step.T) { return; }
  let id = ids[t];
  let valid = id >= R0 && id - R0 < RN;
  // another part's row, or an id ≥ V (zeros, written by the first part)
  if (!valid && (id < V || R0 != 0u)) { return; }
  let row = select(0u, id - R0, valid);
  let w = w_load(row * ((K + CPW - 1u) / CPW) + c);
  let s = select(0.0, w_bscale(row * NB + c / SB), valid);
  for (var j = 0u; j < CV; j++) {
    let v = w_quad(w, j) * s;
    for (var i = 0u; i < 4u; i++) {
      let h = c * CPW + j * 4u + i;
      if (h < H) { out[t * H + h] = v[i]; }
    }
  }
}
