#!/usr/bin/env bash
# Issue 11 on the GPU machine: builds the op library against the PyTorch wheel's LibTorch and runs
# tests/python/test_op_errors.py with that wheel, on CUDA (the issue's shapes: q [1, 32, 4096,
# 128] bfloat16, 8 k/v heads) and on the CPU. Each bad call must raise RuntimeError; a SIGSEGV
# fails its case (the test runs all calls in one interpreter, then each crashed one alone).
# With time left, the C++ side too: xattn_tests --gtest_filter='OpLibrary*:Robustness*'.
#
#   scripts/gpu-robustness.sh OUT_DIR
#
# Writes OUT_DIR/summary.txt (one line per step) and OUT_DIR/logs.tar.gz (configure, build and
# test logs). Exit 0 when every step passed. Same environment as scripts/gpu-tests.sh.
set -uo pipefail
out=${1:?usage: scripts/gpu-robustness.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-robustness
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
status=0

note "python3 $(python3 -c 'import sys; print(sys.version.split()[0])'), torch $(python3 -c \
  'import torch; print(torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())')"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DXATTN_BUILD_EXAMPLES=OFF > "$out/configure.log" 2>&1 \
  || { note "configure FAILED"; tail -30 "$out/configure.log"; archive_logs; exit 1; }
ninja -C "$build" -j16 xattn_ops > "$out/build_ops.log" 2>&1 \
  || { note "build of xattn_ops FAILED"; grep -E "error|FAILED" "$out/build_ops.log" | head -20;
       archive_logs; exit 1; }
note "built xattn_ops in $(( $(date +%s) - start )) s"

for device in cuda cpu; do
  XATTN_OPS="$build/runtime/libxattn_ops.so" XATTN_TEST_DEVICE=$device \
    python3 tests/python/test_op_errors.py > "$out/op_errors_$device.log" 2>&1
  code=$?
  [ $code -ne 0 ] && status=1
  crashed=$(grep -c ": CRASHED" "$out/op_errors_$device.log")
  note "test_op_errors.py on $device: exit $code, $(grep -cE ': RAISED' "$out/op_errors_$device.log") raised, $crashed crashed, $(tail -1 "$out/op_errors_$device.log")"
  grep -E "CRASHED|FAIL|Error:" "$out/op_errors_$device.log" | head -20
done

if time_left "xattn_tests"; then
  if ninja -C "$build" -j16 xattn_tests > "$out/build_tests.log" 2>&1; then
    "$build/tests/xattn_tests" --gtest_filter='OpLibrary*:Robustness*' > "$out/gtest.log" 2>&1
    code=$?
    [ $code -ne 0 ] && status=1
    note "xattn_tests OpLibrary*:Robustness*: exit $code, $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/gtest.log" | tr '\n' ' ')"
  else
    note "build of xattn_tests FAILED (the Python results above stand)"
    grep -E "error|FAILED" "$out/build_tests.log" | head -10
  fi
fi

archive_logs "op_errors_cuda.log"
exit $status
