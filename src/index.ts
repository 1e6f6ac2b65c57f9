// Consumers get the WebGPU types (GPUDevice, GPUBuffer, …) that nibble's declarations use from
// this reference, kept in the emitted dist/types/index.d.ts (@webgpu/types is a dependency).
/// <reference types="@webgpu/types" preserve="true" />
/**
 * nibble — LLM inference on WebGPU.
 *
 *   import { Engine } from 'nibble';
 *   const engine = await Engine.load('HuggingFaceTB/SmolLM2-360M-Instruct');
 *   for await (const text of engine.generate('Once upon a time')) console.log(text);
 */
export { Engine } from './api/engine.ts';
export type { LoadOptions, DraftOptions, GenerateOptions, GenerateResult, Generation, Timings, EngineInfo } from './api/engine.ts';
export type { SamplingOptions } from './generate/sampling.ts';
export type { SpeculativeStats } from './generate/speculative.ts';
export { ChatTemplate, type ChatMessage } from './api/chat.ts';
export type {
  ChatCompletionRequest,
  ChatCompletion,
  ChatCompletionChunk,
  CompletionRequest,
  Completion,
  CompletionChunk,
  Usage,
} from './api/openai.ts';
export { resolveSource } from './api/resolve.ts';
export { NibbleError, isNibbleError } from './errors.ts';
export type { NibbleErrorCode } from './errors.ts';
export type { ModelSource } from './source/types.ts';
export { UrlSource } from './source/url.ts';
export { BlobSource } from './source/blob.ts';
export { HubSource, type HubSourceOptions } from './source/hub.ts';
export type { FileMetadata } from './source/types.ts';
export { listCachedModels, deleteCachedModel, defaultWeightCache, MemoryCache, OpfsCache, CacheApiCache } from './cache/index.ts';
export type { WeightCache, CachedModelInfo } from './cache/index.ts';
export { createGpuContext } from './gpu/context.ts';
export type { GpuContext, AdapterInfo } from './gpu/context.ts';
export { parseConfig, type LlamaConfig } from './model/config.ts';
export { parseSafetensorsHeader, openCheckpoint, readSafetensorsHeader } from './loader/safetensors.ts';
export type { QuantPlan, QuantOption, FormatName } from './quant/plan.ts';
export { FORMAT_NAMES, isFormatName } from './quant/plan.ts';
export type { LoadProgress, LoadStats } from './model/llama.ts';
export type { GpuMemoryEstimate } from './api/preflight.ts';
export { TextTokenizer } from './tokenizer.ts';
