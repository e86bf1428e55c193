#!/usr/bin/env bash
# Configures and builds xattn in ./build (Release). CUDA kernels are built when nvcc is found.
# Extra CMake arguments pass through, e.g. scripts/build.sh -DCMAKE_CUDA_ARCHITECTURES=90
# --target T (repeatable) builds only T and what it needs (scripts/main-job.sh: --target xattn);
# without it every target is built, the tests included (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=()
cmake_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target)
      if [ $# -lt 2 ]; then
        echo "scripts/build.sh: --target needs a target name, e.g. --target xattn" >&2
        exit 2
      fi
      targets+=(--target "$2")
      shift 2
      ;;
    --target=*)
      targets+=(--target "${1#--target=}")
      shift
      ;;
    *)
      cmake_args+=("$1")
      shift
      ;;
  esac
done
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${cmake_args[@]+"${cmake_args[@]}"}
elif [ ${#cmake_args[@]} -gt 0 ]; then
  cmake -S . -B build "${cmake_args[@]}"
fi
cmake --build build -j "$(nproc)" ${targets[@]+"${targets[@]}"}
