import { describe, expect, it } from 'vitest';
import '../../src/quant/formats.ts';
import { formatNames } from '../../src/quant/format.ts';
import { FORMAT_NAMES, isFormatName } from '../../src/quant/plan.ts';

describe('format names', () => {
  it('the FormatName type (`quant` of LoadOptions) lists exactly the registered formats', () => {
    expect([...formatNames()].sort()).toEqual([...FORMAT_NAMES].sort());
    expect(isFormatName('nf4-dq')).toBe(true);
    expect(isFormatName('q4_0')).toBe(false);
    expect(isFormatName(4)).toBe(false);
  });
});
