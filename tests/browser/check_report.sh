#!/usr/bin/env bash
# Renders `xattn report` pages in headless Chromium and checks that every figure is drawn: the
# page's own script counts the <svg> figures that have shapes and a non-empty bounding box
# (body data-figures) and must reach the count the generator wrote (data-figures-expected); every
# expected figure id must be in the rendered DOM; heatmap cells show their values and none is
# wider than its cell (body data-cell-values, data-cell-values-too-wide), at 8, 6 and 32 heads;
# the new elements (validation table, τ legend with its dense swatch, density floor, τ labels,
# block maps, the comparison's cost table) are in the DOM; a screenshot of each page is taken.
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
# A model-run profile with its held-out quality frontier (the shipped kl profile, 6 x 6 heads), with
# block maps from a capture of the bundled model on the start of the calibration text.
repo=$(cd "$(dirname "$0")/../.." && pwd)
"$xattn" capture --model "$repo/examples/models/xattn-byte" \
  --text "$repo/examples/data/calibration.txt" --max-len 1024 --out "$out/byte-capture.h5" \
  --force >"$out/capture.log" 2>&1
"$xattn" report "$repo/profiles/xattn-byte-kl.h5" --capture "$out/byte-capture.h5" \
  --html "$out/frontier.html" --force >"$out/frontier.txt"
# 32 query heads: every heatmap cell must still show its value.
"$xattn" synth --out "$out/wide.h5" --len 1024 --batch 2 --layers 2 --heads-q 32 --heads-kv 8 \
  --force >/dev/null
"$xattn" calibrate --capture "$out/wide.h5" --out "$out/wide-profile.h5" \
  --stats-out "$out/stats-wide-profile.h5" --holdout 0.5 --epsilon 0.02 --force \
  >"$out/calibrate-wide.log" 2>&1
"$xattn" report "$out/wide-profile.h5" --html "$out/wide.html" --force >"$out/wide.txt"

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
  local wide
  wide=$(grep -o 'data-cell-values-too-wide="[0-9]*"' "$dom" | grep -o '[0-9]\+' || true)
  [ "$wide" = 0 ] || fail "$page: ${wide:-?} heatmap cell values wider than their cells"
  echo "ok: $page.html: $drawn of $expected figures drawn"
}

cell_values() {  # cell_values PAGE: how many heatmap cells show a value in the rendered DOM
  grep -o 'data-cell-values="[0-9]*"' "$out/$1.dom.html" | grep -o '[0-9]\+' || echo 0
}

has() {  # has PAGE TEXT...: each TEXT is in the rendered DOM
  local page=$1
  shift
  local text
  for text in "$@"; do
    grep -qF -- "$text" "$out/$page.dom.html" || fail "$page: '$text' missing"
  done
}

check report fig-tau-heatmap fig-density-heatmap fig-layer-density fig-error-curves-layer-0 \
  fig-error-curves-layer-3 fig-predicted-vs-validated fig-density-vs-length
# Block maps from the capture the statistics name; τ legend with the dense swatch; the floor.
has report 'id="fig-block-maps"' 'class="legend-dense"' 'class="legend-floor"' \
  'class="tau-label"' 'class="floor-region"' 'Error: the worst of the'
[ "$(grep -c '<svg id="fig-block-map-' "$out/report.dom.html")" -ge 1 ] ||
  fail "report: no block map drawn"
[ "$(cell_values report)" -eq $((2 * 4 * 8)) ] || fail "report: $(cell_values report) of 64 cell values"
check compare fig-tau-diff-heatmap fig-density-diff-heatmap fig-layer-density-compare \
  fig-tau-scatter fig-cost-vs-gain
has compare 'id="cost-table"' 'predicted mean error (fit samples)' 'id="cost-summary"'
check frontier fig-frontier fig-tau-heatmap fig-error-curves-layer-0 fig-predicted-vs-validated
has frontier 'id="validation-table"' 'KL divergence from dense attention' 'nats / position' \
  'id="fig-block-maps"' 'byte-capture.h5 (1024 tokens)'
! grep -q '<td>kl_mean</td>' "$out/frontier.dom.html" || fail "frontier: raw validation keys"
[ "$(cell_values frontier)" -eq $((2 * 6 * 6)) ] || fail "frontier: $(cell_values frontier) of 72 cell values"
check wide fig-tau-heatmap fig-density-heatmap fig-error-curves-layer-1 fig-predicted-vs-validated
[ "$(cell_values wide)" -eq $((2 * 2 * 32)) ] || fail "wide: $(cell_values wide) of 128 cell values"
echo "report pages: every figure drawn, cell values shown and inside their cells"
