#!/usr/bin/env bash
# Builds the CPU/CUDA test binary against the GPU machine's CUDA LibTorch and runs a gtest filter
# there (the tests that take CUDA tensors when a device is present).
#
#   scripts/gpu-tests.sh OUT_DIR [GTEST_FILTER]    (default filter: *Cuda*:OpLibrary*:Engine*)
set -uo pipefail
out=${1:?usage: scripts/gpu-tests.sh OUT_DIR [GTEST_FILTER]}
filter=${2:-'*Cuda*:OpLibrary*:Engine*'}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-tests
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DXATTN_BUILD_EXAMPLES=OFF > "$out/configure.log" 2>&1 \
  || { note "configure FAILED"; tail -30 "$out/configure.log"; exit 1; }
ninja -C "$build" -j16 xattn_tests > "$out/build.log" 2>&1 \
  || { note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -20; exit 1; }
note "built xattn_tests in $(( $(date +%s) - start )) s"
"$build/tests/xattn_tests" --gtest_filter="$filter" > "$out/tests.log" 2>&1
status=$?
note "tests '$filter': exit $status, $(grep -E '^\[  (PASSED|FAILED)  \]|SKIPPED \]' "$out/tests.log" | tr '\n' ' ')"
grep -E "Failure|Expected|Which is|max difference|error" "$out/tests.log" | head -20
exit $status
