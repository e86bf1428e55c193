#!/usr/bin/env bash
# The Python package on the GPU machine (PyTorch 2.x with CUDA): pip install into a throwaway
# venv against the machine's torch, the package tests with the CUDA class (prefill's output and
# lse through the kernels, bf16), and torch.compile(fullgraph=True) / FlexAttention on the CPU
# and on CUDA (tests/python/check_compile.py).
#
#   scripts/gpu-python.sh OUT_DIR
#
# Needs python3 with torch (>= 2.0 for the compile check, >= 2.5 for FlexAttention) and h5py.
set -uo pipefail
out=${1:?usage: scripts/gpu-python.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-python
status=0
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
gpu_configure -DXATTN_BUILD_TESTS=OFF || exit 1
ninja -C "$build" -j16 xattn xattn_ops > "$out/build.log" 2>&1 \
  || { note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -20; exit 1; }
torch_version=$(python3 -c 'import torch; print(torch.__version__)')
note "built xattn and xattn_ops in $(( $(date +%s) - start )) s; torch $torch_version"

run() {  # NAME COMMAND...: runs with the source tree's package and this build's op library
  local name=$1
  shift
  PYTHONPATH=python XATTN_OPS="$build/runtime/libxattn_ops.so" XATTN_CLI="$build/calibrate/xattn" \
    "$@" > "$out/$name.log" 2>&1
  local code=$?
  [ $code -ne 0 ] && [ $code -ne 77 ] && status=1
  note "$name: exit $code, $(tail -1 "$out/$name.log")"
  grep -E "^ok:|FAIL|Error" "$out/$name.log" | head -20 | tee -a "$out/summary.txt"
}

run package python3 tests/python/test_package.py -v
run compile_cpu env XATTN_TEST_DEVICE=cpu python3 tests/python/check_compile.py -v
run compile_cuda env XATTN_TEST_DEVICE=cuda python3 tests/python/check_compile.py -v
if time_left "pip install"; then
  XATTN_CMAKE_BUILD_DIR="$build" python3 tests/python/test_install.py > "$out/install.log" 2>&1
  code=$?
  [ $code -ne 0 ] && [ $code -ne 77 ] && status=1
  note "pip install into a venv: exit $code, $(tail -1 "$out/install.log")"
fi
archive_logs
exit $status
