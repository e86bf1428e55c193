#!/usr/bin/env bash
# Runtime and integration checks on the GPU machine: builds everything (tests and examples)
# against the machine's CUDA LibTorch, runs the whole ctest suite there (every test in its own
# process, as CI does, now with a GPU), the CUDA runner/engine tests once more in one process,
# the C++ inference example on CUDA, and the transformers passkey check (dense sdpa against
# xattn with the shipped profile and with a stricter one calibrated here).
#
#   scripts/gpu-runtime.sh OUT_DIR
#
# Same environment as scripts/gpu-check.sh (PyTorch with CUDA and transformers in python3,
# .devdebs/ unpacked). Later steps are skipped once XATTN_GPU_BUDGET_S (default 540) seconds
# have passed.
set -uo pipefail
out=${1:?usage: scripts/gpu-runtime.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-runtime
source "$(dirname "$0")/gpu-common.sh"
finish() {
  note "total $(( $(date +%s) - start )) s"
  archive_logs
}
trap finish EXIT
gpu_environment
python=$(command -v python3)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$out/device.txt" 2>&1
note "device: $(cat "$out/device.txt"); $("$python" -c 'import torch,transformers;print("torch",torch.__version__,"transformers",transformers.__version__)' 2>&1 | tail -1)"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DXATTN_PYTHON3="$python" > "$out/configure.log" 2>&1 \
  || { note "configure FAILED"; tail -30 "$out/configure.log"; exit 1; }
if ! ninja -C "$build" -j16 > "$out/build.log" 2>&1; then
  note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -30; exit 1
fi
note "built everything in $(( $(date +%s) - start )) s"
xattn="$build/calibrate/xattn"

# 1. The whole suite, one process per test (the browser test needs chromium, absent there).
ctest --test-dir "$build" -j8 --timeout 600 --output-on-failure > "$out/ctest.log" 2>&1
note "ctest: $(grep -E 'tests passed|tests failed' "$out/ctest.log")"
grep -E "^\s+[0-9]+ - .*\((Failed|SEGFAULT|Timeout|Subprocess aborted|Exception)" "$out/ctest.log" | tee -a "$out/summary.txt"
grep -cE "\*\*\*Skipped| Skipped " "$out/ctest.log" | sed 's/^/skipped lines: /' | tee -a "$out/summary.txt"

# 2. The CUDA runner and engine tests together in one process (where a crash was seen before).
"$build/tests/xattn_tests" --gtest_filter='OpLibrary*:Engine*:ModelCuda*' \
  > "$out/tests_one_process.log" 2>&1
rc=$?
note "OpLibrary/Engine/ModelCuda in one process: exit $rc, $(grep -E '^\[  (PASSED|FAILED)  \]|SKIPPED \]' "$out/tests_one_process.log" | tr '\n' ' ')"
if [ $rc -ge 128 ] && command -v gdb > /dev/null; then
  gdb -batch -ex run -ex bt --args "$build/tests/xattn_tests" \
    --gtest_filter='OpLibrary*:Engine*:ModelCuda*' > "$out/gdb.log" 2>&1
  grep -A25 "SIGSEGV\|signal" "$out/gdb.log" | head -40 | tee -a "$out/summary.txt"
fi

# 3. The C++ inference example on CUDA: time to first token and density against dense.
for length in 16384 32768; do
  time_left "cpp_inference $length" || break
  "$build/examples/cpp_inference/xattn_cpp_inference" --device cuda --length $length \
    > "$out/cpp_inference_$length.log" 2>&1
  note "cpp_inference --device cuda --length $length: exit $?"
  tail -6 "$out/cpp_inference_$length.log" | tee -a "$out/summary.txt"
done

# 4. transformers: dense sdpa against xattn, answer by answer, with the shipped profile, the same
#    profile with the last query block selected like the others, and a stricter profile
#    (worst-sample output error 0.02) calibrated here.
time_left "stricter calibration" && "$xattn" calibrate --device cuda --samples 8 --epsilon 0.02 \
  --out "$out/xattn-byte-eps0.02.h5" > "$out/calibrate_eps0.02.log" 2>&1
note "calibrate --epsilon 0.02: exit $?"
grep -E "^(per-head|time)" "$out/calibrate_eps0.02.log" | tee -a "$out/summary.txt"
"$xattn" profile export --json "$out/xattn-byte.profile.json" profiles/xattn-byte.h5 --force > /dev/null
"$python" -c 'import json,sys; p=json.load(open(sys.argv[1])); p["kernel"]["dense_last_query_block"]=False; json.dump(p,open(sys.argv[2],"w"))' \
  "$out/xattn-byte.profile.json" "$out/xattn-byte-sparse-last.profile.json"
[ -f "$out/xattn-byte-eps0.02.h5" ] && "$xattn" profile export --json \
  "$out/xattn-byte-eps0.02.profile.json" "$out/xattn-byte-eps0.02.h5" --force > /dev/null
for name in xattn-byte xattn-byte-sparse-last xattn-byte-eps0.02; do
  [ -f "$out/$name.profile.json" ] || continue
  time_left "transformers check with $name" || break
  "$python" examples/python/passkey_transformers.py --profile "$out/$name.profile.json" \
    --ops "$build/runtime/libxattn_ops.so" --out "$out/transformers_$name.json" \
    > "$out/transformers_$name.log" 2>&1
  note "transformers passkey check with $name: exit $?"
  grep -E "tokens:|calls" "$out/transformers_$name.log" | tee -a "$out/summary.txt"
done

# 5. The README's tables: mean-budget profiles calibrated here, then passkey retrieval of every
#    profile and of uniform thresholds, with and without the dense last query block.
for eps in 0.05 0.1; do
  time_left "mean-budget calibration $eps" || break
  "$xattn" calibrate --device cuda --samples 8 --epsilon $eps --error-aggregate mean \
    --out "$out/xattn-byte-mean$eps.h5" > "$out/calibrate_mean$eps.log" 2>&1
  note "calibrate --error-aggregate mean --epsilon $eps: exit $?"
  grep -E "^(per-head|best uniform|end to end|     uniform tau)" "$out/calibrate_mean$eps.log" | tee -a "$out/summary.txt"
done
niah=(eval niah --model examples/models/xattn-byte --device cuda --lengths 4k,8k,16k
      --depths 0,0.25,0.5,0.75,1 --samples 3 --seed 7 --skip-dense)
for profile in profiles/xattn-byte.h5 profiles/xattn-byte-eps0.1.h5 "$out"/xattn-byte-mean*.h5; do
  [ -f "$profile" ] || continue
  time_left "NIAH with $profile" || break
  name=$(basename "$profile" .h5)
  "$xattn" "${niah[@]}" --profile "$profile" --json "$out/niah_$name.json" > "$out/niah_$name.log" 2>&1
  note "NIAH with $name: exit $?"; tail -5 "$out/niah_$name.log" | tee -a "$out/summary.txt"
done
for tau in 0.9 0.95 0.99; do
  for rule in "" --sparse-last-block; do
    time_left "NIAH uniform $tau $rule" || break 2
    "$xattn" "${niah[@]}" --threshold $tau $rule --json "$out/niah_uniform_$tau$rule.json" \
      > "$out/niah_uniform_$tau$rule.log" 2>&1
    note "NIAH uniform tau $tau $rule: exit $?"; tail -2 "$out/niah_uniform_$tau$rule.log" | tee -a "$out/summary.txt"
  done
done
