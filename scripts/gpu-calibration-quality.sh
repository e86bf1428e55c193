#!/usr/bin/env bash
# The calibration-quality benchmark on the GPU machine: for each model and sample length,
# `xattn calibrate` with the kl objective (the default) and with the older output_error proxy,
# each measuring the held-out quality frontier (per-head profiles against uniform τ). Every
# profile's JSON export goes into one file, results.json, that bench/calibration/make_table.py
# turns into docs/calibration-quality.md.
#
#   scripts/gpu-calibration-quality.sh OUT_DIR [MODEL_DIR...]
#
# Models default to the bundled one plus .models/xattn-byte-b and .models/xattn-byte-c
# (docs/models-zoo.md; carried to the machine, not in the repository). Data: the bundled haystack
# and calibration texts, held out of every model's training; 8 samples per run, every 4th held out.
set -uo pipefail
out=${1:?usage: scripts/gpu-calibration-quality.sh OUT_DIR [MODEL_DIR...]}
shift
mkdir -p "$out"
out=$(cd "$out" && pwd)
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(examples/models/xattn-byte .models/xattn-byte-b .models/xattn-byte-c)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-calibration-quality
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DXATTN_BUILD_EXAMPLES=OFF > "$out/configure.log" 2>&1 || { note "configure FAILED"; tail -30 "$out/configure.log"; exit 1; }
if ! ninja -C "$build" -j16 xattn > "$out/build.log" 2>&1; then
  note "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -30; exit 1
fi
note "built in $(( $(date +%s) - start )) s"
xattn="$build/calibrate/xattn"
runs="$out/runs"
mkdir -p "$runs"
data=(examples/data/haystack.txt examples/data/calibration.txt)
for len in ${LENGTHS:-4096 16384}; do
  for model in "${models[@]}"; do
    [ -f "$model/config.json" ] || { note "no model at $model: skipped"; continue; }
    for metric in ${METRICS:-kl output_error}; do
      time_left "$model at $len ($metric)" || break 3
      name="$(basename "$model")-$len-$metric"
      t0=$(date +%s)
      "$xattn" calibrate --device cuda --model "$model" --data "${data[@]}" --sample-len "$len" \
        --samples 8 --holdout 0.25 --metric "$metric" --frontier-points 10 \
        --out "$runs/$name.h5" --force > "$runs/$name.log" 2>&1
      note "$name: exit $?, $(( $(date +%s) - t0 )) s"
      grep -E "^(per-head vs|end to end|time|layer KL)" "$runs/$name.log" | tee -a "$out/summary.txt"
      "$xattn" profile export --json "$runs/$name.json" "$runs/$name.h5" --force > /dev/null 2>&1 ||
        note "$name: export failed"
    done
  done
done
python3 - "$runs" "$out/results.json" <<'PY'
import json, os, sys
runs, target = sys.argv[1], sys.argv[2]
results = {}
for name in sorted(os.listdir(runs)):
    if name.endswith(".json"):
        with open(os.path.join(runs, name)) as f:
            results[name[:-5]] = json.load(f)
with open(target, "w") as f:
    json.dump(results, f, indent=1)
print(f"{len(results)} profiles in {target}")
PY
archive_logs results.json
