import type { ModelSource } from '../source/types.ts';
import { UrlSource } from '../source/url.ts';

export interface SourceOptions {
  /** Hub endpoint for "org/name" ids (default https://huggingface.co). */
  hubEndpoint?: string;
  /** Hub revision (default main). */
  revision?: string;
  /** Access token for gated or private repos. */
  token?: string;
  fetch?: typeof fetch;
}

const HUB_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;

/** A URL (absolute, or a path on the page's origin) or a Hub id → a ModelSource. */
export function resolveSource(model: string, opts: SourceOptions = {}): ModelSource {
  const headers: Record<string, string> = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
  if (HUB_ID.test(model) && !model.startsWith('.')) {
    const endpoint = (opts.hubEndpoint ?? 'https://huggingface.co').replace(/\/+$/, '');
    const rev = encodeURIComponent(opts.revision ?? 'main');
    return new UrlSource(`${endpoint}/${model}/resolve/${rev}`, { headers, fetch: opts.fetch });
  }
  let url = model;
  const loc = (globalThis as { location?: Location }).location;
  if (!/^[a-z]+:\/\//i.test(url) && loc) url = new URL(url, loc.href).href;
  return new UrlSource(url, { headers, fetch: opts.fetch });
}
