#!/usr/bin/env bash
# Runs nibble's benchmark on a GPU machine from the kit bench/device/prepare.sh packed (no package
# registry, no network, no Chromium, perhaps no Node), in under 8 minutes:
#   1. unpacks deno and, when the machine has no Vulkan loader, Debian's libvulkan1 (dpkg -x);
#   2. finds the Vulkan driver: the machine's ICDs, else the NVIDIA ICD (nvidia_icd.json, or one
#      written for the libGLX_nvidia.so.0 it finds), and prints the adapter (adapter.json);
#   3. writes synthetic models of the llama-3.2-1b and smollm2-360m shapes (nibble synth);
#   4. benches them under `--runtime deno` in f32, f16, int8, nf4 and nf4-dq with the roofline probe
#      and --profile, plus a speculative row (f16 target, nf4 self-draft of the 1B), as JSON lines;
#   5. writes table.md (the rows as a markdown table) beside them.
#
# Usage: bash bench/device/run.sh OUT_DIR [--gpu native|swiftshader] [--quick]
#   --gpu swiftshader   SwiftShader's Vulkan driver (a machine without a GPU: checks the kit end to end)
#   --quick             1-layer models, f32 and nf4 only, short runs (implied by --gpu swiftshader)
# Environment: NIBBLE_DEVICE_WORK (scratch folder, default /tmp/nibble-device), NIBBLE_DEVICE_BUDGET_S
# (seconds for the whole run, default 450).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
kit="$here/kit"
out="${1:-}"
[ -n "$out" ] && [ "${out#-}" = "$out" ] || { echo "usage: bash bench/device/run.sh OUT_DIR [--gpu native|swiftshader] [--quick]" >&2; exit 2; }
shift
gpu=native
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) gpu="${2:-}"; shift 2 ;;
    --gpu=*) gpu="${1#--gpu=}"; shift ;;
    --quick) quick=1; shift ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$gpu" in native | swiftshader) ;; *) echo "run.sh: --gpu must be native or swiftshader" >&2; exit 2 ;; esac
[ "$gpu" = swiftshader ] && quick=1
[ -f "$kit/deno.xz" ] && [ -f "$kit/dist/runner.js" ] || { echo "run.sh: no kit at $kit: run bench/device/prepare.sh first" >&2; exit 1; }

start=$(date +%s)
budget="${NIBBLE_DEVICE_BUDGET_S:-450}"
work="${NIBBLE_DEVICE_WORK:-/tmp/nibble-device}"
mkdir -p "$out" "$work"
out="$(cd "$out" && pwd)"
exec 3>&2 # progress lines reach the terminal even while a step's output is redirected
log() { echo "run.sh: $*" | tee -a "$out/run.log" >&3; }
elapsed() { echo $(($(date +%s) - start)); }
log "kit $(sed -n 's/^commit: //p' "$kit/MANIFEST" 2>/dev/null), gpu $gpu, quick $quick, out $out"

# --- 1. deno ----------------------------------------------------------------------------------
deno="$work/deno"
if [ ! -x "$deno" ] || [ "$kit/deno.xz" -nt "$deno" ]; then
  log "unpacking deno"
  if command -v xz >/dev/null; then
    xz -dc "$kit/deno.xz" >"$deno.tmp"
  elif command -v python3 >/dev/null; then
    python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$kit/deno.xz" "$deno.tmp"
  else
    log "no xz and no python3 to unpack deno.xz"; exit 1
  fi
  chmod +x "$deno.tmp" && mv "$deno.tmp" "$deno"
fi
"$deno" --version | head -1 | tee -a "$out/run.log"

# --- 1b. the Vulkan loader ----------------------------------------------------------------------
have_loader() { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; }
extract_deb() { # extract_deb DEB DIR: dpkg -x, else ar + tar in python
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$2"; return; fi
  python3 - "$1" "$2" <<'PY'
import io, sys, tarfile
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'!<arch>\n'
i = 8
while i < len(data):
    name, size = data[i:i + 16].decode().strip(), int(data[i + 48:i + 58])
    body = data[i + 60:i + 60 + size]
    if name.startswith('data.tar'):
        tarfile.open(fileobj=io.BytesIO(body)).extractall(sys.argv[2])
    i += 60 + size + (size & 1)
PY
}
if [ "$gpu" = native ] && ! have_loader; then
  log "no Vulkan loader on the machine: installing the kit's libvulkan1 into $work/vulkan"
  rm -rf "$work/vulkan" && mkdir -p "$work/vulkan"
  for d in "$kit"/debs/*.deb; do extract_deb "$d" "$work/vulkan" || log "could not extract $d"; done
  lib="$(dirname "$(find "$work/vulkan" -name 'libvulkan.so.1' | head -1)")"
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# --- 2. the Vulkan driver -----------------------------------------------------------------------
icd_dirs="/usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d"
if [ "$gpu" = swiftshader ]; then
  icd=/usr/lib/chromium/vk_swiftshader_icd.json
  [ -f "$icd" ] || { log "no SwiftShader ICD at $icd (Debian's chromium ships it)"; exit 1; }
  export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd"
  export LD_LIBRARY_PATH="/usr/lib/chromium${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
elif [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  icds=$(ls $icd_dirs 2>/dev/null | grep -c '\.json$' || true)
  nv=""
  for f in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.x86_64.json; do
    [ -f "$f" ] && { nv="$f"; break; }
  done
  if [ -z "$nv" ]; then
    # the NVIDIA driver's Vulkan ICD is libGLX_nvidia.so.0; container runtimes often mount it without the json
    so=$( (ldconfig -p 2>/dev/null | awk '/libGLX_nvidia\.so\.0 / { print $NF; exit }'; find /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia /usr/lib -maxdepth 3 -name 'libGLX_nvidia.so.0' 2>/dev/null) | head -1)
    if [ -n "$so" ]; then
      nv="$work/nvidia_icd.json"
      printf '{ "file_format_version": "1.0.0", "ICD": { "library_path": "%s", "api_version": "1.3" } }\n' "$so" >"$nv"
      log "wrote $nv for $so"
    fi
  fi
  registered_nv=$(ls $icd_dirs 2>/dev/null | grep -ci 'nvidia.*\.json$' || true)
  log "registered Vulkan ICDs: $(ls $icd_dirs 2>/dev/null | grep '\.json$' | tr '\n' ' ')"
  if [ -n "$nv" ] && [ "$registered_nv" = 0 ]; then
    # no driver registered, or only others (Mesa's lavapipe would win over the GPU the loader cannot see)
    export VK_DRIVER_FILES="$nv" VK_ICD_FILENAMES="$nv"
    log "the NVIDIA driver is not registered: VK_DRIVER_FILES=$nv"
  elif [ "$icds" = 0 ]; then
    log "warning: no Vulkan ICD found (wgpu may fall back to GL or fail)"
  fi
fi
log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-} VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" DENO_DIR="$work/deno-dir" NO_COLOR=1
export NIBBLE_DENO="$deno" NIBBLE_DIST="$kit/dist" NIBBLE_MODELS_DIR="$kit/models" NIBBLE_CACHE_DIR="$work/cache"
if "$deno" run --allow-all --no-config --no-lock --quiet "$here/adapter.ts" >"$out/adapter.json" 2>>"$out/run.log"; then
  log "adapter: $(cat "$out/adapter.json")"
else
  log "no WebGPU adapter: $(cat "$out/adapter.json")"; exit 1
fi
if [ "$gpu" = native ] && grep -qiE 'llvmpipe|swiftshader|lavapipe' "$out/adapter.json" && [ "${NIBBLE_DEVICE_ALLOW_SOFTWARE:-}" != 1 ]; then
  # a full-size bench on a CPU adapter would only spend the budget (NIBBLE_DEVICE_ALLOW_SOFTWARE=1 goes on)
  log "the adapter is a software one: the GPU's Vulkan driver was not found (see run.log); stopping"
  exit 1
fi

# --- 3.–4. synthetic models and the bench --------------------------------------------------------
if command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  nibble=(node "$here/nibble.mjs")
  log "CLI under node $(node --version)"
else
  nibble=("$deno" run --allow-all --no-config --no-lock --quiet "$here/nibble.mjs")
  log "CLI under deno (no node >= 20 here)"
fi
# step NAME SECONDS COMMAND...: runs with a timeout cut to the time left; records its outcome
step() {
  local name="$1" want="$2"; shift 2
  local left=$((budget - $(elapsed)))
  local t=$((want < left ? want : left))
  if [ "$t" -lt 10 ]; then
    log "$name: skipped (time budget spent)"
    echo "{\"type\":\"step\",\"name\":\"$name\",\"skipped\":true}" >>"$out/steps.jsonl"
    return 1
  fi
  log "$name (≤ ${t}s)"
  local t0=$(date +%s)
  timeout -k 10 "$t" "$@"
  local rc=$?
  log "$name: exit $rc after $(($(date +%s) - t0))s"
  echo "{\"type\":\"step\",\"name\":\"$name\",\"rc\":$rc,\"seconds\":$(($(date +%s) - t0))}" >>"$out/steps.jsonl"
  return $rc
}
: >"$out/steps.jsonl"

if [ "$quick" = 1 ]; then
  # a software adapter streams ~1 GB/s and compiles slowly: the kit's path end to end, not numbers
  layers=(--layers 1)
  quants_1b=f32 quants_360m=f32,nf4
  runs=(--runs 1 --new-tokens 4 --prompt-tokens 8 --prefill-lengths "" --probe-mib 16)
  spec_model=smollm2-360m spec_quant=f32 spec_draft=f32
else
  layers=()
  quants_1b=f32,f16,int8,nf4,nf4-dq quants_360m=f32,f16,int8,nf4,nf4-dq
  runs=(--runs 3)
  spec_model=llama-3.2-1b spec_quant=f16 spec_draft=nf4
fi
for shape in llama-3.2-1b smollm2-360m; do
  step "synth $shape" 150 "${nibble[@]}" synth --shape "$shape" --out "$work/models/$shape${layers:+-1l}" "${layers[@]}" >>"$out/run.log" 2>&1
done
bench() { # bench NAME SECONDS SHAPE ARGS...
  local name="$1" want="$2" shape="$3"; shift 3
  step "bench $name" "$want" "${nibble[@]}" bench --model "$work/models/$shape${layers:+-1l}" --runtime deno --gpu "$gpu" --json "${runs[@]}" "$@" \
    >"$out/bench-$name.jsonl" 2>"$out/bench-$name.log"
}
bench llama-3.2-1b 200 llama-3.2-1b --quant "$quants_1b" --profile
bench smollm2-360m 120 smollm2-360m --quant "$quants_360m" --profile
bench speculative 100 "$spec_model" --quant "$spec_quant" --draft-quant "$spec_draft" --draft-tokens 4

# --- 5. the table -------------------------------------------------------------------------------
nibble_table() { if command -v node >/dev/null; then node "$here/table.mjs" "$@"; else "$deno" run --allow-all --no-config --quiet "$here/table.mjs" "$@"; fi; }
nibble_table "$out" >"$out/table.md" 2>>"$out/run.log" || log "table.md failed"
log "done in $(elapsed)s: $out"
cat "$out/table.md"
