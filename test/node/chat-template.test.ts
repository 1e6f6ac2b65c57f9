import { describe, expect, it } from 'vitest';
import { ChatTemplate } from '../../src/api/chat.ts';
import { generateOptions } from '../../src/api/openai.ts';
import { isNibbleError } from '../../src/errors.ts';

/**
 * Chat templates rendered with @huggingface/jinja against known-good strings (what transformers'
 * apply_chat_template produces for these templates), and the OpenAI → nibble option mapping.
 */

// Qwen2-Instruct's template (ChatML)
const CHATML =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Meta-Llama-3-8B-Instruct's template
const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

describe('chat templates', () => {
  it('ChatML (Qwen): default system prompt, turns, generation prompt', () => {
    const t = ChatTemplate.fromTokenizerConfig({ chat_template: CHATML, eos_token: '<|im_end|>' })!;
    expect(t.render([{ role: 'user', content: 'Hello' }])).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(
      t.render(
        [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: '2+2?' },
          { role: 'assistant', content: '4' },
          { role: 'user', content: [{ type: 'text', text: 'And ' }, { type: 'text', text: '3+3?' }] },
        ],
        { addGenerationPrompt: false },
      ),
    ).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n',
    );
  });

  it('Llama 3: bos_token from tokenizer_config (an AddedToken object), trimmed content, headers', () => {
    const t = ChatTemplate.fromTokenizerConfig({
      chat_template: LLAMA3,
      bos_token: { content: '<|begin_of_text|>', lstrip: false },
      eos_token: '<|eot_id|>',
    })!;
    expect(
      t.render([
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: '  Hi!  ' },
      ]),
    ).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  it('named templates, raise_exception, and no template at all', () => {
    const named = ChatTemplate.fromTokenizerConfig({
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}" },
      ],
    })!;
    expect(named.render([{ role: 'user', content: 'x' }])).toBe('[user:x]');
    const strict = new ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok");
    expect(strict.render([{ role: 'user', content: 'a' }])).toBe('ok');
    let err: unknown;
    try {
      strict.render([{ role: 'assistant', content: 'a' }]);
    } catch (e) {
      err = e;
    }
    expect(isNibbleError(err, 'bad-argument')).toBe(true);
    expect(String((err as Error).message)).toMatch(/first must be user/);
    expect(ChatTemplate.fromTokenizerConfig({ bos_token: '<s>' })).toBeNull();
    expect(ChatTemplate.fromTokenizerConfig({}, '{{ messages[0].content }}')!.render([{ role: 'user', content: 'from .jinja' }])).toBe('from .jinja');
  });
});

describe('OpenAI request → generate options', () => {
  it('maps names and OpenAI defaults', () => {
    const o = generateOptions({ max_tokens: 12, top_p: 0.9, seed: 5, stop: '###', presence_penalty: 0.5, logit_bias: { '7': -100 }, top_k: 40 });
    expect(o).toMatchObject({ maxNewTokens: 12, temperature: 1, topP: 0.9, seed: 5, stop: ['###'], presencePenalty: 0.5, frequencyPenalty: 0, logitBias: { '7': -100 }, topK: 40 });
    expect(generateOptions({}).maxNewTokens).toBe(Infinity);
    expect(generateOptions({ max_completion_tokens: 3, max_tokens: 9 }).maxNewTokens).toBe(3);
    expect(() => generateOptions({ n: 2 })).toThrow(/n = 2/);
    expect(() => generateOptions({ stop: ['a', 'b', 'c', 'd', 'e'] })).toThrow(/at most 4/);
  });
});
