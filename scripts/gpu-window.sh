#!/usr/bin/env bash
# Sliding-window XAttention (issue 13 item 4) on the GPU machine: builds the GPU tests against the
# PyTorch wheel, runs the new windowed tests (GpuWindow.*: CUDA scoring, selection bit for bit,
# sm_80 and sm_90a attention against the CPU reference and a float64 windowed oracle), then every
# other GPU test (the unwindowed kernels must be unchanged), compute-sanitizer memcheck on the
# small windowed and unwindowed all-kernels cases (racecheck too with XATTN_RACECHECK=1), and with
# XATTN_RUNTIME_TESTS=1 the CPU/CUDA test binary's windowed and CUDA filters.
#
#   scripts/gpu-window.sh OUT_DIR
#
# Writes OUT_DIR/summary.txt, OUT_DIR/gpu_window_tests.log and OUT_DIR/logs.tar.gz. Exit 0 only
# when everything that ran passed.
set -uo pipefail
out=${1:?usage: scripts/gpu-window.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-window
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/device.txt" 2>&1
note "device: $(tail -1 "$out/device.txt")"
gpu_configure || { archive_logs; exit 1; }
ninja -C "$build" -j16 xattn_gpu_tests > "$out/build.log" 2>&1 \
  || { note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -20; archive_logs; exit 1; }
note "built xattn_gpu_tests in $(( $(date +%s) - start )) s"
tests="$build/tests/gpu/xattn_gpu_tests"

# 1. The windowed tests.
"$tests" --gtest_filter='GpuWindow*' > "$out/gpu_window_tests.log" 2>&1 || status=1
note "GpuWindow*: $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/gpu_window_tests.log" | tr '\n' ' ')"
grep -E "Failure|Expected|Which is|relative L2|refused|differ|error|pipeline\]" \
  "$out/gpu_window_tests.log" | head -40

# 2. Every other GPU test: the kernels without a window must behave as before.
"$tests" --gtest_filter='Gpu*:-GpuWindow*' > "$out/gpu_tests.log" 2>&1 || status=1
note "other Gpu* tests: $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/gpu_tests.log" | tr '\n' ' ')"
grep -E "Failure|Expected|Which is|relative L2|refused|error" "$out/gpu_tests.log" | head -20

# 3. compute-sanitizer on the small all-kernels cases, windowed and not.
tools="memcheck"
[ "${XATTN_RACECHECK:-0}" = 1 ] && tools="memcheck racecheck"
for tool in $tools; do
  timeout 300 /usr/local/cuda/bin/compute-sanitizer --tool $tool --error-exitcode 9 \
    "$tests" --gtest_filter='GpuWindowSanitizer.*:GpuSanitizer.*' > "$out/sanitizer_$tool.log" 2>&1
  code=$?
  [ $code -ne 0 ] && status=1
  note "compute-sanitizer $tool: exit $code, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer_$tool.log" | tr '\n' ' ')"
  [ $code -ne 0 ] && grep -E "Invalid|out of bounds|Error" "$out/sanitizer_$tool.log" | head -10
done

# 4. Optional: the runtime on CUDA (engine, op library, runner) with the windowed CPU tests.
if [ "${XATTN_RUNTIME_TESTS:-0}" = 1 ]; then
  if ninja -C "$build" -j16 xattn_tests > "$out/build_tests.log" 2>&1; then
    "$build/tests/xattn_tests" \
      --gtest_filter='*Cuda*:OpLibrary*:Engine*:*Window*' > "$out/runtime_tests.log" 2>&1 || status=1
    note "xattn_tests *Cuda*:OpLibrary*:Engine*:*Window*: $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/runtime_tests.log" | tr '\n' ' ')"
    grep -E "Failure|Expected|Which is|error" "$out/runtime_tests.log" | head -20
  else
    status=1; note "build of xattn_tests FAILED"; grep -E "error|FAILED" "$out/build_tests.log" | head -10
  fi
fi
note "exit $status"
archive_logs gpu_window_tests.log
exit $status
