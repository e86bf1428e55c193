#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz (docs/robustness.md).
#
#   tests/fuzz/run.sh [--build DIR] [--seconds N] [--jobs J] [--work DIR] [TARGET...]
#
# For each target (default: all): replays tests/fuzz/regressions/<target>/ (inputs that once
# crashed), then fuzzes for N seconds (default 30) on a working corpus in WORK/corpus/<target>
# (default WORK: DIR/fuzz-work, kept between runs) seeded with xattn_fuzz_seeds' files, the
# committed corpus tests/fuzz/corpus/<target>/ and the bundled files. J targets run at once
# (default: the number of cores). Prints executions per target; exits non-zero on any crash,
# leak, timeout or sanitizer report, leaving the input in WORK/artifacts/.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$root/build-fuzz"
seconds=30
jobs="$(nproc)"
work=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$(cd "$2" && pwd)"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --work) mkdir -p "$2"; work="$(cd "$2" && pwd)"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(safetensors checkpoint_index config token_ids profile statistics capture tokenizer sentencepiece)
work="${work:-$build/fuzz-work}"
fuzz_dir="$root/tests/fuzz"

# Bundled inputs that make good seeds (small ones only: libFuzzer mutates whole files).
bundled() {
  case "$1" in
    config) echo "$root/examples/models/xattn-byte/config.json" ;;
    profile) echo "$root/profiles/xattn-byte.h5" "$root/profiles/xattn-byte-eps0.1.h5" ;;
    statistics) echo "$root/profiles/stats-xattn-byte.h5" ;;
    tokenizer) ls "$root"/tests/data/tokenizers/*/tokenizer.json ;;
    sentencepiece) ls "$root"/tests/data/tokenizers/*/tokenizer.model ;;
  esac
}

# JSON-reading targets get a dictionary of the format's keys.
dictionary() {
  case "$1" in
    safetensors|checkpoint_index|config|tokenizer) echo "-dict=$fuzz_dir/dict/$1.dict" ;;
  esac
}

mkdir -p "$work/artifacts" "$work/logs"
rm -rf "$work/seeds"
"$build/tests/fuzz/xattn_fuzz_seeds" "$work/seeds"

# The same limits locally and in CI (docs/robustness.md says why): 10 s per input of the JSON and
# text targets, 2 GB of memory; the HDF5 targets may take 4 GB (HDF5 itself allocates what a
# damaged string attribute declares, up to 4 GB) and 30 s (a child process parses each file first
# and is killed after XATTN_HDF5_PARSE_SECONDS, 2 here).
export XATTN_HDF5_PARSE_SECONDS=2
# A smaller ASan quarantine, returned to the system sooner: each HDF5 input forks the fuzzer, and a
# fork costs in proportion to the memory the process holds (5 -> 17 executions/s for profiles).
export ASAN_OPTIONS="quarantine_size_mb=32:allocator_release_to_os_interval_ms=500${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$fuzz_dir/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
limits_for() {
  case "$1" in
    profile|statistics|capture|token_ids) echo "-rss_limit_mb=4096 -malloc_limit_mb=4096 -timeout=30" ;;
    *) echo "-rss_limit_mb=2048 -timeout=10" ;;
  esac
}

run_one() {
  local t="$1" exe="$build/tests/fuzz/fuzz_$1" corpus="$work/corpus/$1" log="$work/logs/$1.log"
  local limits
  read -r -a limits <<< "$(limits_for "$t")"
  mkdir -p "$corpus"
  cp -f "$work/seeds/$t"/* "$corpus"/
  [ -d "$fuzz_dir/corpus/$t" ] && cp -f "$fuzz_dir/corpus/$t"/* "$corpus"/ 2>/dev/null || true
  for f in $(bundled "$t"); do cp -f "$f" "$corpus/bundled-$(basename "$(dirname "$f")")-$(basename "$f")"; done
  if [ -d "$fuzz_dir/regressions/$t" ] && [ -n "$(ls -A "$fuzz_dir/regressions/$t")" ]; then
    if ! "$exe" "${limits[@]}" "$fuzz_dir/regressions/$t"/* > "$log.replay" 2>&1; then
      echo "fuzz $t: a regression input fails again (log: $log.replay)"; tail -30 "$log.replay"
      return 1
    fi
  fi
  # shellcheck disable=SC2046
  if ! "$exe" "${limits[@]}" $(dictionary "$t") -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/$t-" "$corpus" > "$log" 2>&1; then
    echo "fuzz $t: FAILED (log: $log)"; tail -40 "$log"
    return 1
  fi
}

pids=()
names=()
status=0
for t in "${targets[@]}"; do
  [ -x "$build/tests/fuzz/fuzz_$t" ] || { echo "run.sh: no fuzz_$t in $build/tests/fuzz" >&2; exit 2; }
  run_one "$t" & pids+=($!); names+=("$t")
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done

total=0
printf '%-18s %14s %10s %8s\n' target executions "exec/s" corpus
for t in "${targets[@]}"; do
  log="$work/logs/$t.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" 2>/dev/null | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" 2>/dev/null | tail -1)
  printf '%-18s %14s %10s %8s\n' "$t" "${runs:-?}" "${rate:-?}" "$(ls "$work/corpus/$t" | wc -l)"
  total=$((total + ${runs:-0}))
done
echo "total executions: $total; $([ $status -eq 0 ] && echo "no crash" || echo "FAILURES above")"
exit $status
