/**
 * The counter-based random numbers of sampling in TypeScript: bit-for-bit the functions of
 * shaders/rng.wgsl (pcg4d applied twice to (token, position, seed, stream)). CPU references and
 * tests use them to reproduce the GPU's draws.
 */
function pcg4d(a: [number, number, number, number]): [number, number, number, number] {
  let [x, y, z, w] = a.map((v) => (Math.imul(v >>> 0, 1664525) + 1013904223) >>> 0);
  x = (x + Math.imul(y, w)) >>> 0;
  y = (y + Math.imul(z, x)) >>> 0;
  z = (z + Math.imul(x, y)) >>> 0;
  w = (w + Math.imul(y, z)) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  y = (y ^ (y >>> 16)) >>> 0;
  z = (z ^ (z >>> 16)) >>> 0;
  w = (w ^ (w >>> 16)) >>> 0;
  x = (x + Math.imul(y, w)) >>> 0;
  y = (y + Math.imul(z, x)) >>> 0;
  z = (z + Math.imul(x, y)) >>> 0;
  w = (w + Math.imul(y, z)) >>> 0;
  return [x, y, z, w];
}

export function rngBits(v: number, pos: number, seed: number, stream: number): number {
  return pcg4d(pcg4d([v, pos, seed, stream]))[0];
}

/** U ∈ (0, 1) with 24 random bits, as rngUniform in rng.wgsl. */
export function rngUniform(v: number, pos: number, seed: number, stream: number): number {
  return ((rngBits(v, pos, seed, stream) >>> 8) + 0.5) / 16777216;
}

export function rngGumbel(v: number, pos: number, seed: number, stream: number): number {
  return -Math.log(-Math.log(rngUniform(v, pos, seed, stream)));
}
