// swiglu.wgsl — the SwiGLU gate of the Llama MLP: h = silu(gate) · up.
//
// Math:     h[t, i] = g / (1 + exp(−g)) · u,   g = gu[t, i], u = gu[t, I + i]
// Buffers:  step uniform Step { T, … }
//           gu f32[T * 2I]  row-major, per token [gate_proj outputs | up_proj outputs]
//                           (gate and up are one fused projection)
//           h  f32[T * I]   row-major
// Dispatch: (ceil(I / 256), T, 1), workgroup 256: one thread per output element.

override I: u32;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> gu: array<f32>;
@group(0) @binding(2) var<storage, read_write> h: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  let t = gid.y;
  if (i >= I || t >= step.T) { return; }
  let g = gu[t * 2u * I + i];
  let u = gu[t * 2u * I + I + i];
  h[t * I + i] = g / (1.0 + exp(-g)) * u;
}
