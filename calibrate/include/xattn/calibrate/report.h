// Head-sparsity reports (`xattn report`): a terminal summary and a self-contained HTML page with
// inline SVG figures for one profile (optionally with the statistics it was calibrated on), or the
// differences between two profiles. Everything is built as strings so it can be tested without a
// terminal or a browser; docs/report.md shows the figures and their ids.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
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
  std::vector<double> curve_error;      // [L*H, M]  search weighs them) in the profile's metric
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

// One profile, with its measurements when statistics were given.
struct ProfileReport {
  std::string profile_name;  // shown in titles, e.g. the file path
  io::Profile profile;
  std::string statistics_name;  // empty without statistics
  std::optional<ProfileMeasurements> measured;
};

// The terminal summary: model and budget, per layer mean τ, predicted density and error (and the
// held-out figures when measured), the 5 sparsest and 5 densest heads, the uniform-τ comparison.
std::string format_report_text(const ProfileReport& report);

// The self-contained HTML page (no external resources). Figures, each an <svg> with a <title>:
// fig-tau-heatmap, fig-density-heatmap, fig-layer-density, fig-error-curves-layer-<l> (inside
// the block fig-error-curves, needs statistics), fig-predicted-vs-validated (needs held-out
// samples), fig-density-vs-length (needs several lengths); a missing one is replaced by a note.
std::string format_report_html(const ProfileReport& report);

// Two profiles of the same shape (num_layers x heads_q), e.g. one model at two budgets.
struct ProfileComparison {
  std::string name_a, name_b;
  io::Profile a, b;
};

// Per-layer mean τ and density of both and their differences, and the heads whose τ changed most.
// Throws xattn::Error (kBadInput) when the shapes differ.
std::string format_comparison_text(const ProfileComparison& comparison);

// HTML with fig-tau-diff-heatmap, fig-density-diff-heatmap, fig-layer-density-compare and
// fig-tau-scatter.
std::string format_comparison_html(const ProfileComparison& comparison);

// Writes `html` atomically; an existing file is replaced only with `overwrite` (--force).
void write_report_html(const std::string& path, const std::string& html, bool overwrite);

}  // namespace xattn::calibrate
