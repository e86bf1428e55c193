#!/usr/bin/env bash
# The sm_90a scoring kernel's load paths side by side, on the GPU machine: builds xattn_bench and
# xattn_gpu_tests, runs the GPU tests (filter XATTN_LOADS_TESTS, default Gpu*), compute-sanitizer
# memcheck and racecheck on XATTN_SANITIZER_TESTS (default GpuScoring.*), then xattn_bench ROUNDS times (default 2) for each load
# path (XATTN_SCORING_LOADS = gather, auto; interleaved) and collects the rows.
#
#   scripts/gpu-scoring-loads.sh OUT_DIR [xattn_bench arguments, e.g. --lengths 65536,131072]
set -uo pipefail
out=${1:?usage: scripts/gpu-scoring-loads.sh OUT_DIR [bench args]}
shift
mkdir -p "$out"
out=$(cd "$out" && pwd)
script_name=gpu-scoring-loads
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
build=build-gpu
gpu_configure || exit 1
ninja -C "$build" -j16 xattn_bench xattn_gpu_tests > "$out/build.log" 2>&1 ||
  { note "build FAILED"; grep -E "error" -A3 "$out/build.log" | head -30; exit 1; }
note "built in $(( $(date +%s) - start )) s"
timeout 300 "$build/tests/gpu/xattn_gpu_tests" --gtest_filter="${XATTN_LOADS_TESTS:-Gpu*}" > "$out/gpu_tests.log" 2>&1
note "GPU tests: exit $?, $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/gpu_tests.log" | tr '\n' ' ')"
grep -E "Failure|Expected|Which is|FAILED  \]" "$out/gpu_tests.log" | head -12
for tool in memcheck racecheck; do
  timeout 300 compute-sanitizer --tool $tool "$build/tests/gpu/xattn_gpu_tests" \
    --gtest_filter="${XATTN_SANITIZER_TESTS:-GpuScoring.*}" > "$out/$tool.log" 2>&1
  note "$tool: exit $?, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$tool.log" | tr '\n' ' ')"
done
for round in $(seq 1 "${ROUNDS:-2}"); do
  for loads in gather auto; do
    XATTN_SCORING_LOADS=$loads "$build/bench/xattn_bench" --json "$out/bench_${loads}_$round.json" \
      --markdown "$out/bench_${loads}_$round.md" "$@" > "$out/bench_${loads}_$round.log" 2>&1
    note "bench $loads round $round: exit $?"
    grep -E "^\| [0-9]+K \|" "$out/bench_${loads}_$round.md" | sed "s/^/$loads /" | tee -a "$out/summary.txt"
  done
done
note "total $(( $(date +%s) - start )) s"
archive_logs memcheck.log racecheck.log
