import { Engine, type LoadOptions } from '../../src/api/engine.ts';
import { NibbleError } from '../../src/errors.ts';

/**
 * Large-vocabulary loads on a device with WebGPU's default limits (128 MiB per storage binding):
 * the embedding / LM head is stored in row parts (SplitWeight) and the logits must still be right.
 */
export const splitApi = {
  async splitLogits(a: { model: string; ids: number[]; load?: LoadOptions }) {
    const adapter = (await navigator.gpu.requestAdapter())!;
    const device = await adapter.requestDevice({}); // no requiredLimits: the default limits
    const limits = { maxBufferSize: device.limits.maxBufferSize, maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize };
    let engine: Engine | null = null;
    try {
      engine = await Engine.load(a.model, { cache: false, ...a.load, device });
      const rows = await engine.logits(a.ids, a.ids.length);
      const greedy = await engine.generate('', { promptIds: a.ids, maxNewTokens: 4, ignoreEos: true }).result;
      return { error: null, limits, logits: rows.map((r) => Array.from(r)), generated: greedy.tokenIds, info: { weightBytes: engine.info.weightBytes } };
    } catch (e) {
      const err = e instanceof NibbleError ? { code: e.code, message: e.message } : { code: 'plain', message: String(e) };
      return { error: err, limits, logits: [], generated: [], info: null };
    } finally {
      await engine?.dispose();
      device.destroy();
    }
  },
};
