import { FsSource } from '../../src/node/fs-source.ts';
import { openCheckpoint, toF32 } from '../../src/loader/safetensors.ts';
import { parseConfig, ropeInvFreq, type LlamaConfig } from '../../src/model/config.ts';
import { tensorNames } from '../../src/model/checkpoint.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RefDims, RefWeights } from './cpu.ts';

/** Reads a model folder's weights into f32 arrays for the CPU reference (test sizes only). */
export async function loadRefModel(dir: string): Promise<{ cfg: LlamaConfig; w: RefWeights; dims: RefDims }> {
  const cfg = parseConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')));
  const src = new FsSource(dir);
  const table = await openCheckpoint(src);
  const get = async (name: string | undefined): Promise<Float32Array> => {
    if (!name) throw new Error('tensor name missing');
    const t = table.tensors.get(name);
    if (!t) throw new Error(`missing ${name}`);
    return Float32Array.from(toF32(await src.range(t.file, t.start, t.end), t.dtype));
  };
  const names = tensorNames(cfg);
  const embed = await get(names.embed);
  const layers: RefWeights['layers'] = [];
  for (const L of names.layers) {
    layers.push({
      inputNorm: await get(L.inputNorm),
      postNorm: await get(L.postNorm),
      q: await get(L.q),
      k: await get(L.k),
      v: await get(L.v),
      o: await get(L.o),
      qBias: L.qBias ? await get(L.qBias) : undefined,
      kBias: L.kBias ? await get(L.kBias) : undefined,
      vBias: L.vBias ? await get(L.vBias) : undefined,
      gate: await get(L.gate),
      up: await get(L.up),
      down: await get(L.down),
    });
  }
  const w: RefWeights = {
    embed,
    lmHead: names.lmHead ? await get(names.lmHead) : embed,
    finalNorm: await get(names.finalNorm),
    layers,
  };
  const dims: RefDims = {
    H: cfg.hiddenSize,
    I: cfg.intermediateSize,
    NH: cfg.numHeads,
    NKV: cfg.numKvHeads,
    D: cfg.headDim,
    V: cfg.vocabSize,
    eps: cfg.rmsNormEps,
    invFreq: ropeInvFreq(cfg),
  };
  return { cfg, w, dims };
}
