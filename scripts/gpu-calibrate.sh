#!/usr/bin/env bash
# Calibration and runner checks on the GPU machine: builds xattn and the CPU/CUDA test binary
# against the machine's CUDA LibTorch, runs the runner's CUDA tests (logits against transformers),
# calibrates the bundled model on the GPU, runs needle-in-a-haystack with the shipped profiles and
# with uniform thresholds, and times the statistics of one Llama-3.1-8B-shaped layer at 32K.
#
#   scripts/gpu-calibrate.sh OUT_DIR
#
# Same environment as scripts/gpu-check.sh (PyTorch with CUDA in python3, .devdebs/ unpacked).
set -uo pipefail
out=${1:?usage: scripts/gpu-calibrate.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-calibrate
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DXATTN_BUILD_EXAMPLES=OFF > "$out/configure.log" 2>&1 || { note "configure FAILED"; tail -30 "$out/configure.log"; exit 1; }
if ! ninja -C "$build" -j16 xattn xattn_tests > "$out/build.log" 2>&1; then
  note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -30; exit 1
fi
note "built in $(( $(date +%s) - start )) s"
xattn="$build/calibrate/xattn"

"$build/tests/xattn_tests" --gtest_filter='ModelCuda*:OpLibrary*:Statistics*:Engine*' > "$out/tests_cuda.log" 2>&1
note "runner CUDA tests: $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/tests_cuda.log" | tr '\n' ' ')"
grep -E "Failure|Expected|Which is|max |error" "$out/tests_cuda.log" | head -20

# One layer of a Llama-3.1-8B-shaped model (32 query / 8 KV heads, head_dim 128) at 32K tokens:
# statistics time per layer-sample; 8 samples x 32 layers is 256 of them.
"$xattn" synth --out /tmp/llama8b_layer.h5 --layers 1 --heads-q 32 --heads-kv 8 --head-dim 128 \
  --len 32768 --dtype bfloat16 --force > "$out/synth.log" 2>&1 || note "synth failed: $(tail -2 "$out/synth.log")"
t0=$(date +%s)
"$xattn" calibrate --capture /tmp/llama8b_layer.h5 --device cuda --holdout 0 \
  --out /tmp/llama8b_profile.h5 --force > "$out/calibrate_8b_layer.log" 2>&1
note "8B-shaped layer at 32K: exit $?, $(( $(date +%s) - t0 )) s wall (incl. reading the 400 MB capture)"
grep -E "^time" "$out/calibrate_8b_layer.log" | tee -a "$out/summary.txt"
# Per-head against uniform thresholds at equal density, for two metrics and three budgets.
for metric in output_error recall_loss; do
  for eps in 0.05 0.1; do
    time_left "the remaining calibrations" || break 2
    t0=$(date +%s)
    "$xattn" calibrate --device cuda --samples 8 --metric $metric --epsilon $eps \
      --out "$out/profile-$metric-$eps.h5" > "$out/calibrate_${metric}_$eps.log" 2>&1
    note "GPU calibration $metric eps $eps (8 x 4096): exit $?, $(( $(date +%s) - t0 )) s"
    grep -E "^(per-head|best uniform|end to end|     uniform tau|time)" "$out/calibrate_${metric}_$eps.log" | tee -a "$out/summary.txt"
  done
done

niah=(eval niah --model examples/models/xattn-byte --device cuda --lengths 4k,8k,16k
      --depths 0,0.25,0.5,0.75,1 --samples 3 --seed 7)
for profile in profiles/xattn-byte*.h5; do
  time_left "NIAH with $profile" || break
  name=$(basename "$profile" .h5)
  "$xattn" "${niah[@]}" --profile "$profile" --json "$out/niah_$name.json" > "$out/niah_$name.log" 2>&1
  note "NIAH with $profile: exit $?"; tail -12 "$out/niah_$name.log"
done
for tau in 0.9 0.95 0.99; do
  time_left "NIAH uniform $tau" || break
  "$xattn" "${niah[@]}" --threshold $tau --skip-dense --json "$out/niah_uniform_$tau.json" \
    > "$out/niah_uniform_$tau.log" 2>&1
  note "NIAH uniform tau $tau: exit $?"; tail -8 "$out/niah_uniform_$tau.log"
done

note "total $(( $(date +%s) - start )) s"
archive_logs
