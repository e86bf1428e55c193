#!/usr/bin/env bash
# The 8B-class end-to-end check on the GPU machine, from raw text: a Llama-3.1-8B-shaped
# checkpoint with random bfloat16 weights (scripts/make_random_llama.py) and a Llama-3-kind
# tokenizer.json with the real 128256-token vocabulary (scripts/make_llama3_tokenizer.py), then
# `xattn calibrate --model DIR --data text.txt --device cuda` with its defaults, timed. Then the
# batched statistics pass on the 8B layer shape (LAYERS layers, default 4, so it fits the
# session's GPU time; the per-layer cost is the same as in the 32-layer model): 8 x 32K and
# 64 x 4K tokens at --batch 1 against a larger batch.
#
#   scripts/gpu-e2e-8b.sh OUT_DIR [LAYERS]
#
# Same environment as scripts/gpu-calibrate.sh; builds only the xattn executable (build-gpu).
set -uo pipefail
out=${1:?usage: scripts/gpu-e2e-8b.sh OUT_DIR [LAYERS]}
layers=${2:-4}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-e2e-8b
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
gpu_configure || exit 1
if ! ninja -C "$build" -j16 xattn > "$out/build.log" 2>&1; then
  note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -30; exit 1
fi
note "built in $(( $(date +%s) - start )) s"
xattn="$build/calibrate/xattn"

model=/tmp/llama8b
t0=$(date +%s)
python3 scripts/make_random_llama.py "$model" /tmp/llama8b_unused_ids.txt --tokens 16 \
  > "$out/make_model.log" 2>&1 || { note "make_random_llama FAILED"; tail -5 "$out/make_model.log"; exit 1; }
python3 scripts/make_llama3_tokenizer.py "$model" | tee -a "$out/summary.txt"
note "random 8B checkpoint + tokenizer written in $(( $(date +%s) - t0 )) s"

# Raw text: the bundled English texts four times over (enough for every sample below).
text=/tmp/xattn_e2e_text.txt
for _ in 1 2 3 4; do cat examples/data/calibration.txt examples/data/haystack.txt; done > "$text"
t0=$(date +%s%N)
"$xattn" calibrate --model "$model" --data "$text" --device cuda --out "$out/profile-8b.h5" \
  > "$out/calibrate_8b.log" 2>&1
code=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
note "xattn calibrate --model $model --data text.txt --device cuda: exit $code, $((ms / 1000)).$(printf %03d $((ms % 1000))) s wall"
grep -E "^(samples|data|tokens|time|per-head|uniform|held-out)" "$out/calibrate_8b.log" | tee -a "$out/summary.txt"
[ $code -eq 0 ] || tail -8 "$out/calibrate_8b.log" | tee -a "$out/summary.txt"

# Batched statistics on the 8B layer shape.
if [ "$layers" -gt 0 ] && time_left "batched statistics"; then
  small=/tmp/llama8b_l$layers
  python3 scripts/make_random_llama.py "$small" /tmp/llama8b_ids.txt --tokens $((64 * 4096 + 16)) \
    --layers "$layers" > "$out/make_small.log" 2>&1 || { note "small model FAILED"; exit 1; }
  for shape in "32768 8 8" "4096 64 16"; do
    read -r len samples big <<< "$shape"
    for batch in 1 "$big"; do
      time_left "$samples x $len at --batch $batch" || break
      log="$out/batch_${len}_${samples}_b$batch.log"
      t0=$(date +%s%N)
      "$xattn" calibrate --model "$small" --data /tmp/llama8b_ids.txt --data-format ids \
        --sample-len "$len" --samples "$samples" --batch "$batch" --device cuda \
        --metric output_error --holdout 0 --frontier-points 0 \
        --out "$out/profile-b${len}-${batch}.h5" --force > "$log" 2>&1
      code=$?
      ms=$(( ($(date +%s%N) - t0) / 1000000 ))
      note "8B shape, $layers layers, $samples x $len tokens, --batch $batch: exit $code, $((ms / 1000)).$(printf %03d $((ms % 1000))) s wall"
      grep -E "^time" "$log" | tee -a "$out/summary.txt"
      [ $code -eq 0 ] || tail -5 "$log" | tee -a "$out/summary.txt"
    done
  done
fi
rm -f "$out"/profile-b*.h5
archive_logs profile-8b.h5
