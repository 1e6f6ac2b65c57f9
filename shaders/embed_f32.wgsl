// embed_f32.wgsl — token embedding lookup from an f32 table.
//
// Math:     out[t, h] = table[ids[t], h]            for t < step.T, h < H
// Buffers:  step  uniform Step { T, pos0, headRows, _ }   (only T is read)
//           ids   storage u32[T]            token ids (for decode: the slot argmax wrote)
//           table storage f32[V * H]        row-major [vocab, hidden] (HF `embed_tokens.weight`)
//           out   storage f32[T * H]        row-major [token, hidden]
// Dispatch: (ceil(H / 256), T, 1), workgroup 256; one thread per output element.
// Ids ≥ V write zeros (the engine validates ids on the CPU; this only keeps reads in bounds).

struct Step { T: u32, pos0: u32, headRows: u32, pad: u32 }

override H: u32;
override V: u32;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> table: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.x;
  let t = gid.y;
  if (h >= H || t >= step.T) { return; }
  let id = ids[t];
  var v = 0.0;
  if (id < V) { v = table[id * H + h]; }
  out[t * H + h] = v;
}
