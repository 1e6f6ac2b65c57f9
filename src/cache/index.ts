/**
 * The weight cache's public face: the default store of the platform, and listing / deleting cached
 * models. See model-cache.ts for the layout and keys.
 */
import { CacheApiCache } from './cache-api.ts';
import { deleteModel, listModels, type CachedModelInfo } from './model-cache.ts';
import { OpfsCache } from './opfs.ts';
import type { WeightCache } from './types.ts';

export type { WeightCache } from './types.ts';
export type { CachedModelInfo } from './model-cache.ts';
export { MemoryCache } from './memory.ts';
export { OpfsCache } from './opfs.ts';
export { CacheApiCache } from './cache-api.ts';

let fallback: WeightCache | null | undefined;

/**
 * The browser's default weight cache: OPFS where writable file handles exist, else the Cache API;
 * null where neither exists (Node: pass a DirCache from src/cache/node-dir.ts).
 */
export function defaultWeightCache(): WeightCache | null {
  if (fallback !== undefined) return fallback;
  if (OpfsCache.available()) return (fallback = new OpfsCache());
  if (CacheApiCache.available()) return (fallback = new CacheApiCache());
  return (fallback = null);
}

/** The `cache` load option → a store or null. `undefined` caches Hub models only (in browsers). */
export function resolveCache(option: WeightCache | boolean | undefined, isHub: boolean): WeightCache | null {
  if (option === false) return null;
  if (option === true) return defaultWeightCache();
  if (option) return option;
  return isHub ? defaultWeightCache() : null;
}

function need(cache: WeightCache | undefined): WeightCache | null {
  return cache ?? defaultWeightCache();
}

/** Models in the weight cache (default: the browser's), most recently used first, with sizes. */
export async function listCachedModels(cache?: WeightCache): Promise<CachedModelInfo[]> {
  const c = need(cache);
  return c ? listModels(c) : [];
}

/** Deletes a cached model by the `key` listCachedModels gave; returns whether it existed. */
export async function deleteCachedModel(key: string, cache?: WeightCache): Promise<boolean> {
  const c = need(cache);
  return c ? deleteModel(c, key) : false;
}
