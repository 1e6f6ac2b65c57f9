// weight_f32.wgsl — decoder of f32 weights for matmul.wgsl / embed.wgsl (the unquantized format).
//
// Math:     w[n, k] = W[n, k]
// Buffers:  W f32[N * KP], KP = 4 · ceil(K / 4): row-major [out, in] (HF's `*.weight` layout),
//             each row zero-padded to a multiple of 4; bound as vec4<f32>.
// One chunk = one vec4 = 4 weights.

const CPW = 4u;
const CV = 1u;
const SCALED = false; // no scale blocks (w_bscale is 1)
const SB = 1u;
const NB = 1u;

@group(0) @binding(WB) var<storage, read> W4: array<vec4<f32>>;

alias WC = vec4<f32>;

fn w_load(i: u32) -> vec4<f32> { return W4[i]; }

fn w_quad(w: vec4<f32>, j: u32) -> vec4<f32> { return w; }

fn w_quad_at(i: u32, j: u32) -> vec4<f32> { return W4[i]; }

fn w_bscale(b: u32) -> f32 { return 1.0; }
