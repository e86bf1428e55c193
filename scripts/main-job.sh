#!/usr/bin/env bash
# Sets up, builds and runs the main job: calibrate the bundled model on the bundled text
# (writes out/profile-<time>.h5 and its statistics beside it). Builds only the `xattn` executable
# and what it links, not the test suite (scripts/test.sh builds everything).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --target xattn
build/calibrate/xattn calibrate
