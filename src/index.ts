/**
 * nibble — LLM inference on WebGPU.
 *
 *   import { Engine } from 'nibble';
 *   const engine = await Engine.load('HuggingFaceTB/SmolLM2-360M-Instruct');
 *   for await (const text of engine.generate('Once upon a time')) console.log(text);
 */
export { Engine } from './api/engine.ts';
export type { LoadOptions, GenerateOptions, GenerateResult, Generation, Timings, EngineInfo } from './api/engine.ts';
export { resolveSource } from './api/resolve.ts';
export { NibbleError, isNibbleError } from './errors.ts';
export type { NibbleErrorCode } from './errors.ts';
export type { ModelSource } from './source/types.ts';
export { UrlSource } from './source/url.ts';
export { BlobSource } from './source/blob.ts';
export { createGpuContext } from './gpu/context.ts';
export type { GpuContext, AdapterInfo } from './gpu/context.ts';
export { parseConfig, type LlamaConfig } from './model/config.ts';
export { parseSafetensorsHeader, openCheckpoint, readSafetensorsHeader } from './loader/safetensors.ts';
export type { QuantPlan, QuantOption } from './quant/plan.ts';
export type { LoadProgress } from './model/llama.ts';
export { TextTokenizer } from './tokenizer.ts';
