import type { FormatName } from '../../src/quant/plan.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openHarness, type Caller } from './page.ts';
import { dropTensor, editJson, modelVariant } from '../helpers/model-variants.ts';

/**
 * Bad input through Engine.load in the browser: every case is a NibbleError with a code and a
 * message naming the problem (never a hang, never silent wrong output).
 */
let call: Caller;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ call, close } = await openHarness());
});
afterAll(async () => close?.());

const url = (name: string) => `/cache/test-models/${name}`;

describe('Engine.load errors', () => {
  it('missing config.json → not-found naming the file', async () => {
    modelVariant('no-config', (d) => rmSync(join(d, 'config.json')));
    const e = await call('loadError', { model: url('no-config') });
    expect(e?.code).toBe('not-found');
    expect(e?.message).toMatch(/config\.json/);
  });

  it('config.json that is not JSON → bad-config', async () => {
    modelVariant('bad-json', (d) => writeFileSync(join(d, 'config.json'), '{"model_type": "llama",'));
    const e = await call('loadError', { model: url('bad-json') });
    expect(e?.code).toBe('bad-config');
    expect(e?.message).toMatch(/config\.json/);
  });

  it('unsupported model_type → unsupported-architecture naming the supported ones', async () => {
    modelVariant('mamba', (d) => editJson(join(d, 'config.json'), (j) => (j.model_type = 'mamba')));
    const e = await call('loadError', { model: url('mamba') });
    expect(e?.code).toBe('unsupported-architecture');
    expect(e?.message).toMatch(/mamba/);
    expect(e?.message).toMatch(/llama, mistral, qwen2/);
  });

  it('missing tensor → missing-tensor naming it', async () => {
    modelVariant('no-q', (d) => dropTensor(d, 'model.layers.0.self_attn.q_proj.weight'));
    const e = await call('loadError', { model: url('no-q') });
    expect(e?.code).toBe('missing-tensor');
    expect(e?.message).toMatch(/model\.layers\.0\.self_attn\.q_proj\.weight/);
  });

  it('config shape disagreeing with the tensors → bad-tensor', async () => {
    modelVariant('wrong-shape', (d) => editJson(join(d, 'config.json'), (j) => (j.intermediate_size = 128)));
    const e = await call('loadError', { model: url('wrong-shape') });
    expect(e?.code).toBe('bad-tensor');
    expect(e?.message).toMatch(/gate_proj|up_proj|down_proj/);
  });

  it('corrupt safetensors header → bad-safetensors', async () => {
    modelVariant('bad-header', (d) => {
      const f = join(d, 'model.safetensors');
      const b = readFileSync(f);
      b.writeBigUInt64LE(BigInt(b.length * 2), 0); // header length beyond the file
      writeFileSync(f, b);
    });
    const e = await call('loadError', { model: url('bad-header') });
    expect(e?.code).toBe('bad-safetensors');
    expect(e?.message).toMatch(/model\.safetensors/);
  });

  it('truncated safetensors data → bad-safetensors', async () => {
    modelVariant('truncated', (d) => {
      const f = join(d, 'model.safetensors');
      const b = readFileSync(f);
      writeFileSync(f, b.subarray(0, b.length - 1000));
    });
    const e = await call('loadError', { model: url('truncated') });
    expect(e?.code).toBe('bad-safetensors');
  });

  it('unknown quantization format → bad-argument listing the formats', async () => {
    const e = await call('loadError', { model: '/models/stories260K', load: { quant: 'q3_k' as FormatName } }); // a JS caller's typo: refused at run time
    expect(e?.code).toBe('bad-argument');
    expect(e?.message).toMatch(/q3_k/);
    expect(e?.message).toMatch(/f32/);
  });

  it('draft options of the wrong kind → bad-argument naming the option', async () => {
    const e = await call('loadError', { model: '/models/stories260K', load: { draft: { quant: 'f32', pipeline: 'yes' as unknown as boolean } } });
    expect(e?.code).toBe('bad-argument');
    expect(e?.message).toMatch(/draft pipeline must be true or false, got the string "yes"/);
    const k = await call('loadError', { model: '/models/stories260K', load: { draft: { tokens: 0 } } });
    expect(k?.code).toBe('bad-argument');
    expect(k?.message).toMatch(/draft tokens must be an integer in 1\.\.32, got 0/);
  });

    it('a lost device surfaces as device-lost on the engine; a new load gets a fresh device and works', async () => {
    const e = await call('deviceLost', { model: '/models/stories260K' });
    expect(e?.code).toBe('device-lost');
    expect(e?.engineError).toBe('device-lost');
    expect(e?.message).toMatch(/GPU device was lost/);
    expect(e?.later).toBe('device-lost'); // every later call too
    expect(e?.newDevice).toBe(true);
    expect(e?.reloadMatches).toBe(true); // the same greedy tokens as before the loss
  });

  it('a model URL that does not exist → not-found', async () => {
    const e = await call('loadError', { model: '/models/no-such-model' });
    expect(e?.code).toBe('not-found');
  });
});
