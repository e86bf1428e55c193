#!/usr/bin/env bash
# Sets up, builds and runs every test. GPU tests (ctest label `gpu`) skip without a device.
# Then the robustness steps of docs/robustness.md, each in its own build folder:
#   build-asan  the CPU test suite again under AddressSanitizer + UndefinedBehaviorSanitizer
#               (preset asan: no CUDA, no examples; python, install and browser tests excluded)
#   build-fuzz  every libFuzzer target of tests/fuzz for 45 s, two at a time (preset fuzz, clang)
# Measured from a fresh clone on the idle 2-core machine: 17 min in all, of which the sanitizer
# step 7.0 min and the fuzz step 4.8 min (docs/robustness.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"

echo "== CPU tests under ASan + UBSan (build-asan); ${SECONDS} s so far"
cmake --preset asan > /dev/null
cmake --build --preset asan -j "$(nproc)" --target xattn_tests
ctest --preset asan -j "$(nproc)"

echo "== fuzz targets, 45 s each (build-fuzz); ${SECONDS} s so far"
cmake --preset fuzz > /dev/null
cmake --build --preset fuzz -j "$(nproc)" --target xattn_fuzz
tests/fuzz/run.sh --build build-fuzz --seconds 45 --jobs "$(nproc)"
echo "== scripts/test.sh: all passed in ${SECONDS} s"
