import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync, readFileSync } from 'node:fs';

let root: string | undefined;

/** The package root: the nearest folder above this file whose package.json is nibble's (works from src/node/*.ts and from the bundled dist/node/*.js). */
export function repoRoot(): string {
  if (root) return root;
  let d = fileURLToPath(new URL('.', import.meta.url));
  for (;;) {
    const pkg = resolve(d, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'nibble') return (root = d);
      } catch {
        // not ours; keep walking
      }
    }
    const up = resolve(d, '..');
    if (up === d) return (root = process.cwd());
    d = up;
  }
}

/** Where test models live: $NIBBLE_MODELS_DIR, else ../shared/models beside the checkout. */
export function modelsDir(): string {
  return process.env.NIBBLE_MODELS_DIR ? resolve(process.env.NIBBLE_MODELS_DIR) : resolve(repoRoot(), '..', 'shared', 'models');
}
