#!/usr/bin/env bash
# A/B of a kernel change on the GPU machine: the working tree (candidate) against a baseline made
# from it by overlaying the files of BASE_OVERLAY (paths relative to the repository root, e.g. the
# committed version of the changed kernel). Builds xattn_bench for both and xattn_gpu_tests for the
# candidate, runs the candidate's GPU tests (filter XATTN_AB_TESTS, default every test), then the
# benchmark twice for each side, interleaved (base, candidate, base, candidate).
#
#   scripts/gpu-ab.sh OUT_DIR BASE_OVERLAY [xattn_bench arguments, e.g. --lengths 32768,131072]
set -uo pipefail
out=${1:?usage: scripts/gpu-ab.sh OUT_DIR BASE_OVERLAY [bench args]}
overlay=${2:?usage: scripts/gpu-ab.sh OUT_DIR BASE_OVERLAY [bench args]}
shift 2
mkdir -p "$out"
out=$(cd "$out" && pwd)
overlay=$(cd "$overlay" && pwd)
script_name=gpu-ab
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
base_src=/tmp/xattn-ab-base
rm -rf "$base_src" && mkdir -p "$base_src"
tar --exclude=./build-gpu --exclude=./build-ab-base -cf - . | tar -xf - -C "$base_src"
(cd "$overlay" && find . -type f) | while read -r f; do cp "$overlay/$f" "$base_src/$f"; done

build() {  # build SOURCE_DIR BUILD_DIR TARGET...
  local src=$1 dir=$2; shift 2
  cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DXATTN_BUILD_EXAMPLES=OFF > "$out/configure_$(basename "$dir").log" 2>&1 &&
  ninja -C "$dir" -j16 "$@" > "$out/build_$(basename "$dir").log" 2>&1
}
build . build-gpu xattn_bench xattn_gpu_tests || { note "candidate build FAILED"; grep -E "error" "$out/build_build-gpu.log" | head; exit 1; }
build "$base_src" "$base_src/build-ab-base" xattn_bench || { note "baseline build FAILED"; exit 1; }
note "built both in $(( $(date +%s) - start )) s"
build-gpu/tests/gpu/xattn_gpu_tests --gtest_filter="${XATTN_AB_TESTS:-*}" > "$out/gpu_tests.log" 2>&1
note "candidate GPU tests: exit $?, $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/gpu_tests.log" | tr '\n' ' ')"
grep -E "Failure|Expected|Which is" "$out/gpu_tests.log" | head -10
for round in 1 2; do
  for side in base candidate; do
    bench=build-gpu/bench/xattn_bench
    [ $side = base ] && bench="$base_src/build-ab-base/bench/xattn_bench"
    "$bench" --markdown "$out/bench_${side}_$round.md" "$@" > "$out/bench_${side}_$round.log" 2>&1
    note "bench $side round $round: exit $?"
    grep -E "^\| [0-9]+K \|" "$out/bench_${side}_$round.md" | tee -a "$out/summary.txt"
  done
done
note "total $(( $(date +%s) - start )) s"
archive_logs
