import { Tokenizer } from '@huggingface/tokenizers';
import type { ModelSource } from './source/types.ts';
import { NibbleError } from './errors.ts';
import { parseJsonText } from './util/json.ts';

/**
 * The model's tokenizer: transformers.js's own (@huggingface/tokenizers), built from the
 * tokenizer.json / tokenizer_config.json objects nibble fetched itself.
 */
export class TextTokenizer {
  readonly inner: Tokenizer;
  readonly config: Record<string, unknown>;

  constructor(tokenizerJson: object, tokenizerConfig: Record<string, unknown>) {
    this.inner = new Tokenizer(tokenizerJson, tokenizerConfig);
    this.config = tokenizerConfig;
  }

  static async load(source: ModelSource, signal?: AbortSignal): Promise<TextTokenizer> {
    const json = parseJson(await source.text('tokenizer.json', signal), 'tokenizer.json');
    let cfg: Record<string, unknown> = {};
    if (await source.exists('tokenizer_config.json', signal)) {
      cfg = parseJson(await source.text('tokenizer_config.json', signal), 'tokenizer_config.json') as Record<string, unknown>;
    }
    return new TextTokenizer(json, cfg);
  }

  /** Token ids of `text`, with the model's special tokens (BOS) unless told otherwise. */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: number[], skipSpecialTokens = true): string {
    return this.inner.decode(ids, { skip_special_tokens: skipSpecialTokens });
  }

  /** A streaming decoder: feed generated ids, get the new text they complete. */
  streamDecoder(contextIds: number[]): StreamDecoder {
    return new StreamDecoder(this, contextIds);
  }
}

/**
 * Incremental detokenization that is right at token boundaries: text is the decode of
 * (context + generated) minus the decode of the context, so leading-space rules and
 * multi-token characters come out as the full decode would. A trailing U+FFFD (an incomplete
 * UTF-8 sequence from byte-fallback tokens) is held back until the character completes, so a
 * character split over several tokens is never shown as replacement characters mid-stream.
 * The context is a short window of the tokens before; every WINDOW tokens, at a point where no
 * character is pending, the window moves on (the last 4 tokens become the context), so each step
 * decodes O(WINDOW) tokens however long the generation gets.
 */
export class StreamDecoder {
  private static readonly WINDOW = 64;
  private readonly tok: TextTokenizer;
  private ctx: number[];
  private ctxText: string;
  private ids: number[] = [];
  private emitted = 0;
  /** Text of earlier windows (all emitted). */
  private done = '';

  constructor(tok: TextTokenizer, contextIds: number[]) {
    this.tok = tok;
    this.ctx = contextIds.slice(-4);
    this.ctxText = tok.decode(this.ctx);
  }

  private windowText(): string {
    const full = this.tok.decode([...this.ctx, ...this.ids]);
    return full.startsWith(this.ctxText) ? full.slice(this.ctxText.length) : this.tok.decode(this.ids);
  }

  /** Adds one id; returns the newly completed text (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.windowText();
    if (text.endsWith('\uFFFD')) return '';
    const out = text.slice(this.emitted);
    this.emitted = text.length;
    if (this.ids.length >= StreamDecoder.WINDOW) {
      this.done += text;
      this.ctx = [...this.ctx, ...this.ids].slice(-4);
      this.ctxText = this.tok.decode(this.ctx);
      this.ids = [];
      this.emitted = 0;
    }
    return out;
  }

  /** Everything not yet emitted (at the end of generation, incomplete characters included). */
  flush(): string {
    const text = this.windowText();
    const out = text.slice(this.emitted);
    this.emitted = text.length;
    return out;
  }

  /** All text of the generated ids. */
  get text(): string {
    return this.done + this.windowText();
  }
}

function parseJson(s: string, file: string): object {
  const v = parseJsonText(s, file);
  if (typeof v !== 'object' || v === null) throw new NibbleError('bad-config', `${file} is not valid JSON: not an object`);
  return v;
}
