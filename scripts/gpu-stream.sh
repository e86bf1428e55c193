#!/usr/bin/env bash
# Layer-streamed statistics on the GPU machine (docs/runner.md, Layer-streamed statistics):
#  1. the Llama-3.1-8B layer shape (random bfloat16 weights, L8 layers, default 4) on 8 x 32K
#     tokens, statistics only, in memory and with --stream-layers: time and peak device memory;
#  2. the Llama-3.1-70B layer shape (hidden 8192, 64 query / 8 KV heads, MLP 28672; L70 layers,
#     default 4, about 1.7 GB each) on the same tokens, with --stream-layers.
# Fewer layers than the real models so the whole script fits about 5 minutes; the per-layer cost
# is the same at any depth, so the table extrapolates statistics time and resident weights to 32
# and 80 layers (time: per-layer time x depth; in-memory weights: embeddings + LM head + depth x
# one layer). Statistics only: --metric output_error --holdout 0 --frontier-points 0 (no
# sensitivity or validation pass; with --stream-layers those read every layer per forward pass).
#
#   scripts/gpu-stream.sh OUT_DIR [L8] [L70]
#
# Same environment as scripts/gpu-e2e-8b.sh; builds only the xattn executable (build-gpu).
set -uo pipefail
out=${1:?usage: scripts/gpu-stream.sh OUT_DIR [L8] [L70]}
layers8=${2:-4}
layers70=${3:-4}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-stream
export XATTN_GPU_BUDGET_S=${XATTN_GPU_BUDGET_S:-240}
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
gpu_configure || exit 1
if ! ninja -C "$build" -j16 xattn > "$out/build.log" 2>&1; then
  note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -30; exit 1
fi
note "built in $(( $(date +%s) - start )) s"
xattn="$build/calibrate/xattn"
len=32768
samples=8
ids=/tmp/xattn_stream_ids.txt
rows="$out/rows.txt"
: > "$rows"

# run NAME MODEL LAYERS FULL_DEPTH [--stream-layers]: one statistics-only calibration, one row.
run() {
  local name=$1 model=$2 layers=$3 depth=$4 mode=${5:-}
  local log="$out/${name}_${mode:+stream}${mode:-memory}.log"
  local t0 ms
  t0=$(date +%s%N)
  "$xattn" calibrate --model "$model" --data "$ids" --data-format ids --sample-len $len \
    --samples $samples --device cuda --metric output_error --holdout 0 --frontier-points 0 \
    $mode --out "$out/profile-$name.h5" --force > "$log" 2>&1
  local code=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  note "$name, $layers layers, $samples x $len, ${mode:-in memory}: exit $code, $((ms / 1000)) s wall"
  grep -E "^(time|memory|hidden states)" "$log" | tee -a "$out/summary.txt"
  if [ $code -ne 0 ]; then tail -5 "$log" | tee -a "$out/summary.txt"; return 1; fi
  local stats weights peak
  stats=$(sed -n 's/^time: statistics \([0-9.]*\) s.*/\1/p' "$log")
  weights=$(sed -n 's/^memory:.*weights \([0-9.]*\) GiB.*/\1/p' "$log")
  peak=$(sed -n 's/^memory:.*peak device memory \([0-9.]*\) GiB.*/\1/p' "$log")
  echo "$name ${mode:+streamed}${mode:-in-memory} $layers $depth $stats $weights ${peak:-?}" >> "$rows"
}

# 8B shape, in memory and streamed.
model8=/tmp/llama8b_stream_l$layers8
t0=$(date +%s)
python3 scripts/make_random_llama.py "$model8" "$ids" --tokens $((samples * len + 16)) \
  --layers "$layers8" > "$out/make_8b.log" 2>&1 || { note "8B model FAILED"; tail -5 "$out/make_8b.log"; exit 1; }
note "8B-shaped checkpoint, $layers8 layers, written in $(( $(date +%s) - t0 )) s"
time_left "8B in memory" && run 8b "$model8" "$layers8" 32
time_left "8B streamed" && run 8b "$model8" "$layers8" 32 --stream-layers
rm -rf "$model8"

# 70B shape, streamed (in memory too when time is left: at this depth it fits the device).
if time_left "70B shape"; then
  model70=/tmp/llama70b_stream_l$layers70
  t0=$(date +%s)
  python3 scripts/make_random_llama.py "$model70" /tmp/xattn_stream_ids70.txt --tokens 16 \
    --layers "$layers70" --shape 70b > "$out/make_70b.log" 2>&1 \
    || { note "70B model FAILED"; tail -5 "$out/make_70b.log"; exit 1; }
  note "70B-shaped checkpoint, $layers70 layers, written in $(( $(date +%s) - t0 )) s"
  time_left "70B streamed" && run 70b "$model70" "$layers70" 80 --stream-layers
  time_left "70B in memory" && run 70b "$model70" "$layers70" 80
  rm -rf "$model70"
fi

# The table: measured at the run's depth, then extrapolated per layer to the real depth.
{
  echo
  echo "| shape | mode | layers run | statistics s | s / layer | statistics at full depth (extrapolated) | weights held GiB | peak device GiB | weights at full depth GiB (extrapolated) |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  while read -r name mode layers depth stats weights peak; do
    awk -v n="$name" -v m="$mode" -v l="$layers" -v d="$depth" -v s="$stats" -v w="$weights" \
        -v p="$peak" -v layer_gib="$([ "$name" = 70b ] && echo 1.594 || echo 0.406)" \
        -v fixed_gib="$([ "$name" = 70b ] && echo 3.914 || echo 1.957)" 'BEGIN {
      full = (m == "streamed") ? fixed_gib + layer_gib : fixed_gib + d * layer_gib
      printf "| %s | %s | %d | %.1f | %.2f | %.0f s at %d layers | %.2f | %s | %.1f |\n",
             n, m, l, s, s / l, s / l * d, d, w, p, full
    }'
  done < "$rows"
  echo
  echo "Weights at full depth: embeddings + LM head (+ one layer streamed, all layers in memory);"
  echo "the H200 has about 139 GiB, so 70B in memory (about 131 GiB of weights alone, plus"
  echo "activations and workspaces) does not fit and streaming holds one layer."
} | tee -a "$out/summary.txt"
rm -f "$out"/profile-*.h5
archive_logs
