#!/usr/bin/env bash
# One GPU run that trains two more byte-level models for testing calibration on models it was
# never tuned on (docs/models-zoo.md). Both train at the same time on the one GPU, then each gets
# a short dense passkey evaluation. Needs .traindata/train.txt (prepare_data.py) carried along.
#
# Writes 7 files to $OUT:
#   run.log                                   this script's own log
#   B/config.json B/model.safetensors B/logs.tar.gz   model B (seed 7, head_dim 128)
#   C/config.json C/model.safetensors C/logs.tar.gz   model C (seed 99, 8 layers, head_dim 64)
# logs.tar.gz holds train.log, loss.tsv, train_summary.json, eval.json.
#
# Environment: TRAIN_SECONDS (330), EVAL_SECONDS (90: eval_passkey's --max-seconds; a hard
# timeout of EVAL_SECONDS + 60 s caps it), EVAL_LENGTHS, EVAL_PER_DEPTH, PYTHON (python3),
# EXTRA_ARGS (extra train.py flags, e.g. "--tiny --max-steps 3" for a CPU test),
# EVAL_IMPL (hf; falls back to own if hf fails).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out}
PY=${PYTHON:-python3}
TRAIN_SECONDS=${TRAIN_SECONDS:-330}
EVAL_SECONDS=${EVAL_SECONDS:-90}
EVAL_LENGTHS=${EVAL_LENGTHS:-1024,2048,4096,8192,16384,32768}
EVAL_PER_DEPTH=${EVAL_PER_DEPTH:-4}
EVAL_IMPL=${EVAL_IMPL:-hf}
EXTRA_ARGS=${EXTRA_ARGS:-}
WORK=${WORK:-/tmp/xattn-zoo}
HAYSTACK=examples/data/haystack.txt

# name  seed  shape flags  |  mix
B_ARGS="--seed 7 --hidden-size 256 --layers 6 --heads 8 --kv-heads 4 --head-dim 128 --intermediate-size 512 --mix text=0.6,passkey=0.3,kv=0.05,copy=0.05"
C_ARGS="--seed 99 --hidden-size 256 --layers 8 --heads 4 --kv-heads 2 --head-dim 64 --intermediate-size 768 --mix text=0.3,passkey=0.4,kv=0.25,copy=0.05"

mkdir -p "$OUT/B" "$OUT/C"
rm -rf "$WORK" && mkdir -p "$WORK/B" "$WORK/C"

train() {  # name, args
  local name=$1 args=$2
  # shellcheck disable=SC2086
  $PY scripts/train/train.py --data .traindata/train.txt --out "$WORK/$name/model" \
      --seconds "$TRAIN_SECONDS" --log-tsv "$WORK/$name/loss.tsv" $args $EXTRA_ARGS \
      > "$WORK/$name/train.log" 2>&1
}

evaluate() {  # name
  local name=$1 m="$WORK/$1/model"
  timeout $((EVAL_SECONDS + 60)) $PY scripts/train/eval_passkey.py --model "$m" \
      --impl "$EVAL_IMPL" --haystack "$HAYSTACK" --lengths "$EVAL_LENGTHS" \
      --per-depth "$EVAL_PER_DEPTH" --max-seconds "$EVAL_SECONDS" --out "$WORK/$name/eval.json" \
      > "$WORK/$name/eval.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ] && [ ! -s "$WORK/$name/eval.json" ] && [ "$EVAL_IMPL" = hf ]; then
    echo "eval $name: hf failed (rc $rc), retrying with --impl own" >> "$WORK/$name/eval.log"
    timeout $((EVAL_SECONDS + 60)) $PY scripts/train/eval_passkey.py --model "$m" \
        --impl own --haystack "$HAYSTACK" --lengths "$EVAL_LENGTHS" \
        --per-depth "$EVAL_PER_DEPTH" --max-seconds "$EVAL_SECONDS" \
        --out "$WORK/$name/eval.json" >> "$WORK/$name/eval.log" 2>&1
    rc=$?
  fi
  return $rc
}

collect() {  # name
  local name=$1 d="$WORK/$1"
  cp "$d/model/config.json" "$d/model/model.safetensors" "$OUT/$name/" 2>/dev/null
  cp "$d/model/train_summary.json" "$d/" 2>/dev/null
  cat "$d/eval.log" >> "$d/train.log" 2>/dev/null
  (cd "$d" && tar czf "$OUT/$name/logs.tar.gz" --ignore-failed-read \
      train.log loss.tsv train_summary.json eval.json 2>/dev/null)
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
      || exit 1
  echo "B: $B_ARGS"
  echo "C: $C_ARGS"
  echo "train seconds $TRAIN_SECONDS, extra: $EXTRA_ARGS"

  SECONDS=0
  train B "$B_ARGS" & pid_b=$!
  train C "$C_ARGS" & pid_c=$!
  wait $pid_b; rc_b=$?
  wait $pid_c; rc_c=$?
  echo "training done after ${SECONDS}s: rc B $rc_b, rc C $rc_c"
  for n in B C; do
    tail -n 3 "$WORK/$n/train.log"
    [ -f "$WORK/$n/model/model.safetensors" ] && sha256sum "$WORK/$n/model/model.safetensors" \
        && ls -l "$WORK/$n/model/model.safetensors"
  done
  date -u

  pids=()
  [ $rc_b -eq 0 ] && { evaluate B & pids+=($!); }
  [ $rc_c -eq 0 ] && { evaluate C & pids+=($!); }
  for p in "${pids[@]}"; do wait "$p" || echo "an evaluation failed or timed out (pid $p)"; done
  echo "evaluation done after ${SECONDS}s"
  for n in B C; do
    echo "== eval $n"; grep '^{' "$WORK/$n/eval.log" 2>/dev/null
    tail -n 2 "$WORK/$n/eval.log" 2>/dev/null | grep -v '^{'
  done
  collect B
  collect C
  ls -lR "$OUT"
  date -u
} 2>&1 | tee "$OUT/run.log"
