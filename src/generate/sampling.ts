import { NibbleError, show } from '../errors.ts';

/**
 * How the next token is chosen. Everything runs on the GPU (shaders/sample.wgsl); the defaults are
 * greedy decoding. Processing order (Hugging Face's): penalties → logit bias → temperature →
 * top-k → top-p → min-p → a seeded draw.
 */
export interface SamplingOptions {
  /** Softmax temperature. 0 (default) is greedy decoding (argmax). */
  temperature?: number;
  /** Keep the k most likely tokens (ties at the k-th value kept); 0 (default) = off; 1 = greedy. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p; 1 (default) = off. */
  topP?: number;
  /** Keep tokens whose probability is ≥ minP × the top token's; 0 (default) = off. */
  minP?: number;
  /**
   * CTRL / Hugging Face repetition penalty ρ (> 0; 1 = off, the default): a logit l of a token that
   * occurs in the prompt or the generated text becomes l/ρ if l > 0 else l·ρ.
   */
  repetitionPenalty?: number;
  /** OpenAI presence penalty: subtracted once from the logit of every token that occurred. */
  presencePenalty?: number;
  /** OpenAI frequency penalty: subtracted per occurrence. */
  frequencyPenalty?: number;
  /** Added to the logits of the given token ids (before temperature); -Infinity bans a token. */
  logitBias?: Record<number | string, number> | Map<number, number>;
  /**
   * Seed of the draw (a uint32). The same seed and settings give the same tokens in every runtime.
   * Default: a random seed (reported in the result).
   */
  seed?: number;
}

/** Validated sampling settings with every default filled in. */
export interface ResolvedSampling {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  logitBias: Array<[number, number]>;
  seed: number;
}

/** The most logit-bias entries one request may carry. */
export const MAX_LOGIT_BIAS = 1024;

export function randomSeed(): number {
  const a = new Uint32Array(1);
  globalThis.crypto.getRandomValues(a);
  return a[0];
}

function check(ok: boolean, msg: string): void {
  if (!ok) throw new NibbleError('bad-argument', msg);
}

export function resolveSampling(o: SamplingOptions, vocabSize: number): ResolvedSampling {
  const temperature = o.temperature ?? 0;
  check(typeof temperature === 'number' && Number.isFinite(temperature) && temperature >= 0, `temperature must be a finite number ≥ 0, got ${show(o.temperature)}`);
  const topK = o.topK ?? 0;
  check(typeof topK === 'number' && Number.isInteger(topK) && topK >= 0, `topK must be an integer ≥ 0, got ${show(o.topK)}`);
  const topP = o.topP ?? 1;
  check(typeof topP === 'number' && Number.isFinite(topP) && topP > 0 && topP <= 1, `topP must be in (0, 1], got ${show(o.topP)}`);
  const minP = o.minP ?? 0;
  check(typeof minP === 'number' && Number.isFinite(minP) && minP >= 0 && minP <= 1, `minP must be in [0, 1], got ${show(o.minP)}`);
  const repetitionPenalty = o.repetitionPenalty ?? 1;
  check(typeof repetitionPenalty === 'number' && Number.isFinite(repetitionPenalty) && repetitionPenalty > 0, `repetitionPenalty must be > 0, got ${show(o.repetitionPenalty)}`);
  const presencePenalty = o.presencePenalty ?? 0;
  check(typeof presencePenalty === 'number' && Number.isFinite(presencePenalty), `presencePenalty must be a finite number, got ${show(o.presencePenalty)}`);
  const frequencyPenalty = o.frequencyPenalty ?? 0;
  check(typeof frequencyPenalty === 'number' && Number.isFinite(frequencyPenalty), `frequencyPenalty must be a finite number, got ${show(o.frequencyPenalty)}`);
  const seed = o.seed ?? randomSeed();
  check(typeof seed === 'number' && Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff, `seed must be an integer in [0, 2^32), got ${show(o.seed)}`);
  const bias = new Map<number, number>();
  const entries = o.logitBias instanceof Map ? [...o.logitBias.entries()] : Object.entries(o.logitBias ?? {});
  for (const [k, v] of entries) {
    const id = Number(k);
    check(Number.isInteger(id) && id >= 0 && id < vocabSize, `logitBias token id ${k} is outside the vocabulary (0..${vocabSize - 1})`);
    check(typeof v === 'number' && !Number.isNaN(v) && v !== Infinity, `logitBias for token ${k} must be a number (or -Infinity), got ${show(v)}`);
    bias.set(id, (bias.get(id) ?? 0) + v);
  }
  check(bias.size <= MAX_LOGIT_BIAS, `at most ${MAX_LOGIT_BIAS} logitBias entries, got ${bias.size}`);
  return {
    temperature,
    topK,
    topP,
    minP,
    repetitionPenalty,
    presencePenalty,
    frequencyPenalty,
    logitBias: [...bias.entries()].sort((a, b) => a[0] - b[0]),
    seed,
  };
}

/** Greedy: the token is the argmax of the (penalized, biased) logits. */
export function isGreedy(s: ResolvedSampling): boolean {
  return s.temperature === 0 || s.topK === 1;
}

export function hasPenalties(s: ResolvedSampling): boolean {
  return s.repetitionPenalty !== 1 || s.presencePenalty !== 0 || s.frequencyPenalty !== 0;
}

/** Greedy on the raw logits: the argmax op (argmax_rows.wgsl on one row) suffices, no sampler pass. */
export function isPlainArgmax(s: ResolvedSampling): boolean {
  return isGreedy(s) && !hasPenalties(s) && s.logitBias.length === 0;
}
