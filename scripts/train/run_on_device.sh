#!/usr/bin/env bash
# One GPU run that trains the bundled model and produces everything that ships with it.
# Needs .traindata/train.txt (scripts/train/prepare_data.py) next to the working tree, and
# python3 with PyTorch (CUDA) and transformers. Writes at most 8 files to $OUT:
#   run.log  loss.tsv  config.json  train_summary.json  model.safetensors.part0/.part1
#   xattn_byte_logits.safetensors  eval.json
# The weights come back in two parts (the file tool returns files of at most 16 MiB);
# join them with: cat model.safetensors.part0 model.safetensors.part1 > model.safetensors
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-280}
SEED=${SEED:-1234}
MODEL=${MODEL_DIR:-/tmp/xattn-byte}
TRAIN_ARGS=${TRAIN_ARGS:-}  # extra train.py flags, e.g. "--tiny --max-steps 5" for a CPU test
mkdir -p "$OUT"

{
  date -u
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" || exit 1

  python3 scripts/train/train.py --data .traindata/train.txt --out "$MODEL" \
      --seconds "$TRAIN_SECONDS" --seed "$SEED" --log-tsv "$OUT/loss.tsv" $TRAIN_ARGS || exit 1
  cp "$MODEL/config.json" "$MODEL/train_summary.json" "$OUT/"
  split -b 15000000 -d -a 1 "$MODEL/model.safetensors" "$OUT/model.safetensors.part"
  sha256sum "$MODEL/model.safetensors"
  date -u

  python3 scripts/train/make_golden.py --model "$MODEL" \
      --out "$OUT/xattn_byte_logits.safetensors" || echo "make_golden FAILED"
  date -u

  python3 scripts/train/eval_passkey.py --model "$MODEL" --haystack examples/data/haystack.txt \
      --out "$OUT/eval.json" --max-seconds 90 || echo "eval_passkey FAILED"
  date -u
} 2>&1 | tee "$OUT/run.log"
