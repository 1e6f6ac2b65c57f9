// The results of bench/device/run.sh as markdown: the adapter, each roofline probe, one table of
// every bench row, and per profile the three costliest kernels. Usage: node table.mjs OUT_DIR
// (or deno run --allow-all table.mjs OUT_DIR). Reads OUT_DIR/adapter.json and OUT_DIR/bench-*.jsonl.
import process from 'node:process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: table.mjs OUT_DIR\n');
  process.exit(2);
}
const lines = (f) =>
  readFileSync(join(dir, f), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
const fmt = (x, d) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '–');
const out = [];
if (existsSync(join(dir, 'adapter.json'))) {
  const [a] = lines('adapter.json');
  if (a) out.push(`Adapter: ${a.description || a.device} (vendor ${a.vendor}${a.architecture ? `, ${a.architecture}` : ''}); features: ${a.features.join(', ')}`, '');
}
const rows = [];
const profiles = [];
for (const f of readdirSync(dir).filter((f) => /^bench-.*\.jsonl$/.test(f)).sort()) {
  for (const r of lines(f)) {
    if (r.type === 'probe') out.push(`${f}: roofline ${fmt(r.rooflineGBps, 1)} GB/s (${r.timer}, ${(r.bytes / 2 ** 20).toFixed(0)} MiB) on ${r.adapter}`);
    else if (r.type === 'row') rows.push(r);
    else if (r.type === 'profile') profiles.push(r);
  }
}
out.push('');
out.push('| model | format | bits/w | weights MiB | load s | prefill 64 tok/s | prefill 512 tok/s | decode tok/s | ms/token | decode GB/s | % roofline | draft | accept % | speed-up |');
out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|');
for (const r of rows) {
  const model = r.model.split('/').pop();
  out.push(
    `| ${model} | ${r.format} | ${fmt(r.bitsPerWeight, 2)} | ${fmt(r.weightBytes / 2 ** 20, 1)} | ${fmt(r.loadMs / 1000, 1)} | ${fmt(r.prefill64TokensPerSecond, 1)} | ${fmt(r.prefill512TokensPerSecond, 1)} | ${fmt(r.decodeTokensPerSecond, 2)} | ${fmt(r.msPerToken, 2)} | ${fmt(r.decodeGBps, 1)} | ${fmt(r.rooflinePercent, 1)} | ${r.draft ? `${r.draft} ×${r.draftTokens}` : '–'} | ${r.draft ? fmt(100 * r.acceptanceRate, 0) : '–'} | ${r.speedupVsPlain == null ? '–' : `${r.speedupVsPlain.toFixed(2)}×`} |`,
  );
}
for (const p of profiles) {
  const model = p.model.split('/').pop();
  if (!p.available) {
    out.push('', `profile ${model} ${p.format}: not available (${p.reason})`);
    continue;
  }
  const top = [...p.kernels].sort((a, b) => b.msPerStep - a.msPerStep).slice(0, 3);
  out.push(
    '',
    `profile ${model} ${p.format}: ${fmt(p.gpuMsPerStep, 3)} ms of kernels per step, ${fmt(p.wallMsPerStep, 3)} ms wall; top: ${top.map((k) => `${k.kernel} ${k.msPerStep.toFixed(3)} ms (${k.percent.toFixed(0)}%)`).join(', ')}`,
  );
}
process.stdout.write(out.join('\n') + '\n');
