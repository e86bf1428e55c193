#!/usr/bin/env bash
# End-to-end prefill speed with the density-aware dispatch (issue 16), on the GPU machine:
#  (a) measures the dispatch's cost table for the two attention shapes below
#      (build/bench/xattn_cost_table, through runtime::Engine) and prints it;
#  (b) times prefill (time to first token: one forward over a passkey prompt; the median of the
#      dense/patched ratios of back-to-back pairs, their order alternating: 31 pairs up to 16K,
#      15 at 32K, 7 above, or XATTN_E2E_REPEAT; short prefills are bound by the host, whose
#      noise needs the longer series),
#      dense against patched with the dispatch, through the C++ runner for the bundled model
#      (6 layers, 6/2 heads, d 64, profiles/xattn-byte.h5) and an 8B-shaped random-weight model
#      cut to LAYERS layers (default 4, to stay in time; 32/8 heads, d 128, profile calibrated
#      here on 2 x 8K tokens), and through the transformers adapter for the bundled model, at
#      8K..128K (what fits the time budget);
#  (c) with one uniform τ chosen to give 10-20 % density (cost rule on at that density), the
#      whole-prefill speed-up next to the attention-only one at 64K and 128K.
# XATTN_E2E_LENGTHS (default 8192,16384,32768,65536,131072) limits every part to those lengths;
# XATTN_E2E_8B=0 skips the 8B-shaped model.
# Prints a markdown table (scripts/e2e_speed_table.py) and writes $OUT/e2e_speed.json; exit 0
# when every calibrated-profile row is >= 0.98x dense.
#
#   scripts/gpu-e2e-speed.sh OUT_DIR [LAYERS]
set -uo pipefail
out=${1:?usage: scripts/gpu-e2e-speed.sh OUT_DIR [LAYERS]}
layers=${2:-4}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-e2e-speed
export XATTN_GPU_BUDGET_S=${XATTN_GPU_BUDGET_S:-270}
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
gpu_configure -DXATTN_BUILD_EXAMPLES=ON -DXATTN_BUILD_TESTS=OFF || exit 1
if ! ninja -C "$build" -j16 xattn xattn_cpp_inference xattn_cost_table xattn_ops \
    > "$out/build.log" 2>&1; then
  note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -30; exit 1
fi
note "built in $(( $(date +%s) - start )) s"
start=$(date +%s)  # the budget covers the measurements
runner="$build/examples/cpp_inference/xattn_cpp_inference"
results="$out/results.jsonl"
: > "$results"

# (a) cost tables.
"$build/bench/xattn_cost_table" --heads 6,2 --head-dim 64 --lengths 8192,16384,32768,65536 \
  --out "$out/cost-byte.json" > "$out/cost-byte.log" 2>&1 || { note "cost table (byte) FAILED"; tail -5 "$out/cost-byte.log"; }
"$build/bench/xattn_cost_table" --heads 32,8 --head-dim 128 --lengths 8192,16384,32768 \
  --out "$out/cost-8b.json" > "$out/cost-8b.log" 2>&1 || { note "cost table (8B) FAILED"; tail -5 "$out/cost-8b.log"; }
note "cost tables measured"
cat "$out/cost-byte.log" "$out/cost-8b.log"

# A haystack long enough for 128K prompts.
hay=/tmp/xattn_speed_haystack.txt
for _ in 1 2 3 4 5 6 7 8 9 10; do cat examples/data/haystack.txt examples/data/calibration.txt; done > "$hay"

lengths=${XATTN_E2E_LENGTHS:-8192,16384,32768,65536,131072}
at_lengths() { local len; for len in "$@"; do [[ ",$lengths," == *",$len,"* ]] && echo "$len"; done; }
pairs_at() {
  if [ -n "${XATTN_E2E_REPEAT:-}" ]; then echo "$XATTN_E2E_REPEAT"
  elif [ "$1" -le 16384 ]; then echo 31
  elif [ "$1" -le 32768 ]; then echo 15
  else echo 7; fi
}

# One C++ runner measurement: appends a JSON line. KIND MODEL PROFILE LENGTH TARGET ARGS...
cpp_row() {
  local kind=$1 model=$2 profile=$3 len=$4 target=$5
  shift 5
  local log="$out/cpp_$(basename "$model")_${kind// /_}_$len.log"
  "$runner" --device cuda --model "$model" --profile "$profile" --haystack "$hay" --length "$len" \
    --tokens 1 --repeat "$(pairs_at "$len")" --crossover 0 "$@" > "$log" 2>&1 || { note "runner FAILED: $log"; tail -3 "$log"; return 1; }
  python3 - "$log" "$kind" "$model" "$len" "$target" >> "$results" <<'PY'
import json, re, sys
log, kind, model, length, target = sys.argv[1:]
text = open(log).read()
m = re.search(r"median time to first token over \d+: XAttention ([\d.]+) s, dense ([\d.]+) s", text)
row = {"runner": "C++", "model": model, "profile_kind": kind, "length": int(length),
       "patched_ms": float(m.group(1)) * 1e3, "dense_ms": float(m.group(2)) * 1e3,
       "target": target == "1"}
row["speedup_of_medians"] = round(row["dense_ms"] / row["patched_ms"], 3)
pair = re.search(r"median of \d+ paired ratios \(dense / XAttention\): ([\d.]+)x", text)
row["speedup"] = float(pair.group(1)) if pair else row["speedup_of_medians"]
a = re.search(r"attention only: XAttention ([\d.]+) s, dense ([\d.]+) s", text)
if a:
    row["attention_speedup"] = round(float(a.group(2)) / float(a.group(1)), 3)
paths = re.search(r"layers \(path, density\): (.*)", text).group(1)
row["sparse_layers"] = f"{paths.count(': sparse')}/{paths.count(': ')}"
row["layer_paths"] = paths
row["decisions"] = re.findall(r"layer \d+ dispatch: (.*)", text)
row["density"] = float(re.search(r"density ([\d.]+) of the causal blocks", text).group(1))
print(json.dumps(row))
PY
  tail -1 "$results" | python3 -c "import json, sys
r = json.load(sys.stdin)
print('  %s %d: dense %.2f ms, patched %.2f ms (%sx), sparse layers %s' % (r['profile_kind'],
      r['length'], r['dense_ms'], r['patched_ms'], r['speedup'], r['sparse_layers']))"
}

byte=examples/models/xattn-byte
for len in $(at_lengths 8192 16384 32768 65536 131072); do
  time_left "bundled model at $len" || break
  cpp_row calibrated "$byte" profiles/xattn-byte.h5 "$len" 1 --cost-table "$out/cost-byte.json"
done
# What a user gets without measuring: the device's built-in table (fitted to the 8B shape).
for len in $(at_lengths 8192 16384 32768); do
  time_left "bundled model at $len, built-in costs" || break
  cpp_row "calibrated, built-in costs" "$byte" profiles/xattn-byte.h5 "$len" 1
done

# The 8B-shaped model, LAYERS layers, and a profile calibrated on it (output_error, 2 x 8K).
small=/tmp/llama8b_l$layers
if [ "${XATTN_E2E_8B:-1}" != 0 ] && time_left "8B-shaped model"; then
  python3 scripts/make_random_llama.py "$small" /tmp/llama8b_speed_ids.txt --tokens 16400 \
    --layers "$layers" > "$out/make_model.log" 2>&1 || note "make_random_llama FAILED"
  "$build/calibrate/xattn" calibrate --model "$small" --data /tmp/llama8b_speed_ids.txt \
    --data-format ids --sample-len 8192 --samples 2 --holdout 0 --frontier-points 0 \
    --metric output_error --device cuda --out "$out/profile-8b.h5" --force \
    > "$out/calibrate_8b.log" 2>&1 || { note "calibrate 8B FAILED"; tail -5 "$out/calibrate_8b.log"; }
  for len in $(at_lengths 8192 16384 32768 65536 131072); do
    time_left "8B shape at $len" || break
    cpp_row calibrated "$small" "$out/profile-8b.h5" "$len" 1 --cost-table "$out/cost-8b.json"
  done
fi

# (c) 10-20 % density: a uniform τ, its density assumed by the cost rule, attention timed too.
low_density() {  # MODEL PROFILE COST TAU DENSITY
  for len in $(at_lengths 65536 131072); do
    time_left "low density $1 at $len" || break
    cpp_row "uniform tau $4" "$1" "$2" "$len" 0 --cost-table "$3" --threshold "$4" \
      --density "$5" --time-attention
  done
}
low_density "$byte" profiles/xattn-byte.h5 "$out/cost-byte.json" 0.8 0.15
[ -f "$out/profile-8b.h5" ] && low_density "$small" "$out/profile-8b.h5" "$out/cost-8b.json" 0.3 0.15

# The transformers adapter, bundled model.
if time_left "transformers adapter"; then
  PYTHONPATH=python XATTN_OPS="$build/runtime/libxattn_ops.so" timeout 120 python3 \
    scripts/e2e_speed_transformers.py --model "$byte" --profile profiles/xattn-byte.h5 \
    --lengths "$(at_lengths 8192 16384 32768 65536 | paste -sd,)" --cost-table "$out/cost-byte.json" \
    > "$out/transformers.jsonl" 2> "$out/transformers.log" || { note "transformers run FAILED or timed out"; tail -3 "$out/transformers.log"; }
  cat "$out/transformers.jsonl" >> "$results"
fi

python3 scripts/e2e_speed_table.py "$results" "$out/e2e_speed.json" | tee -a "$out/summary.txt"
status=${PIPESTATUS[0]}
archive_logs e2e_speed.json cost-byte.json cost-8b.json
exit "$status"
