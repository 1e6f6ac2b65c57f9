import { Template } from '@huggingface/jinja';
import { NibbleError } from '../errors.ts';

/** One chat message, as OpenAI's API and Hugging Face chat templates take it. */
export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool' | (string & {});
  /** Text, or OpenAI content parts (text parts are joined; other parts are not supported). */
  content: string | null | Array<{ type: 'text'; text: string } | { type: string; [k: string]: unknown }>;
  name?: string;
  [k: string]: unknown;
}

export interface RenderOptions {
  /** End with the header of an assistant turn, so the model answers (default true). */
  addGenerationPrompt?: boolean;
  /** More template variables (tools, documents, enable_thinking, …). */
  variables?: Record<string, unknown>;
}

function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** Text of a message's content (OpenAI content parts → their text, joined). */
export function messageText(content: ChatMessage['content']): string {
  if (content === null || content === undefined) return '';
  if (typeof content === 'string') return content;
  return content
    .map((p) => {
      if (p.type === 'text' && typeof (p as { text?: unknown }).text === 'string') return (p as { text: string }).text;
      throw new NibbleError('bad-argument', `message content part of type "${p.type}" is not supported (text only)`);
    })
    .join('');
}

/**
 * A model's chat template (tokenizer_config.json `chat_template`, or chat_template.jinja), rendered
 * with @huggingface/jinja the way transformers' apply_chat_template does: `messages`,
 * `add_generation_prompt`, the special tokens (bos_token, eos_token, unk_token, pad_token) and
 * raise_exception / strftime_now. The rendered text already holds any BOS the model wants, so it is
 * tokenized without adding special tokens.
 */
export class ChatTemplate {
  readonly source: string;
  readonly specialTokens: Record<string, string>;
  private readonly template: Template;

  constructor(source: string, specialTokens: Record<string, string> = {}) {
    this.source = source;
    this.specialTokens = specialTokens;
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new NibbleError('bad-config', `the chat template does not parse: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * The template of a tokenizer_config.json (`chat_template` as a string, or a list of named
   * templates of which "default" is used), or `fallback` (chat_template.jinja's text); null if none.
   */
  static fromTokenizerConfig(cfg: Record<string, unknown>, fallback?: string | null): ChatTemplate | null {
    let src: string | null = null;
    const t = cfg.chat_template;
    if (typeof t === 'string') src = t;
    else if (Array.isArray(t)) {
      const named = t as Array<{ name?: string; template?: string }>;
      src = (named.find((x) => x.name === 'default') ?? named[0])?.template ?? null;
    }
    src ??= fallback ?? null;
    if (!src) return null;
    const special: Record<string, string> = {};
    for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const v = tokenText(cfg[k]);
      if (v !== undefined) special[k] = v;
    }
    return new ChatTemplate(src, special);
  }

  render(messages: ChatMessage[], opts: RenderOptions = {}): string {
    if (!Array.isArray(messages) || messages.length === 0) throw new NibbleError('bad-argument', 'messages must be a non-empty array');
    const msgs = messages.map((m, i) => {
      if (!m || typeof m.role !== 'string') throw new NibbleError('bad-argument', `messages[${i}] has no role`);
      return { ...m, content: messageText(m.content) };
    });
    try {
      return this.template.render({
        ...this.specialTokens,
        ...opts.variables,
        messages: msgs,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      });
    } catch (e) {
      throw new NibbleError('bad-argument', `the chat template failed to render: ${(e as Error).message}`, { cause: e });
    }
  }
}
