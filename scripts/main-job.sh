#!/usr/bin/env bash
# Sets up, builds and runs the main job: calibrate the bundled model on the bundled text
# (writes out/profile-<time>.h5 and its statistics beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/calibrate/xattn calibrate
