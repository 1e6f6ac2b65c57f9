import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { modelsDir } from '../../src/node/paths.ts';

/** One prompt of stories260K's golden.json (from an independent implementation). */
export interface GoldenPrompt {
  prompt: string;
  hf_input_ids: number[];
  generated_ids: number[];
  generated_text: string;
  logits_first_generated_position: { values: number[] };
  logits_last_position: { values: number[] };
}

/** The stories260K folder of the test models (NIBBLE_MODELS_DIR, default ../shared/models). */
export const STORIES = join(modelsDir(), 'stories260K');

/** stories260K's golden.json. */
export function loadGolden(): { prompts: GoldenPrompt[] } {
  return JSON.parse(readFileSync(join(STORIES, 'golden.json'), 'utf8')) as { prompts: GoldenPrompt[] };
}
