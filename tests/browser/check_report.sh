#!/usr/bin/env bash
# Renders `xattn report` pages in headless Chromium and checks that every figure is drawn: the
# page's own script counts the <svg> figures that have shapes and a non-empty bounding box
# (body data-figures) and must reach the count the generator wrote (data-figures-expected); every
# expected figure id must be in the rendered DOM; a screenshot of each page is taken.
#
# usage: tests/browser/check_report.sh XATTN_BINARY [OUT_DIR]
#   OUT_DIR keeps the inputs, pages, DOM dumps and screenshots (default: a temporary folder,
#   removed on success). Exit 77 (skipped) when Chromium is not installed.
set -euo pipefail

xattn=${1:?usage: check_report.sh XATTN_BINARY [OUT_DIR]}
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "SKIP: $chromium not found (apt-get install chromium)"
  exit 77
fi
keep=0
if [ $# -ge 2 ]; then
  out=$2
  keep=1
  mkdir -p "$out"
else
  out=$(mktemp -d)
fi
profile_dir=$(mktemp -d)  # Chromium's user data: fresh, so no state leaks between runs
cleanup() {
  local status=$?
  rm -rf "$profile_dir"
  if [ "$status" -eq 0 ] && [ "$keep" -eq 0 ]; then
    rm -rf "$out"
  else
    echo "outputs kept in $out"
  fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  exit 1
}

# Inputs: two small synthetic captures of different lengths, calibrated at two budgets, so the
# report has held-out samples and several lengths.
"$xattn" synth --out "$out/short.h5" --len 1024 --batch 2 --layers 4 --heads-q 8 --force >/dev/null
"$xattn" synth --out "$out/long.h5" --len 2048 --batch 2 --layers 4 --heads-q 8 --seed 1 \
  --force >/dev/null
"$xattn" calibrate --capture "$out/short.h5" "$out/long.h5" --out "$out/a.h5" \
  --stats-out "$out/stats-a.h5" --holdout 0.5 --epsilon 0.02 --force >"$out/calibrate-a.log" 2>&1
"$xattn" calibrate --stats "$out/stats-a.h5" --out "$out/b.h5" --stats-out "$out/stats-b.h5" \
  --holdout 0.5 --epsilon 0.05 --force >"$out/calibrate-b.log" 2>&1
"$xattn" report "$out/a.h5" --html "$out/report.html" --force >"$out/report.txt"
"$xattn" report "$out/a.h5" "$out/b.h5" --html "$out/compare.html" --force >"$out/compare.txt"
# A model-run profile with its held-out quality frontier (the shipped kl profile).
repo=$(cd "$(dirname "$0")/../.." && pwd)
"$xattn" report "$repo/profiles/xattn-byte-kl.h5" --html "$out/frontier.html" --force \
  >"$out/frontier.txt"

render() {  # render PAGE: writes PAGE.dom.html and PAGE.png
  local page=$1
  local flags=(--headless --no-sandbox --disable-gpu --disable-background-networking
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars
    --user-data-dir="$profile_dir" --window-size=1280,3200)
  "$chromium" "${flags[@]}" --dump-dom "file://$out/$page.html" >"$out/$page.dom.html" \
    2>"$out/$page.chromium.log" || fail "chromium could not load $page.html (see $page.chromium.log)"
  "$chromium" "${flags[@]}" --screenshot="$out/$page.png" "file://$out/$page.html" \
    >>"$out/$page.chromium.log" 2>&1 || fail "chromium could not screenshot $page.html"
}

check() {  # check PAGE ID...: every figure drawn, every id present, screenshot written
  local page=$1
  shift
  render "$page"
  local dom="$out/$page.dom.html"
  local expected drawn
  expected=$(grep -o 'data-figures-expected="[0-9]*"' "$dom" | grep -o '[0-9]\+' || true)
  drawn=$(grep -o 'data-figures="[0-9]*"' "$dom" | grep -o '[0-9]\+' || true)
  [ -n "$expected" ] || fail "$page: no data-figures-expected in the rendered DOM"
  [ -n "$drawn" ] || fail "$page: the page's script did not run (no data-figures in the DOM)"
  [ "$expected" -gt 0 ] || fail "$page: no figures expected"
  [ "$drawn" -eq "$expected" ] || fail "$page: $drawn of $expected figures drawn"
  ! grep -q 'data-empty=' "$dom" || fail "$page: empty figures: $(grep -o '<svg id="[^"]*"[^>]*data-empty' "$dom")"
  local id
  for id in "$@"; do
    grep -q "<svg id=\"$id\"" "$dom" || fail "$page: figure $id missing"
  done
  [ -s "$out/$page.png" ] && [ "$(stat -c %s "$out/$page.png")" -gt 20000 ] ||
    fail "$page: screenshot missing or blank"
  echo "ok: $page.html: $drawn of $expected figures drawn"
}

check report fig-tau-heatmap fig-density-heatmap fig-layer-density fig-error-curves-layer-0 \
  fig-error-curves-layer-3 fig-predicted-vs-validated fig-density-vs-length
check compare fig-tau-diff-heatmap fig-density-diff-heatmap fig-layer-density-compare \
  fig-tau-scatter
check frontier fig-frontier fig-tau-heatmap fig-error-curves-layer-0 fig-predicted-vs-validated
echo "report pages: every figure drawn"
