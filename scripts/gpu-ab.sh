#!/usr/bin/env bash
# A/B of a kernel change on the GPU machine: the working tree (candidate) against a baseline made
# from it by overlaying the files of BASE_OVERLAY (paths relative to the repository root, e.g. the
# committed version of the changed kernel), and optionally further variants made the same way.
# Builds xattn_bench for every side and xattn_gpu_tests for every side but the baseline, runs
# those GPU tests (filter XATTN_AB_TESTS, default every test), then the benchmark ROUNDS times
# (default 2) for each side, interleaved (base, candidate, variants..., base, ...).
#
#   scripts/gpu-ab.sh OUT_DIR BASE_OVERLAY [xattn_bench arguments, e.g. --lengths 32768,131072]
#
#   XATTN_AB_VARIANTS="NAME=OVERLAY ..."  further sides: the working tree with OVERLAY's files,
#                                         or with OVERLAY applied when it is a .patch file
#                                         (e.g. bench/candidates/*.patch)
#   XATTN_AB_SANITIZE=FILTER              compute-sanitizer memcheck and racecheck on the
#                                         candidate's GPU tests matching FILTER
#   XATTN_AB_NCU=LENGTH                   Nsight Compute (full set) on one scoring launch of the
#                                         candidate (xattn_bench --profile-once LENGTH, S = 8)
set -uo pipefail
out=${1:?usage: scripts/gpu-ab.sh OUT_DIR BASE_OVERLAY [bench args]}
overlay=${2:?usage: scripts/gpu-ab.sh OUT_DIR BASE_OVERLAY [bench args]}
shift 2
mkdir -p "$out"
out=$(cd "$out" && pwd)
script_name=gpu-ab
source "$(dirname "$0")/gpu-common.sh"
gpu_environment

sides=(base candidate)
declare -A source_of=([candidate]=.) overlay_of=([base]=$(cd "$overlay" && pwd))
for spec in ${XATTN_AB_VARIANTS:-}; do
  sides+=("${spec%%=*}")
  if [[ "${spec#*=}" == *.patch ]]; then
    overlay_of[${spec%%=*}]=$(cd "$(dirname "${spec#*=}")" && pwd)/$(basename "${spec#*=}")
  else
    overlay_of[${spec%%=*}]=$(cd "${spec#*=}" && pwd)
  fi
done
for side in "${sides[@]}"; do  # a copy of the tree with the side's overlay
  [ -n "${source_of[$side]:-}" ] && continue
  src=/tmp/xattn-ab-$side
  rm -rf "$src" && mkdir -p "$src"
  tar --exclude=./build-gpu --exclude='./build-ab-*' -cf - . | tar -xf - -C "$src"
  if [[ "${overlay_of[$side]}" == *.patch ]]; then
    (cd "$src" && git apply "${overlay_of[$side]}") || { note "$side: patch does not apply"; exit 1; }
  else
    (cd "${overlay_of[$side]}" && find . -type f) | while read -r f; do cp "${overlay_of[$side]}/$f" "$src/$f"; done
  fi
  source_of[$side]=$src
done

build_dir() { [ "$1" = candidate ] && echo build-gpu || echo "${source_of[$1]}/build-ab-$1"; }
for side in "${sides[@]}"; do
  targets=(xattn_bench)
  [ "$side" != base ] && targets+=(xattn_gpu_tests)
  dir=$(build_dir "$side")
  { cmake -S "${source_of[$side]}" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DXATTN_BUILD_EXAMPLES=OFF > "$out/configure_$side.log" 2>&1 &&
    ninja -C "$dir" -j16 "${targets[@]}" > "$out/build_$side.log" 2>&1; } ||
    { note "$side build FAILED"; grep -E "error" "$out/build_$side.log" | head; exit 1; }
done
note "built ${sides[*]} in $(( $(date +%s) - start )) s"

for side in "${sides[@]}"; do
  [ "$side" = base ] && continue
  timeout 300 "$(build_dir "$side")/tests/gpu/xattn_gpu_tests" --gtest_filter="${XATTN_AB_TESTS:-*}" \
    > "$out/gpu_tests_$side.log" 2>&1
  note "$side GPU tests: exit $?, $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/gpu_tests_$side.log" | tr '\n' ' ')"
  grep -E "Failure|Expected|Which is|FAILED  \]" "$out/gpu_tests_$side.log" | head -10
done

for round in $(seq 1 "${ROUNDS:-2}"); do
  for side in "${sides[@]}"; do
    "$(build_dir "$side")/bench/xattn_bench" --markdown "$out/bench_${side}_$round.md" "$@" \
      > "$out/bench_${side}_$round.log" 2>&1
    note "bench $side round $round: exit $?"
    grep -E "^\| [0-9]+K \|" "$out/bench_${side}_$round.md" | sed "s/^/$side /" | tee -a "$out/summary.txt"
  done
done

keep=()
if [ -n "${XATTN_AB_NCU:-}" ]; then
  if time_left "ncu"; then
    timeout 240 ncu --set full -k regex:scoring -c 1 build-gpu/bench/xattn_bench \
      --profile-once "$XATTN_AB_NCU" > "$out/ncu.txt" 2>&1
    note "ncu: exit $?"
    keep+=(ncu.txt)
  fi
fi
if [ -n "${XATTN_AB_SANITIZE:-}" ]; then
  for tool in memcheck racecheck; do
    time_left "$tool" || break
    timeout 300 compute-sanitizer --tool $tool build-gpu/tests/gpu/xattn_gpu_tests \
      --gtest_filter="$XATTN_AB_SANITIZE" > "$out/$tool.log" 2>&1
    note "$tool: exit $?, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$tool.log" | tr '\n' ' ')"
  done
fi
note "total $(( $(date +%s) - start )) s"
archive_logs "${keep[@]}"
