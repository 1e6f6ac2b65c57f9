/**
 * Every error nibble throws on purpose is a NibbleError with a stable `code`, so callers can
 * branch on the kind of failure and people can read the message.
 */
export type NibbleErrorCode =
  | 'webgpu-unavailable' // no navigator.gpu / no adapter / device request failed
  | 'device-lost' // the GPU device was lost while the engine was alive
  | 'gpu-error' // a validation / out-of-memory error reported by the device
  | 'gpu-limit' // a buffer larger than the adapter allows (pick a smaller format or context)
  | 'bad-safetensors' // malformed safetensors file (header, dtype, offsets)
  | 'bad-config' // config.json missing fields or invalid values
  | 'unsupported-architecture' // model_type not in the Llama family
  | 'missing-tensor' // a tensor the architecture needs is not in the checkpoint
  | 'bad-tensor' // a tensor with the wrong shape or dtype
  | 'not-found' // a file is missing in the model source
  | 'unauthorized' // gated / private repo without (valid) token
  | 'network' // network failure after retries, cut bodies, timeouts
  | 'integrity' // sha256 / size mismatch
  | 'bad-argument' // a caller passed an invalid option
  | 'context-overflow' // prompt + generation would exceed the context / KV cache
  | 'aborted' // an AbortSignal fired
  | 'no-chat-template'; // chat requested on a model without a template

export class NibbleError extends Error {
  readonly code: NibbleErrorCode;
  constructor(code: NibbleErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NibbleError';
    this.code = code;
  }
}

export function isNibbleError(e: unknown, code?: NibbleErrorCode): e is NibbleError {
  return e instanceof NibbleError && (code === undefined || e.code === code);
}

/** A value as an error message shows it: strings quoted (so '5' is not mistaken for 5), objects by type. */
export function show(v: unknown): string {
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (v === null || v === undefined || typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'function') return 'a function';
  return `a ${(v as object).constructor?.name ?? 'object'}`;
}

/** The 'aborted' error of an operation on `what` whose signal fired. */
export function abortedError(signal: AbortSignal | undefined, what: string): NibbleError {
  return new NibbleError('aborted', `${what}: aborted`, { cause: signal?.reason });
}

/** Throws abortedError when `signal` has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortedError(signal, what);
}
