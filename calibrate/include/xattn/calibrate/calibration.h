// The calibration pipeline behind `xattn calibrate`: gather statistics (from a model run, capture
// files or earlier statistics files), search per-head thresholds on the fitting samples, validate
// on held-out samples, and build the profile.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "xattn/calibrate/profile.h"
#include "xattn/calibrate/search.h"
#include "xattn/calibrate/statistics.h"

namespace xattn::calibrate {

struct CalibrationConfig {
  // Sources (any mix of captures and statistics files; a model run needs model_dir + data_files).
  std::string model_dir;
  std::vector<std::string> data_files;     // raw text (byte-level models) or token-id files
  std::vector<std::string> capture_files;  // capture format, docs/capture-format.md
  std::vector<std::string> statistics_files;
  int64_t sample_len = 4096;  // tokens per sample cut from the data files
  int64_t max_samples = 8;
  std::string device = "cpu";  // "cpu" or "cuda"

  StatisticsSettings settings;
  ErrorMetric metric = ErrorMetric::kOutputError;
  double epsilon = 0.05;
  std::optional<double> per_head_cap;
  bool worst_case_error = true;  // a head's error is its worst fitting sample's, not the mean
  double holdout_fraction = 0.25;  // every round(1/f)-th sample is held out of the fit

  // Closed loop on the held-out end-to-end metrics (model runs only): tighten epsilon by bisection
  // until they are met.
  std::optional<double> target_kl;
  std::optional<double> target_nll_increase;
  int64_t bisection_steps = 6;
};

// Per-head predicted (fit samples) and measured (held-out samples) figures at the chosen τ.
struct HeadValidation {
  std::vector<double> predicted_density, measured_density;
  std::vector<double> predicted_error, measured_error;
  double measured_mean_density = 0, measured_mean_error = 0;
};

// End-to-end comparison of a thresholds table against dense attention on held-out samples.
struct EndToEnd {
  double nll_dense = 0;     // mean per-token NLL, nats
  double nll_sparse = 0;
  double kl_mean = 0;       // mean over positions of KL(dense || sparse) of next-token distributions
  double density = 0;       // mean attention density of the sparse run
  int64_t tokens = 0;
};

struct CalibrationResult {
  Statistics statistics;
  std::vector<int64_t> fit_samples, holdout_samples;
  SearchResult search;
  double epsilon_used = 0;
  std::optional<HeadValidation> holdout;
  std::optional<EndToEnd> end_to_end;          // per-head thresholds
  std::optional<EndToEnd> end_to_end_uniform;  // the uniform τ of the same budget
  // The uniform τ whose predicted density is closest to the per-head thresholds' (equal cost).
  std::optional<double> equal_density_tau;
  double equal_density_predicted_error = 0;
  std::optional<EndToEnd> end_to_end_equal_density;
  Profile profile;
  double seconds_statistics = 0, seconds_search = 0, seconds_validation = 0;
};

// Progress callback: (units done, units total, what is being done).
using ProgressFn = std::function<void(int64_t, int64_t, const std::string&)>;

CalibrationResult run_calibration(const CalibrationConfig& config, const ProgressFn& progress);

// A stable 64-bit FNV-1a hash as "fnv1a64:<16 hex digits>".
std::string fnv1a64(const std::string& bytes);

}  // namespace xattn::calibrate

namespace xattn::calibrate {

// The signature of a checkpoint folder: model type, shapes, and hashes of config.json and of the
// weight names and shapes (what a profile is checked against before use).
ModelSignature model_signature_of(const std::string& model_dir);

// One line that must be equal for statistics to merge, and its inverse.
std::string signature_key(const ModelSignature& signature);
ModelSignature parse_signature_key(const std::string& key);

}  // namespace xattn::calibrate
