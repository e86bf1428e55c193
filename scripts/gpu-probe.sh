#!/usr/bin/env bash
# Prints what the GPU machine's Python has for the tokenizer and model-family goldens
# (transformers, tokenizers, sentencepiece) into $OUT/probe.txt.
out=${1:?usage: scripts/gpu-probe.sh OUT_DIR}
mkdir -p "$out"
python3 - > "$out/probe.txt" 2>&1 <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for name in ["torch", "transformers", "tokenizers", "sentencepiece", "safetensors", "numpy", "huggingface_hub", "accelerate", "triton"]:
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:
        print(name, "MISSING", type(e).__name__)
PY
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv >> "$out/probe.txt" 2>&1
cat "$out/probe.txt"
