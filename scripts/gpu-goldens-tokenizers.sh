#!/usr/bin/env bash
# Tiny tokenizers of every supported kind and their golden ids, made with the Python tokenizers and
# sentencepiece libraries (GPU machine; nothing is downloaded). Copy OUT_DIR/* to
# tests/data/tokenizers/ afterwards. See scripts/gpu-goldens-tokenizers.py.
set -euo pipefail
out=${1:?usage: scripts/gpu-goldens-tokenizers.sh OUT_DIR}
mkdir -p "$out"
python3 "$(dirname "$0")/gpu-goldens-tokenizers.py" "$out" 2>&1 | tee "$out/log.txt"
# One archive as well, for machines that send back only a few files.
tar czf "$out.tgz" -C "$(dirname "$out")" "$(basename "$out")"
