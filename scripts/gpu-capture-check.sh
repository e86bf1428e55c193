#!/usr/bin/env bash
# The transformers capture hook against the C++ runner on the GPU machine: both capture the
# bundled model's q/k/v over the same 4096 tokens (bf16, CUDA); the captures must agree layer by
# layer, and `xattn estimate` must read the hook's file.
#
#   scripts/gpu-capture-check.sh OUT_DIR
#
# Same environment as scripts/gpu-check.sh (PyTorch with CUDA, transformers and h5py in python3).
set -uo pipefail
out=${1:?usage: scripts/gpu-capture-check.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-capture-check
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DXATTN_BUILD_TESTS=OFF -DXATTN_BUILD_EXAMPLES=OFF > "$out/configure.log" 2>&1 \
  || { note "configure FAILED"; tail -30 "$out/configure.log"; exit 1; }
ninja -C "$build" -j16 xattn xattn_ops > "$out/build.log" 2>&1 \
  || { note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -20; exit 1; }
note "built xattn and xattn_ops in $(( $(date +%s) - start )) s"
xattn="$build/calibrate/xattn"
text=examples/data/calibration.txt
python3 examples/python/capture_transformers.py --text $text --len 4096 --out "$out/hf.h5" \
  --ops "$build/runtime/libxattn_ops.so" > "$out/hf_capture.log" 2>&1
note "transformers hook capture: exit $?, $(tail -1 "$out/hf_capture.log")"
"$xattn" capture --model examples/models/xattn-byte --text $text --max-len 4096 --device cuda \
  --store-dtype bfloat16 --out "$out/ours.h5" > "$out/our_capture.log" 2>&1
note "xattn capture: exit $?"
python3 examples/python/compare_captures.py "$out/hf.h5" "$out/ours.h5" --max-relative 0.05 \
  2>&1 | tee "$out/compare.log" | tee -a "$out/summary.txt"
note "compare: exit ${PIPESTATUS[0]}"
for f in hf ours; do
  "$xattn" estimate --capture "$out/$f.h5" > "$out/estimate_$f.log" 2>&1
  note "estimate on $f.h5: exit $?: $(grep -iE 'mean density' "$out/estimate_$f.log" | tail -1)"
done
rm -f "$out/hf.h5" "$out/ours.h5"
