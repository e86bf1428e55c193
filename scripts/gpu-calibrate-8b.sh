#!/usr/bin/env bash
# Times `xattn calibrate` on a Llama-3.1-8B-shaped model with random weights on the GPU machine:
# SAMPLES samples of 32K tokens, statistics of all 32 layers, search (no held-out validation).
#
#   scripts/gpu-calibrate-8b.sh OUT_DIR [SAMPLES]   (after scripts/gpu-calibrate.sh built build-gpu)
set -uo pipefail
out=${1:?usage: scripts/gpu-calibrate-8b.sh OUT_DIR [SAMPLES]}
samples=${2:-4}
mkdir -p "$out"
build=${XATTN_GPU_BUILD:-build-gpu}
export LD_LIBRARY_PATH=/opt/xs/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
t0=$(date +%s)
python3 scripts/make_random_llama.py /tmp/llama8b /tmp/llama8b_tokens.txt --tokens $((samples * 32768)) \
  > "$out/make_model.log" 2>&1 || { tail -5 "$out/make_model.log"; exit 1; }
echo "random 8B checkpoint written in $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
"$build/calibrate/xattn" calibrate --model /tmp/llama8b --data /tmp/llama8b_tokens.txt --data-format ids \
  --sample-len 32768 --samples "$samples" --holdout 0 --device cuda --out "$out/profile-8b.h5" \
  > "$out/calibrate_8b.log" 2>&1
echo "calibrate exit $?, $(( $(date +%s) - t0 )) s wall for $samples x 32K tokens, 32 layers"
grep -E "^(time|per-head|predicted)" "$out/calibrate_8b.log"
tail -3 "$out/calibrate_8b.log"
