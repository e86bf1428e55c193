#!/usr/bin/env bash
# GPU check on the H200 machine: configure, build, run the GPU tests, compute-sanitizer (memcheck
# and racecheck on a small subset) and the benchmark; logs and JSON go to the output folder.
#
#   scripts/gpu-check.sh OUT_DIR [--skip-tests] [--skip-bench] [--skip-runtime] [--ncu]
#                        [--lengths 8192,16384,...]
#   XATTN_NCU_SECTIONS: ncu section arguments for --ncu (default: SpeedOfLight and
#   ComputeWorkloadAnalysis)
#
# Expects PyTorch (with CUDA) in `python3` for LibTorch and, when present, the Debian packages in
# .devdebs/ (unpacked to /opt/xs: Boost.Program_options and nlohmann-json are missing there).
# Architectures: XATTN_CUDA_ARCHS (default 90, the H200).
set -uo pipefail

out=${1:?usage: scripts/gpu-check.sh OUT_DIR [options]}
shift
run_tests=1
run_bench=1
run_runtime=1
run_ncu=0
bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-tests) run_tests=0 ;;
    --skip-bench) run_bench=0 ;;
    --skip-runtime) run_runtime=0 ;;
    --ncu) run_ncu=1 ;;
    --lengths) bench_args+=(--lengths "$2"); shift ;;
    *) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
status=0
script_name=gpu-check
source "$(dirname "$0")/gpu-common.sh"
gpu_environment

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/device.txt" 2>&1
note "device: $(tail -1 "$out/device.txt")"
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" \
    -DCMAKE_CUDA_ARCHITECTURES="${XATTN_CUDA_ARCHS:-90}" -DXATTN_BUILD_EXAMPLES=OFF \
    > "$out/configure.log" 2>&1; then
  note "configure FAILED (see configure.log)"
  tail -30 "$out/configure.log"
  exit 1
fi
note "configured in $(( $(date +%s) - start )) s"

build_target() {
  local target=$1 t0
  t0=$(date +%s)
  if ninja -C "$build" -j16 "$target" > "$out/build_$target.log" 2>&1; then
    note "built $target in $(( $(date +%s) - t0 )) s"
    return 0
  fi
  note "build of $target FAILED (see build_$target.log)"
  grep -E "error|FAILED" "$out/build_$target.log" | head -20
  return 1
}

if [ $run_tests = 1 ] && build_target xattn_gpu_tests; then
  tests="$build/tests/gpu/xattn_gpu_tests"
  if "$tests" --gtest_output="json:$out/gpu_tests.json" > "$out/gpu_tests.log" 2>&1; then
    note "GPU tests passed: $(grep -E '^\[  PASSED  \]' "$out/gpu_tests.log")"
  else
    status=1
    note "GPU tests FAILED"
    grep -E "Failure|FAILED|error|Expected|Which is|differ|relative|worst" "$out/gpu_tests.log" | head -60
  fi
  grep -E "\[pipeline\]" "$out/gpu_tests.log" | tee -a "$out/summary.txt"
  for tool in memcheck racecheck; do
    if compute-sanitizer --tool $tool --error-exitcode 9 "$tests" --gtest_filter='GpuSanitizer.*' \
        > "$out/sanitizer_$tool.log" 2>&1; then
      note "compute-sanitizer $tool: clean ($(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer_$tool.log" | tail -1))"
    else
      status=1
      note "compute-sanitizer $tool: ERRORS (see sanitizer_$tool.log)"
      head -40 "$out/sanitizer_$tool.log"
    fi
  done
fi

# The runtime's CUDA dispatch (runtime/src/cuda) compiles only here, against LibTorch with CUDA.
if [ $run_runtime = 1 ]; then build_target xattn_runtime || status=1; fi

if [ $run_bench = 1 ] && build_target xattn_bench; then
  if "$build/bench/xattn_bench" --json "$out/bench_results.json" --markdown "$out/bench_results.md" \
      "${bench_args[@]}" > "$out/bench.log" 2>&1; then
    note "benchmark done"
    cat "$out/bench_results.md"
  else
    status=1
    note "benchmark FAILED"
    tail -20 "$out/bench.log"
  fi
fi
if [ $run_ncu = 1 ] && [ -x "$build/bench/xattn_bench" ]; then
  # One launch of the scoring (S = 8) and sparse attention (7 %) kernels at 32K, Hkv = 8.
  for kernel in antidiagonal_scoring_kernel block_sparse_attention_kernel; do
    timeout 120 ncu --clock-control none --kernel-name "regex:$kernel" --launch-count 1 \
      ${XATTN_NCU_SECTIONS:---section SpeedOfLight --section ComputeWorkloadAnalysis} \
      "$build/bench/xattn_bench" --profile-once 32768 > "$out/ncu_$kernel.txt" 2>&1 \
      && note "ncu $kernel done" || note "ncu $kernel failed (see ncu_$kernel.txt)"
  done
fi
note "total $(( $(date +%s) - start )) s, status $status"
# Logs travel back as one archive next to the results (the device tool returns few files).
archive_logs bench_results.json bench_results.md
exit $status
