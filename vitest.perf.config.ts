import { defineConfig } from 'vitest/config';

/** Kernel timings (`npm run bench:kernels`): measurements printed to the console, not checks. */
export default defineConfig({
  test: {
    include: ['test/perf/**/*.perf.ts'],
    globalSetup: ['test/setup/global.ts'],
    fileParallelism: false,
    testTimeout: 1_800_000,
    hookTimeout: 120_000,
  },
});
