// Head-sparsity reports (`xattn report`): a terminal summary and a self-contained HTML page with
// inline SVG figures for one profile (optionally with the statistics it was calibrated on), or the
// differences between two profiles. Everything is built as strings so it can be tested without a
// terminal or a browser; docs/report.md shows the figures and their ids.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "xattn/calibrate/statistics.h"
#include "xattn/io/profile.h"

namespace xattn::calibrate {

// A profile's heads measured on statistics. Per-head arrays are [num_layers, heads_q] row-major
// like the profile's; NaN marks a layer the statistics do not cover (or a τ not on their ladder).
struct ProfileMeasurements {
  // Whether the statistics' sample list hashes to the profile's calibration_data/hash.
  bool same_data = false;
  // The fit / held-out split, recovered by finding the split whose fit-sample means reproduce the
  // profile's predicted density and error (calibrate holds out every k-th sample). When none does,
  // fit_samples is every sample and holdout_samples is empty.
  std::vector<int64_t> fit_samples, holdout_samples;
  bool split_recovered = false;
  std::string note;  // how the split was found, or why it was not (one sentence)

  std::vector<double> taus;             // [M] the statistics' ladder
  std::vector<int32_t> chosen;          // [L*H] index of the profile's τ on it, -1 if absent
  std::vector<double> curve_density;    // [L*H, M] mean over fit samples (cost-weighted, as the
  std::vector<double> curve_error;      // [L*H, M]  search weighs them) in the profile's metric;
                                        // errors of a worst-sample budget: the worst fit sample's
  std::vector<double> holdout_density;  // [L*H] at the chosen τ, mean over held-out samples
  std::vector<double> holdout_error;    // [L*H]  (NaN when there are none)

  // Density at the chosen τ against sequence length (len_k): one entry per distinct length.
  std::vector<int64_t> lengths;             // ascending
  std::vector<double> density_by_length;    // [lengths, L] mean over samples and heads
  std::vector<int64_t> samples_per_length;  // [lengths]
};

// Checks that the statistics fit the profile (heads, layers, block size, stride, causality;
// xattn::Error kBadInput naming the difference otherwise) and measures every head.
ProfileMeasurements measure_profile(const io::Profile& profile, const Statistics& statistics);

// Which key blocks one head keeps on one sample at the profile's τ, found by running the
// runtime's own scoring and selection (runtime::antidiagonal_scores, select_blocks) on that
// sample's q and k.
struct BlockMap {
  int64_t layer = 0, head = 0;
  double tau = 1;
  double density = 0;  // kept / allowed blocks of this map
  int64_t query_blocks = 0, key_blocks = 0;
  // [query_blocks, key_blocks] row-major, one of the kCell* values below.
  std::vector<uint8_t> cells;
};
inline constexpr uint8_t kCellNotAllowed = 0;  // past the causal diagonal
inline constexpr uint8_t kCellDropped = 1;
inline constexpr uint8_t kCellSelected = 2;  // kept because of its score
inline constexpr uint8_t kCellForced = 3;    // kept at any τ: sink, diagonal, dense last row

struct BlockMaps {
  std::string sample;          // which sample, in words, e.g. "item 0 of short.h5 (1024 tokens)"
  int64_t length = 0;          // key tokens of that sample
  std::vector<BlockMap> maps;  // the sparsest heads (sparsest first), then the densest
  int64_t sparsest = 0;        // how many of maps are the sparsest
  int64_t dense_heads = 0;     // heads at τ = 1, left out of the densest when others exist
};

// Block maps of the `per_end` sparsest and `per_end` densest heads (by predicted density, the
// sparsest first; the densest among the heads below τ = 1 when there are any) on item `item` of
// the capture at `capture_path`, at each head's τ. The capture must be of the profile's model
// (heads, head_dim; the layers the heads are in). Throws xattn::Error (kBadInput) naming the
// mismatch.
BlockMaps compute_block_maps(const io::Profile& profile, const std::string& capture_path,
                             int64_t item, int64_t per_end = 3);

// The capture item the statistics name for `sample` ("capture.h5#2" -> {"capture.h5", 2});
// nullopt when the sample did not come from a capture (a model run on text).
std::optional<std::pair<std::string, int64_t>> capture_of_sample(const Statistics& statistics,
                                                                 int64_t sample);

// The least density a head can have: the share of the allowed blocks that are kept at any τ (the
// sink, the diagonal and, when the profile keeps it dense, the last query block), summed over
// samples of the given lengths (len_q = len_k) like the cost-weighted density means.
double density_floor(const io::KernelSettings& kernel, const std::vector<int64_t>& lengths);

// One profile, with its measurements when statistics were given.
struct ProfileReport {
  std::string profile_name;  // shown in titles, e.g. the file path
  io::Profile profile;
  std::string statistics_name;  // empty without statistics
  std::optional<ProfileMeasurements> measured;
  std::optional<BlockMaps> block_maps;  // with a capture of one sample
  std::string block_maps_note;          // why there are none, when there are none
};

// The terminal summary: model and budget, per layer mean τ, predicted density and error (and the
// held-out figures when measured), the 5 sparsest and 5 densest heads, the uniform-τ comparison.
std::string format_report_text(const ProfileReport& report);

// The self-contained HTML page (no external resources). Figures, each an <svg> with a <title>:
// fig-tau-heatmap, fig-density-heatmap, fig-layer-density, fig-error-curves-layer-<l> (inside
// the block fig-error-curves, needs statistics), fig-predicted-vs-validated (needs held-out
// samples), fig-density-vs-length (needs several lengths), fig-block-map-<l>-<h> (inside the
// block fig-block-maps, needs block_maps); a missing one is replaced by a note. The validation
// fields are a table (validation-table) of quantities in words with their units.
std::string format_report_html(const ProfileReport& report);

// Two profiles of the same shape (num_layers x heads_q), e.g. one model at two budgets.
struct ProfileComparison {
  std::string name_a, name_b;
  io::Profile a, b;
};

// Per-layer mean τ and density of both and their differences, and the heads whose τ changed most.
// Throws xattn::Error (kBadInput) when the shapes differ.
std::string format_comparison_text(const ProfileComparison& comparison);

// HTML with the cost table (cost-table: density gain next to the change of predicted error and of
// the validated figures both profiles have), fig-cost-vs-gain (per head: change of density
// against change of predicted error), fig-tau-diff-heatmap, fig-density-diff-heatmap,
// fig-layer-density-compare and fig-tau-scatter.
std::string format_comparison_html(const ProfileComparison& comparison);

// Writes `html` atomically; an existing file is replaced only with `overwrite` (--force).
void write_report_html(const std::string& path, const std::string& html, bool overwrite);

}  // namespace xattn::calibrate
