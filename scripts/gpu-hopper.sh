#!/usr/bin/env bash
# Issue 12 on the GPU machine in one go: builds the GPU tests and the op library against the
# PyTorch wheel, runs the GPU tests (both attention kernels against the CPU reference), the
# compute-sanitizer memcheck and racecheck of the small all-kernels case, with
# XATTN_RUNTIME_TESTS=1 the runtime's CUDA tests and the op library's bad-argument cases on CUDA,
# then bench/compare.py.
#
#   scripts/gpu-hopper.sh OUT_DIR [LENGTHS] [DENSITIES] [GTEST_FILTER]   (LENGTHS "": no benchmark)
#
# Writes OUT_DIR/summary.txt, OUT_DIR/compare.{json,md} and OUT_DIR/logs.tar.gz.
set -uo pipefail
out=${1:?usage: scripts/gpu-hopper.sh OUT_DIR [LENGTHS] [DENSITIES] [GTEST_FILTER]}
lengths=${2-16384,32768,65536,131072}
densities=${3:-0.05,0.1,0.2,0.5}
filter=${4:-'Gpu*'}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-hopper
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
status=0
gpu_configure || { archive_logs; exit 1; }
ninja -C "$build" -j16 xattn_gpu_tests xattn_ops > "$out/build.log" 2>&1 \
  || { note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -20; archive_logs; exit 1; }
note "built in $(( $(date +%s) - start )) s; $(grep -h 'registers\|spill' "$out/build.log" | sort | uniq -c | head -3)"

"$build/tests/gpu/xattn_gpu_tests" --gtest_filter="$filter" > "$out/gpu_tests.log" 2>&1 || status=1
note "GPU tests '$filter': $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/gpu_tests.log" | tr '\n' ' ')"
grep -E "Failure|Expected|Which is|relative L2|refused|sm90|sm80|error" "$out/gpu_tests.log" | head -30

if [ "${XATTN_SKIP_SANITIZER:-0}" != 1 ]; then
  for tool in memcheck racecheck; do
    timeout 240 /usr/local/cuda/bin/compute-sanitizer --tool $tool --error-exitcode 9 \
      "$build/tests/gpu/xattn_gpu_tests" --gtest_filter='GpuSanitizer.*' > "$out/sanitizer_$tool.log" 2>&1
    code=$?
    [ $code -ne 0 ] && status=1
    note "compute-sanitizer $tool: exit $code, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer_$tool.log" | tr '\n' ' ')"
  done
fi

if [ "${XATTN_RUNTIME_TESTS:-0}" = 1 ]; then
  # The runtime on CUDA (engine, op library) and the op library's bad-argument cases on CUDA.
  if ninja -C "$build" -j16 xattn_tests > "$out/build_tests.log" 2>&1; then
    "$build/tests/xattn_tests" --gtest_filter='*Cuda*:OpLibrary*:Engine*' > "$out/runtime_tests.log" 2>&1 || status=1
    note "xattn_tests *Cuda*:OpLibrary*:Engine*: $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/runtime_tests.log" | tr '\n' ' ')"
  else
    status=1; note "build of xattn_tests FAILED"; grep -E "error|FAILED" "$out/build_tests.log" | head -10
  fi
  XATTN_OPS="$build/runtime/libxattn_ops.so" XATTN_TEST_DEVICE=cuda \
    python3 tests/python/test_op_errors.py > "$out/op_errors_cuda.log" 2>&1 || status=1
  note "test_op_errors.py on cuda: $(tail -1 "$out/op_errors_cuda.log"), $(grep -c ': CRASHED' "$out/op_errors_cuda.log") crashed"
fi

if [ -n "$lengths" ]; then
  python3 bench/compare.py --ops "$build/runtime/libxattn_ops.so" --out "$out" \
    --lengths "$lengths" --densities "$densities" ${XATTN_COMPARE_ARGS:-} > "$out/compare.log" 2>&1 || status=1
  note "compare.py: exit $?"
  tail -25 "$out/compare.log"
fi
archive_logs compare.json compare.md gpu_tests.log
exit $status
