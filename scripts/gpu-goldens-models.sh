#!/usr/bin/env bash
# Tiny checkpoints of each model family and their golden logits from transformers
# (scripts/gpu-goldens-models.py) into OUT_DIR/<case>/ and OUT_DIR/report.txt. Needs python3 with
# torch, transformers and safetensors (the GPU machine has them; it runs on the CPU there).
# Copy OUT_DIR/<case>/ into tests/data/models/ to update the committed goldens.
set -euo pipefail
out=${1:?usage: scripts/gpu-goldens-models.sh OUT_DIR}
cd "$(dirname "$0")/.."
PYTHONUNBUFFERED=1 python3 scripts/gpu-goldens-models.py --out "$out" "${@:2}"
