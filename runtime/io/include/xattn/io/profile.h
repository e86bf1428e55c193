// The calibration profile: per-head thresholds of one model plus everything needed to trust and
// reproduce them (model signature, kernel parameters, budget, predictions, validation, data).
// Stored as HDF5 with a versioned schema, documented in docs/profile-format.md; exported as JSON
// for frameworks that do not read HDF5.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace xattn::io {

// Schema version written by this build. Readers accept any minor version of their major version
// (minor versions only add optional fields) and reject other major versions.
inline constexpr int32_t kProfileFormatMajor = 1;
// 1.1 adds calibration_data/holdout_samples; 1.2 adds kernel/dense_last_query_block; 1.3 adds
// the optional frontier group (held-out quality against density, per-head and uniform); 1.4 adds
// the optional density_fit group (kept density per layer against sequence length); 1.5 adds
// kernel/layer_windows (each layer's sliding window).
inline constexpr int32_t kProfileFormatMinor = 5;

// The hash the profile's hash fields use: "fnv1a64:" and 16 hex digits of the FNV-1a 64-bit hash
// of `bytes`.
std::string fnv1a64(const std::string& bytes);

// What the profile was calibrated for. Hashes are free-form strings (e.g. "sha256:..."); an empty
// hash means unknown and is not compared.
struct ModelSignature {
  std::string architecture;  // e.g. "llama"
  int64_t num_layers = 0;
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t head_dim = 0;
  std::string config_hash;         // hash of config.json
  std::string weight_shapes_hash;  // hash of the weight names and shapes
};

// Kernel parameters the thresholds were calibrated with; they only hold for the same settings.
struct KernelSettings {
  int64_t block_size = 128;
  int64_t stride = 8;                        // S
  std::string scale_rule = "1/(sqrt(d)*S)";  // scoring scale, as a formula of d and S
  bool causal = true;
  // Selection rule the thresholds were calibrated with (runtime::EstimateOptions says why);
  // profiles before format 1.2 read as false.
  bool dense_last_query_block = true;
  // Sliding window per layer the statistics were measured with (causal only): empty when no
  // layer has one (and in files before format 1.5), else one entry per layer, 0 for none.
  std::vector<int64_t> layer_windows;
};

// The accuracy budget the search met.
struct BudgetSettings {
  double epsilon = 0.0;                // bound on the (weighted) mean per-head error
  std::string metric;                  // e.g. "recall_loss" or "output_error"
  std::optional<double> per_head_cap;  // bound on any single head's error, if one was set
  std::vector<double> candidates;      // the τ ladder searched (may be empty)
};

// The best single τ for all heads under the same budget, for comparison.
struct UniformComparison {
  double tau = 1.0;
  double density = 1.0;  // its predicted mean density
  double error = 0.0;    // its predicted mean error
};

// What the statistics were computed on.
struct CalibrationData {
  std::string hash;              // hash of the calibration samples
  int64_t sample_count = 0;
  std::vector<int64_t> lengths;  // [sample_count] tokens per sample
  std::string description;       // free text, e.g. file names
  // Indices (into the samples above, ascending) held out of the fit for validation; empty when
  // none were, or in files of format 1.0.
  std::vector<int64_t> holdout_samples;
};

// The quality frontier a calibration measured: held-out end-to-end quality (KL of the next-token
// distributions against dense attention) as a function of attention density, for per-head
// profiles at several budgets and for one uniform τ over the ladder (format 1.3). Interpolating
// and comparing the curves is calibration logic (xattn/calibrate/frontier.h).
struct FrontierPoint {
  double parameter = 0;          // uniform: τ; per-head: the search budget
  double predicted_density = 0;  // on the fitting samples
  double density = 0;            // measured on the held-out samples
  double kl = 0;                 // held-out mean KL(dense || sparse), nats per position
  double nll_increase = 0;       // held-out mean NLL change, nats per token
};

struct Frontier {
  std::vector<FrontierPoint> uniform;   // one per ladder τ
  std::vector<FrontierPoint> per_head;  // one per budget
  int64_t holdout_tokens = 0;
  bool empty() const { return uniform.empty() && per_head.empty(); }
};

// How each layer's kept density falls with the key length L, fitted by calibration to the
// densities it measured at the chosen τ (format 1.4): density(L) = min(1, density[layer] *
// (L / reference_len)^(-exponent[layer])). The runtime's dispatch predicts from it whether sparse
// attention pays at a length. Empty in older profiles: the dispatch then assumes each layer's
// calibrated density at every length.
struct DensityFit {
  int64_t reference_len = 0;       // tokens
  std::vector<double> density;     // [num_layers] in (0, 1], at reference_len
  std::vector<double> exponent;    // [num_layers] >= 0
  std::vector<int64_t> lengths;    // the lengths the fit was made from, ascending
  bool empty() const { return density.empty(); }
};

struct Profile {
  int32_t format_major = kProfileFormatMajor;
  int32_t format_minor = kProfileFormatMinor;
  ModelSignature model;
  KernelSettings kernel;
  std::vector<float> thresholds;         // [num_layers, heads_q] τ per head, row-major, in (0, 1]
  std::vector<float> predicted_density;  // [num_layers, heads_q] in [0, 1]
  std::vector<float> predicted_error;    // [num_layers, heads_q] >= 0, in budget.metric
  double predicted_mean_density = 0.0;   // overall, weighted as in the search
  double predicted_mean_error = 0.0;     // overall, weighted as in the search
  BudgetSettings budget;
  std::optional<UniformComparison> uniform;
  std::map<std::string, double> validation;  // optional held-out results, e.g. "kl_mean"
  Frontier frontier;                         // optional (empty when not measured)
  DensityFit density_fit;                    // optional (empty before format 1.4)
  CalibrationData data;
  std::string tool_version;  // e.g. "xattn 0.1.0" (xattn::tool_version(), version.h)
  std::string created_utc;   // ISO-8601 UTC, e.g. "2026-11-28T10:05:54Z"
};

// The current time as ISO-8601 UTC ("YYYY-MM-DDTHH:MM:SSZ").
std::string utc_now_iso8601();

// Checks shapes and values; throws xattn::Error (kBadInput) naming the field.
void validate_profile(const Profile& profile);

// Writes atomically: a temporary file in the same folder, then a rename. Without `overwrite` an
// existing file is never replaced (the message says to pass --force). On any failure the old file,
// if any, is left as it was and the temporary file is removed. Throws xattn::Error.
void write_profile(const std::string& path, const Profile& profile, bool overwrite);

// Reads and validates. Throws xattn::Error (kBadInput) naming the missing or malformed field, an
// unknown major version, a file that is not an xattn profile, or a damaged / truncated file;
// (kIo) when the file cannot be opened.
Profile read_profile(const std::string& path);

// Human-readable differences between the profile's model and `model`, e.g.
// "profile is for 32 layers, model has 28"; empty when they match.
std::vector<std::string> profile_mismatches(const Profile& profile, const ModelSignature& model);

// Throws xattn::Error (kBadInput) listing every difference, when there is any.
void check_profile_matches(const Profile& profile, const ModelSignature& model);

// The whole profile as JSON text (2-space indent); matrices become nested arrays [layer][head].
std::string profile_to_json(const Profile& profile);

// Writes profile_to_json atomically, with the same overwrite rule as write_profile.
void write_profile_json(const std::string& path, const Profile& profile, bool overwrite);

// The readable summary `xattn profile show` prints: header and a per-layer table of mean / min /
// max τ, mean predicted density and mean predicted error.
std::string format_profile_summary(const Profile& profile);

}  // namespace xattn::io
