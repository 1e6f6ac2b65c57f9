import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

/** The package root (works from src/node/*.ts and from the built dist/node/*.js). */
export function repoRoot(): string {
  let d = fileURLToPath(new URL('.', import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(resolve(d, 'package.json'))) return d;
    d = resolve(d, '..');
  }
  return process.cwd();
}

/** Where test models live: $NIBBLE_MODELS_DIR, else ../shared/models beside the checkout. */
export function modelsDir(): string {
  return process.env.NIBBLE_MODELS_DIR ? resolve(process.env.NIBBLE_MODELS_DIR) : resolve(repoRoot(), '..', 'shared', 'models');
}
