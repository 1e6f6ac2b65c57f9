// The WebGPU types nibble's declarations use (GPUDevice, …), as in src/index.ts.
/// <reference types="@webgpu/types" preserve="true" />
/**
 * nibble/worker — the Engine API with the engine in a dedicated Web Worker.
 *
 *   import { WorkerEngine } from 'nibble/worker';
 *   const engine = await WorkerEngine.load('HuggingFaceTB/SmolLM2-360M-Instruct', { quant: 'nf4' });
 *   for await (const text of engine.generate('Once upon a time')) console.log(text);
 *
 * The page thread runs no kernels and no parsing: this entry holds the message protocol only.
 */
export { WorkerEngine, type WorkerLoadOptions, type WorkerModel, type WorkerChatCompletions, type WorkerCompletions } from './worker/client.ts';
export { NibbleError, isNibbleError } from './errors.ts';
export type { NibbleErrorCode } from './errors.ts';
export type { EngineInfo, GenerateOptions, GenerateResult, Generation, Timings, DraftOptions } from './api/engine.ts';
export type { SamplingOptions } from './generate/sampling.ts';
export type { ChatMessage } from './api/chat.ts';
export type {
  ChatCompletionRequest,
  ChatCompletion,
  ChatCompletionChunk,
  CompletionRequest,
  Completion,
  CompletionChunk,
  Usage,
} from './api/openai.ts';
export type { LoadProgress, LoadStats } from './model/llama.ts';
export type { QuantPlan, QuantOption } from './quant/plan.ts';
