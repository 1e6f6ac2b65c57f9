import { copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { modelsDir, repoRoot } from '../../src/node/paths.ts';
import { synthModel } from '../../src/node/synth.ts';

/**
 * The local Hub mirror's folder for the loader tests: `.cache/hub-mirror/` (git-ignored) holding
 *   org/stories260K     hard links to ../shared/models/stories260K (the real test model; hub-serve
 *                       serves nothing whose real path is outside its folder, so no symlinks)
 *   org/gated260K       the same files, gated by a token (.gated)
 *   org/no-config       a repo without config.json
 *   org/synth-s1, -s3   synthetic SmolLM2-135M shapes, 2 layers, bf16, in 1 and 3 shards
 * Test data is linked or generated, never copied into git.
 */
export const GATED_TOKEN = 'hf_nibble_test_token';

function linkModel(src: string, dst: string): void {
  mkdirSync(dst, { recursive: true });
  for (const f of readdirSync(src)) {
    const to = join(dst, f);
    if (isLink(to)) unlinkSync(to); // a symlink left by an older checkout: hub-serve refuses those
    if (existsSync(to)) continue;
    try {
      linkSync(join(src, f), to);
    } catch {
      copyFileSync(join(src, f), to); // another file system
    }
  }
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

export async function prepareHubMirror(opts: { synth?: boolean } = {}): Promise<string> {
  const dir = resolve(repoRoot(), '.cache', 'hub-mirror');
  const stories = join(modelsDir(), 'stories260K');
  linkModel(stories, join(dir, 'org', 'stories260K'));
  linkModel(stories, join(dir, 'org', 'gated260K'));
  writeFileSync(join(dir, 'org', 'gated260K', '.gated'), GATED_TOKEN);
  rmSync(join(dir, 'org', 'no-config'), { recursive: true, force: true });
  mkdirSync(join(dir, 'org', 'no-config'), { recursive: true });
  writeFileSync(join(dir, 'org', 'no-config', 'README.md'), 'a repo without config.json\n');
  if (opts.synth) {
    for (const shards of [1, 3]) {
      await synthModel({ shape: 'smollm2-135m', dtype: 'bf16', layers: 2, shards, out: join(dir, 'org', `synth-s${shards}`) });
    }
  }
  return dir;
}
