import { Engine, type LoadOptions } from '../../src/api/engine.ts';
import { registerFusedLlama } from '../helpers/fused-variant.ts';

/**
 * A made-up architecture variant (test/helpers/fused-variant.ts: q/k/v and gate/up stored fused),
 * registered in the page and loaded beside the stock checkpoint it was made from.
 */
export const variantApi = {
  async variantVsStock(a: { variant: string; stock: string; ids: number[]; load?: LoadOptions }) {
    registerFusedLlama();
    const run = async (model: string) => {
      const engine = await Engine.load(model, { cache: false, ...a.load });
      try {
        const logits = await engine.logits(a.ids, a.ids.length);
        const r = await engine.generate('', { promptIds: a.ids, maxNewTokens: 16, ignoreEos: true }).result;
        return { modelType: engine.info.config.modelType, logits: logits.map((l) => Array.from(l)), tokens: r.tokenIds, weights: engine.info.load!.weightsBuilt };
      } finally {
        await engine.dispose();
      }
    };
    return { variant: await run(a.variant), stock: await run(a.stock) };
  },
};
