#!/usr/bin/env bash
# Installs every Debian package that building, testing and running xattn needs.
# Idempotent: packages already present are skipped, and apt-get update runs at most once.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev            # LibTorch 1.13 (CPU)
  libhdf5-dev             # HDF5 C and C++ bindings
  libboost-program-options-dev
  libgtest-dev
  nlohmann-json3-dev      # JSON export of profiles and benchmark results
  chromium                # headless browser for the `xattn report` HTML test (label browser)
  clang libclang-rt-14-dev libomp-dev  # fuzz build: clang, libFuzzer + sanitizer runtimes, OpenMP
  # The Python package and its tests (ctest label python): PyTorch 1.13 and h5py for the system
  # python3, and what `pip install --no-build-isolation .` needs offline (README, Python).
  python3-torch python3-h5py python3-numpy python3-setuptools python3-wheel python3-pip
  python3-venv
  openmpi-bin libopenmpi-dev  # sharded calibration (mpirun xattn calibrate, docs/mpi.md; label mpi)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "setup: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
