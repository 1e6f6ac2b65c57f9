/**
 * Row geometry shared by every weight format. The matmul and embedding kernels read a row's codes
 * with 16-byte (vec4) loads, so every row of every format's code buffer starts on a 16-byte
 * boundary: a row holds a whole number of 4-word chunks, and the padding decodes to 0.0 (zero
 * words for f32 / f16 / int8; nf4 pads with code 7, i.e. words 0x77777777). Scale / absmax
 * layouts are not padded (per row: ceil(K / G) groups; blocks never straddle rows).
 */

/** u32 words per 16-byte chunk of a row. */
export const CHUNK_WORDS = 4;

/**
 * u32 words of one padded row of K weights stored `perWord` to a u32 (f32 1, f16 2, int8 4, nf4 8):
 * ceil(K / perWord) rounded up to a multiple of 4. Equals ceil(K / perWord) when K is a multiple
 * of 4 · perWord (K % 32 = 0 for every format).
 */
export function rowWords(K: number, perWord: number): number {
  return Math.ceil(K / (perWord * CHUNK_WORDS)) * CHUNK_WORDS;
}
