// weight_nf4_absmax.wgsl — nf4's block scales (appended to weight_nf4.wgsl).
// Buffers:  absmax f32[N * NG], NG = ceil(K / 64): absmax[n * NG + b] of block b of row n

@group(0) @binding(WB + 1u) var<storage, read> absmax: array<f32>;

fn block_absmax(i: u32) -> f32 { return absmax[i]; }
