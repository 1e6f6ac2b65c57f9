import { NibbleError } from '../errors.ts';
import type { SpeculativeStats } from '../generate/speculative.ts';
import type { ChatMessage, ChatTemplate } from './chat.ts';
import type { GenerateOptions, GenerateResult, Generation, Timings } from './engine.ts';

/**
 * OpenAI-compatible request / response shapes over Engine.generate:
 *   engine.chat.completions.create({ messages, ... })  → chat.completion | stream of chat.completion.chunk
 *   engine.completions.create({ prompt, ... })         → text_completion | stream of text_completion
 * Responses carry nibble's `timings` (and `speculative` stats with a draft model) beside `usage`.
 * Unlike Engine.generate (greedy unless told otherwise), OpenAI's defaults apply: temperature 1,
 * top_p 1. Without max_tokens, generation runs to EOS or the end of the context.
 */

/** Settings shared by both endpoints (OpenAI's names; nibble's extensions at the end). */
export interface CompletionSettings {
  model?: string;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  /** Only 1 is supported. */
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  user?: string;
  // nibble extensions
  top_k?: number;
  min_p?: number;
  repetition_penalty?: number;
  /** Use the loaded draft model (default true when there is one). */
  speculative?: boolean;
  signal?: AbortSignal;
}

export interface ChatCompletionRequest extends CompletionSettings {
  messages: ChatMessage[];
  /** Extra chat-template variables (e.g. { enable_thinking: false }). */
  chat_template_kwargs?: Record<string, unknown>;
}

export interface CompletionRequest extends CompletionSettings {
  /** Text, or token ids. */
  prompt: string | number[];
}

export type OpenAIFinishReason = 'stop' | 'length';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** cached_tokens: prompt tokens found in the KV cache (not recomputed). */
  prompt_tokens_details: { cached_tokens: number };
}

/** nibble's additions to OpenAI's objects. */
export interface NibbleExtras {
  timings: Timings;
  /** The seed the draw used (also when it was chosen at random). */
  seed: number;
  speculative?: SpeculativeStats;
}

export interface ChatCompletion extends NibbleExtras {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  system_fingerprint: string;
  choices: Array<{
    index: number;
    message: { role: 'assistant'; content: string; refusal: null };
    logprobs: null;
    finish_reason: OpenAIFinishReason;
  }>;
  usage: Usage;
}

export interface ChatCompletionChunk extends Partial<NibbleExtras> {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  system_fingerprint: string;
  choices: Array<{
    index: number;
    delta: { role?: 'assistant'; content?: string };
    logprobs: null;
    finish_reason: OpenAIFinishReason | null;
  }>;
  /** On the final chunk (the one with finish_reason); null before. */
  usage: Usage | null;
}

export interface Completion extends NibbleExtras {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  system_fingerprint: string;
  choices: Array<{ index: number; text: string; logprobs: null; finish_reason: OpenAIFinishReason }>;
  usage: Usage;
}

export interface CompletionChunk extends Partial<NibbleExtras> {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  system_fingerprint: string;
  choices: Array<{ index: number; text: string; logprobs: null; finish_reason: OpenAIFinishReason | null }>;
  usage: Usage | null;
}

/** What the endpoints need from the engine. */
export interface CompletionHost {
  generate(prompt: string, opts: GenerateOptions): Generation;
  /** The model's chat template; throws NibbleError('no-chat-template') without one. */
  chatTemplate(): Promise<ChatTemplate>;
  encode(text: string, addSpecialTokens: boolean): number[];
  /** EOS ids of a chat turn (config + generation_config + the template's eos_token). */
  chatStopIds(): number[];
  readonly modelName: string;
  readonly fingerprint: string;
}

function randomId(prefix: string): string {
  const b = new Uint8Array(12);
  globalThis.crypto.getRandomValues(b);
  return prefix + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function opt<T>(v: T | null | undefined): T | undefined {
  return v === null ? undefined : v;
}

/** OpenAI settings → Engine.generate options. */
export function generateOptions(r: CompletionSettings): GenerateOptions {
  const n = opt(r.n) ?? 1;
  if (n !== 1) throw new NibbleError('bad-argument', `n = ${n} is not supported (one choice per request)`);
  const max = opt(r.max_completion_tokens) ?? opt(r.max_tokens);
  if (max !== undefined && (!Number.isInteger(max) || max < 1)) throw new NibbleError('bad-argument', `max_tokens must be a positive integer, got ${max}`);
  const stop = opt(r.stop);
  if (Array.isArray(stop) && stop.length > 4) throw new NibbleError('bad-argument', 'at most 4 stop sequences');
  return {
    maxNewTokens: max ?? Infinity,
    temperature: opt(r.temperature) ?? 1,
    topP: opt(r.top_p) ?? 1,
    topK: r.top_k,
    minP: r.min_p,
    repetitionPenalty: r.repetition_penalty,
    presencePenalty: opt(r.presence_penalty) ?? 0,
    frequencyPenalty: opt(r.frequency_penalty) ?? 0,
    logitBias: opt(r.logit_bias),
    seed: opt(r.seed),
    stop: stop === undefined ? undefined : typeof stop === 'string' ? [stop] : stop,
    speculative: r.speculative,
    signal: r.signal,
  };
}

function usage(res: GenerateResult): Usage {
  return {
    prompt_tokens: res.promptTokenIds.length,
    completion_tokens: res.tokenIds.length,
    total_tokens: res.promptTokenIds.length + res.tokenIds.length,
    prompt_tokens_details: { cached_tokens: res.cachedPromptTokens },
  };
}

function extras(res: GenerateResult): NibbleExtras {
  return { timings: res.timings, seed: res.seed, ...(res.speculative ? { speculative: res.speculative } : {}) };
}

function finishReason(res: GenerateResult): OpenAIFinishReason {
  if (res.finishReason === 'abort') throw new NibbleError('aborted', 'the request was aborted');
  return res.finishReason;
}

/** Streams a generation as chunks made by `make`; the last chunk carries finish_reason, usage, timings. */
async function* streamChunks<C>(
  gen: Generation,
  first: C | null,
  make: (text: string | null, res: GenerateResult | null) => C,
): AsyncGenerator<C> {
  if (first) yield first;
  for await (const text of gen) if (text) yield make(text, null);
  const res = await gen.result;
  finishReason(res);
  yield make(null, res);
}

export class ChatCompletions {
  private readonly host: CompletionHost;
  constructor(host: CompletionHost) {
    this.host = host;
  }

  /**
   * OpenAI's chat.completions.create: renders the messages with the model's chat template
   * (NibbleError 'no-chat-template' if it has none) and generates the assistant's turn. With
   * `stream: true` it resolves to an async iterable of chat.completion.chunk objects.
   */
  create(req: ChatCompletionRequest & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(req: ChatCompletionRequest & { stream?: false | null }): Promise<ChatCompletion>;
  create(req: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
  async create(req: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    const h = this.host;
    const template = await h.chatTemplate();
    const text = template.render(req.messages, { addGenerationPrompt: true, variables: req.chat_template_kwargs });
    const o = generateOptions(req);
    const gen = h.generate('', { ...o, promptIds: h.encode(text, false), eosTokenIds: h.chatStopIds() });
    const id = randomId('chatcmpl-');
    const created = Math.floor(Date.now() / 1000);
    const base = { id, created, model: opt(req.model) ?? h.modelName, system_fingerprint: h.fingerprint };
    if (req.stream) {
      const chunk = (delta: ChatCompletionChunk['choices'][0]['delta'], res: GenerateResult | null): ChatCompletionChunk => ({
        ...base,
        object: 'chat.completion.chunk',
        choices: [{ index: 0, delta, logprobs: null, finish_reason: res ? finishReason(res) : null }],
        usage: res ? usage(res) : null,
        ...(res ? extras(res) : {}),
      });
      return streamChunks(gen, chunk({ role: 'assistant', content: '' }, null), (t, res) => chunk(t === null ? {} : { content: t }, res));
    }
    const res = await gen.result;
    return {
      ...base,
      object: 'chat.completion',
      choices: [{ index: 0, message: { role: 'assistant', content: res.text, refusal: null }, logprobs: null, finish_reason: finishReason(res) }],
      usage: usage(res),
      ...extras(res),
    };
  }
}

export class Completions {
  private readonly host: CompletionHost;
  constructor(host: CompletionHost) {
    this.host = host;
  }

  /** OpenAI's (legacy) completions.create on a raw prompt: no template; BOS added as the tokenizer does. */
  create(req: CompletionRequest & { stream: true }): Promise<AsyncIterable<CompletionChunk>>;
  create(req: CompletionRequest & { stream?: false | null }): Promise<Completion>;
  create(req: CompletionRequest): Promise<Completion | AsyncIterable<CompletionChunk>>;
  async create(req: CompletionRequest): Promise<Completion | AsyncIterable<CompletionChunk>> {
    const h = this.host;
    const o = generateOptions(req);
    const gen = Array.isArray(req.prompt) ? h.generate('', { ...o, promptIds: req.prompt }) : h.generate(req.prompt, o);
    const created = Math.floor(Date.now() / 1000);
    const base = { id: randomId('cmpl-'), created, model: opt(req.model) ?? h.modelName, system_fingerprint: h.fingerprint };
    if (req.stream) {
      return streamChunks<CompletionChunk>(gen, null, (t, res) => ({
        ...base,
        object: 'text_completion',
        choices: [{ index: 0, text: t ?? '', logprobs: null, finish_reason: res ? finishReason(res) : null }],
        usage: res ? usage(res) : null,
        ...(res ? extras(res) : {}),
      }));
    }
    const res = await gen.result;
    return {
      ...base,
      object: 'text_completion',
      choices: [{ index: 0, text: res.text, logprobs: null, finish_reason: finishReason(res) }],
      usage: usage(res),
      ...extras(res),
    };
  }
}
