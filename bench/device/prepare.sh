#!/usr/bin/env bash
# Packs the GPU-machine benchmark kit into bench/device/kit/ (git-ignored, ≤ 60 MiB): everything
# bench/device/run.sh needs on a machine with a GPU but no package registry, no Chromium and
# perhaps no Node:
#   deno.xz           the deno binary of the npm devDependency, xz-compressed
#   dist/             the built bundle (runner + CLI; no source maps, no type declarations)
#   debs/             the Vulkan loader from Debian (libvulkan1 and its dependencies), amd64
#   models/llama2-tokenizer/   the stand-in tokenizer the synthetic models copy
# No model: run.sh makes the synthetic models on the GPU machine itself (`nibble synth`).
#
# Usage: bash bench/device/prepare.sh      (NIBBLE_SKIP_BUILD=1: use the dist/ already built)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
kit="$here/kit"
limit=$((60 * 1024 * 1024))
cd "$root"

if [ "${NIBBLE_SKIP_BUILD:-}" != 1 ]; then
  echo "prepare: building the bundle (npm run build)"
  npm run build --silent >/dev/null
fi
[ -f dist/runner.js ] && [ -f dist/node/cli.js ] || { echo "prepare: dist/ is not built (npm run build)" >&2; exit 1; }

deno="${NIBBLE_DENO:-}"
for c in node_modules/@deno/linux-x64-glibc/deno node_modules/deno/deno; do
  [ -n "$deno" ] || { [ -x "$c" ] && deno="$c"; } || true
done
[ -n "$deno" ] && [ -x "$deno" ] || { echo "prepare: no deno binary (npm ci installs the deno devDependency, or set NIBBLE_DENO)" >&2; exit 1; }

rm -rf "$kit"
mkdir -p "$kit/debs" "$kit/models"

echo "prepare: compressing $deno ($("$deno" --version | head -1))"
xz -T0 -6 -c "$deno" >"$kit/deno.xz"

echo "prepare: copying the bundle"
mkdir -p "$kit/dist"
(cd dist && find . -name '*.js' -not -path './types/*' -exec cp --parents {} "$kit/dist/" \;)

echo "prepare: copying the stand-in tokenizer"
tok="${NIBBLE_MODELS_DIR:-$root/../shared/models}/llama2-tokenizer"
mkdir -p "$kit/models/llama2-tokenizer"
cp "$tok/tokenizer.json" "$tok/tokenizer_config.json" "$kit/models/llama2-tokenizer/"

echo "prepare: downloading the Vulkan loader (.deb, amd64)"
# libvulkan1 and its Depends (libc6, which the GPU machine has but is small enough to carry)
pkgs=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances libvulkan1:amd64 2>/dev/null |
  awk '/Depends:/ { gsub(/[<>]/, "", $2); print $2 }' | sort -u)
(cd "$kit/debs" && apt-get download -q -o APT::Sandbox::User=root "libvulkan1:amd64" >/dev/null)
for p in $pkgs; do
  case "$p" in libc6*) continue ;; esac # glibc is on every machine deno runs on; never replace it
  (cd "$kit/debs" && apt-get download -q -o APT::Sandbox::User=root "${p%%:*}:amd64" >/dev/null) || echo "prepare: warning: could not download $p" >&2
done
ls "$kit/debs"/libvulkan1_*.deb >/dev/null

cat >"$kit/MANIFEST" <<EOF
nibble GPU-machine kit
commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')
made: $(date -u +%Y-%m-%dT%H:%M:%SZ)
deno: $("$deno" --version | head -1)
debs: $(cd "$kit/debs" && ls | tr '\n' ' ')
EOF

size=$(du -sb "$kit" | cut -f1)
echo "prepare: kit $kit: $((size / 1024 / 1024)) MiB ($size bytes)"
[ "$size" -le "$limit" ] || { echo "prepare: the kit is over 60 MiB" >&2; exit 1; }
