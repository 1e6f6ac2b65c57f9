import type { ModelSource } from '../source/types.ts';
import { UrlSource } from '../source/url.ts';
import { DEFAULT_HUB_ENDPOINT, HubSource } from '../source/hub.ts';
import { isHubId } from '../util/model-input.ts';

export interface SourceOptions {
  /** Hub endpoint for "org/name" ids (default https://huggingface.co). */
  hubEndpoint?: string;
  /** Hub revision: branch, tag or commit (default main). */
  revision?: string;
  /** Access token for gated or private repos. */
  token?: string;
  fetch?: typeof fetch;
  /** Attempts after the first for a request that makes no progress (default 5; Hub ids and URLs). */
  retries?: number;
  /** Delay before the first retry in ms, doubling per failed attempt (default 300). */
  retryDelayMs?: number;
  /** A request with no headers / no bytes for this long is aborted and retried (default 30 000 ms). */
  stallTimeoutMs?: number;
}

export { isHubId };

/** A URL (absolute, or a path on the page's origin) or a Hub id → a ModelSource. */
export function resolveSource(model: string, opts: SourceOptions = {}): ModelSource {
  if (isHubId(model)) {
    return new HubSource(model, {
      endpoint: opts.hubEndpoint ?? DEFAULT_HUB_ENDPOINT,
      revision: opts.revision,
      token: opts.token,
      fetch: opts.fetch,
      retries: opts.retries,
      retryDelayMs: opts.retryDelayMs,
      stallTimeoutMs: opts.stallTimeoutMs,
    });
  }
  let url = model;
  const loc = (globalThis as { location?: Location }).location;
  if (!/^[a-z]+:\/\//i.test(url) && loc) url = new URL(url, loc.href).href;
  // a Hub token goes only to the Hub endpoint it belongs to, never to another origin
  const headers: Record<string, string> = opts.token && onHubEndpoint(url, opts.hubEndpoint) ? { Authorization: `Bearer ${opts.token}` } : {};
  return new UrlSource(url, {
    headers,
    fetch: opts.fetch,
    retries: opts.retries,
    retryDelayMs: opts.retryDelayMs,
    stallTimeoutMs: opts.stallTimeoutMs,
  });
}

/**
 * Whether a model is read from the Hub endpoint (default: the public Hub): a Hub id, or an absolute
 * URL of the endpoint's origin. Only such models may carry the Hub token.
 */
export function onHubEndpoint(model: string, hubEndpoint = DEFAULT_HUB_ENDPOINT): boolean {
  if (isHubId(model)) return true;
  try {
    return new URL(model).origin === new URL(hubEndpoint).origin;
  } catch {
    return false;
  }
}
