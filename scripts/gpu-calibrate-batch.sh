#!/usr/bin/env bash
# Times the statistics pass of `xattn calibrate` on the GPU at several --batch sizes: the bundled
# model (examples/models/xattn-byte) on SAMPLES samples of 4096 tokens (default 64), --batch 1
# against the larger batches (default "1 8 16"), and checks that every batch size gives the same
# profile summary (the statistics are per sample, so only float rounding may differ).
#
#   scripts/gpu-calibrate-batch.sh OUT_DIR [SAMPLES] ["BATCHES"]
#
# Same environment as scripts/gpu-calibrate.sh (PyTorch with CUDA in python3, .devdebs/ unpacked);
# builds only the xattn executable into build-gpu (XATTN_GPU_BUILD). Only the statistics pass and
# the search run (--metric output_error, --holdout 0, --frontier-points 0: no sensitivity probe,
# no validation), so the time printed is the pass that --batch changes. Prints, per batch size, the
# wall time of the command and the "time: statistics" line; summary.txt in OUT_DIR keeps them.
set -uo pipefail
out=${1:?usage: scripts/gpu-calibrate-batch.sh OUT_DIR [SAMPLES] [\"BATCHES\"]}
samples=${2:-64}
batches=${3:-"1 8 16"}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-calibrate-batch
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
gpu_configure || exit 1
if ! ninja -C "$build" -j16 xattn > "$out/build.log" 2>&1; then
  note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -30; exit 1
fi
note "built in $(( $(date +%s) - start )) s"
xattn="$build/calibrate/xattn"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$out/summary.txt"

# The bundled texts (164K bytes: 40 samples of 4096 tokens) twice over: enough for 80 samples.
# Repeated text costs the same as new text; only the timing is measured here.
text=/tmp/xattn_batch_text.txt
cat examples/data/calibration.txt examples/data/haystack.txt \
    examples/data/calibration.txt examples/data/haystack.txt > "$text"

for batch in $batches; do
  time_left "--batch $batch" || break
  log="$out/calibrate_batch$batch.log"
  t0=$(date +%s%N)
  "$xattn" calibrate --model examples/models/xattn-byte --data "$text" --sample-len 4096 \
    --samples "$samples" --batch "$batch" --device cuda --metric output_error --holdout 0 \
    --frontier-points 0 --out "$out/profile-batch$batch.h5" --force > "$log" 2>&1
  code=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  wall=$(printf "%d.%03d" $((ms / 1000)) $((ms % 1000)))
  note "--batch $batch: exit $code, ${wall} s wall for $samples x 4096 tokens"
  grep -E "^time" "$log" | tee -a "$out/summary.txt"
  grep -E "^per-head thresholds" "$log" | tee -a "$out/summary.txt"
  [ $code -eq 0 ] || tail -5 "$log"
done
# Every batch size must have chosen the same thresholds (per-sample statistics).
first=""
for batch in $batches; do
  [ -f "$out/profile-batch$batch.h5" ] || continue
  "$xattn" profile export --json "$out/profile-batch$batch.json" "$out/profile-batch$batch.h5" \
    > /dev/null 2>&1 || continue
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['thresholds'])" \
    "$out/profile-batch$batch.json" > "$out/thresholds-batch$batch.txt" 2>/dev/null || continue
  if [ -z "$first" ]; then
    first=$batch
  elif cmp -s "$out/thresholds-batch$first.txt" "$out/thresholds-batch$batch.txt"; then
    note "--batch $batch chose the same thresholds as --batch $first"
  else
    note "--batch $batch chose OTHER thresholds than --batch $first (float rounding at a tie, or a bug)"
  fi
done
