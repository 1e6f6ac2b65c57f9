import { NibbleError } from '../errors.ts';
import { formatNames, getFormat } from './format.ts';

/**
 * A quantization plan is data: one format for every 2-D weight (linear layers and the embedding /
 * LM head), with per-tensor overrides by name pattern. Norm weights and biases always stay f32.
 *   { default: 'nf4', overrides: [{ pattern: 'lm_head|embed_tokens', format: 'int8' }] }
 * A pattern is a RegExp (or its source string) tested against the checkpoint tensor name.
 */
/** The weight formats nibble registers (src/quant/formats.ts; a test keeps the two lists equal). */
export const FORMAT_NAMES = ['f32', 'f16', 'int8', 'int8-g32', 'int8-g128', 'int8-row', 'nf4', 'nf4-dq'] as const;
export type FormatName = (typeof FORMAT_NAMES)[number];

export function isFormatName(s: unknown): s is FormatName {
  return (FORMAT_NAMES as readonly unknown[]).includes(s);
}

export interface QuantPlan {
  default: FormatName;
  overrides?: Array<{ pattern: string | RegExp; format: FormatName }>;
}

/** A format for every 2-D weight, or a plan with per-tensor overrides (checked at run time too). */
export type QuantOption = FormatName | QuantPlan;

export function normalizePlan(q: QuantOption | undefined): QuantPlan {
  const plan: QuantPlan = typeof q === 'string' ? { default: q } : q ?? { default: 'f32' };
  for (const f of [plan.default, ...(plan.overrides ?? []).map((o) => o.format)]) {
    if (!getFormat(f)) {
      throw new NibbleError('bad-argument', `unknown quantization format "${f}"; available: ${formatNames().join(', ')}`);
    }
  }
  return plan;
}

/** The format for one checkpoint tensor: the last matching override wins, else the default. */
export function formatFor(plan: QuantPlan, tensorName: string): string {
  let f = plan.default;
  for (const o of plan.overrides ?? []) {
    const re = typeof o.pattern === 'string' ? new RegExp(o.pattern) : o.pattern;
    if (re.test(tensorName)) f = o.format;
  }
  return f;
}

/** The format for a weight fused from several tensors (qkv, gate+up): they must agree. */
export function formatForFused(plan: QuantPlan, names: string[]): string {
  const fs = names.map((n) => formatFor(plan, n));
  if (fs.some((f) => f !== fs[0])) {
    throw new NibbleError(
      'bad-argument',
      `quantization plan gives different formats to tensors nibble fuses into one weight: ${names
        .map((n, i) => `${n}=${fs[i]}`)
        .join(', ')}`,
    );
  }
  return fs[0];
}

/** A stable string for cache keys and reports. */
export function planKey(plan: QuantPlan): string {
  const o = (plan.overrides ?? []).map((x) => `${typeof x.pattern === 'string' ? x.pattern : x.pattern.source}=${x.format}`);
  return [plan.default, ...o].join(';');
}
