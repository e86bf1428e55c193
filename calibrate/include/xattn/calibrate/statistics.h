// Attention statistics for calibration: for every (sample, layer, query head, candidate τ) the
// density XAttention keeps, the recall of the exact softmax mass, and the output error against
// dense attention. Stored in a mergeable HDF5 file (docs/statistics-format.md), so statistics
// from many runs, GPUs or hosts combine and are searched once.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "xattn/calibrate/search.h"
#include "xattn/io/profile.h"

namespace xattn::calibrate {

inline constexpr int32_t kStatisticsFormatMajor = 1;
// 1.1 adds dense_last_query_block; 1.2 adds projected_error and layer_kl_sensitivity (optional);
// 1.3 adds prefix_density and sample_prefix_len (optional); 1.4 adds layer_windows (optional).
inline constexpr int32_t kStatisticsFormatMinor = 4;

struct StatisticsSettings {
  int64_t stride = 8;
  int64_t block_size = 128;
  bool causal = true;
  bool dense_last_query_block = true;  // runtime::EstimateOptions says why
  std::vector<double> taus = default_tau_ladder();  // ascending
  bool output_error = true;  // needs v
  int64_t query_chunk = 0;   // query rows per exact-attention chunk (0: about 16 MiB of scratch)
  // Each model layer's sliding window the layers were measured with (causal only): empty when no
  // layer has one (and in files before 1.4), else one entry per model layer, 0 for none.
  std::vector<int64_t> layer_windows;

  int64_t window(int64_t layer) const {
    return size_t(layer) < layer_windows.size() ? layer_windows[size_t(layer)] : 0;
  }
};

// Measurements of one (sample, layer); arrays are [heads_q, num_taus] row-major.
struct LayerMeasurement {
  std::vector<float> density;      // kept / allowed blocks
  std::vector<float> recall_mean;  // exact softmax mass inside the kept blocks, mean over query blocks
  std::vector<float> recall_min;   // the same, worst query block
  std::vector<float> output_error; // relative L2 of the head's sparse output against dense; NaN if
                                   // not measured
  // Mean over query tokens of |W_O,h (o_sparse - o_dense)|^2: the error the head adds to the
  // residual stream through its slice of o_proj. NaN without an output projection.
  std::vector<float> projected_error;
  // Density of the sample's first half (whole blocks) as a prefill of its own, at every τ: a
  // second length for the runtime's density-against-length fit, for a quarter of the scoring.
  // Empty when not measured (non-causal, len_q != len_k, or fewer than 4 query blocks).
  std::vector<float> prefix_density;
  int64_t prefix_len = 0;  // tokens of that prefix; 0 when not measured
};

// Measures one sample: q [1, heads_q, len_q, d], k and v [1, heads_kv, len_k, d] (v may be
// undefined: no output error). output_projection is the layer's o_proj weight
// [hidden, heads_q * d] (undefined: no projected error). CPU or CUDA tensors. window > 0: the
// layer's sliding window (causal only), applied to the selection, the exact attention and the
// densities alike.
LayerMeasurement measure_layer(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const StatisticsSettings& settings,
                               const at::Tensor& output_projection = {}, int64_t window = 0);

struct SampleInfo {
  int64_t len_q = 0;
  int64_t len_k = 0;
  std::string source;  // e.g. "capture.h5#2" or "data.txt@0"
  int64_t prefix_len = 0;  // tokens of the prefix whose density was measured too (0: none)
};

// Statistics of many samples. Arrays are [samples, layers, heads_q, num_taus] row-major.
struct Statistics {
  StatisticsSettings settings;
  std::string model_name;
  std::string model_signature;  // free-form key (architecture, shapes, hashes); equal to merge
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t head_dim = 0;
  std::vector<int64_t> layers;  // model layer index of each layer slot
  std::vector<SampleInfo> samples;
  std::vector<float> density, recall_mean, recall_min, output_error, projected_error;
  std::vector<float> prefix_density;  // at each sample's prefix_len; NaN where not measured
  // Per layer slot: measured KL (nats per token) of sparsifying that layer alone, divided by its
  // predicted projected error (the scale that turns projected error into predicted KL). Empty
  // when not measured (statistics from captures); sensitivity_samples says on how many samples.
  std::vector<double> layer_kl_sensitivity;
  int64_t sensitivity_samples = 0;

  int64_t num_taus() const { return int64_t(settings.taus.size()); }
  int64_t entry(int64_t sample, int64_t layer, int64_t head, int64_t tau) const {
    return ((sample * int64_t(layers.size()) + layer) * heads_q + head) * num_taus() + tau;
  }
  // Appends one sample's measurements, layer by layer in `layers` order.
  void add_sample(const SampleInfo& info, const std::vector<LayerMeasurement>& per_layer);
};

// Combines statistics of the same model and settings (samples appended in order); throws
// xattn::Error saying what differs otherwise.
Statistics merge_statistics(const std::vector<Statistics>& parts);

// Combines statistics of the same samples (sources and lengths equal) measured on disjoint
// blocks of layers, given in ascending layer order: the layer lists are concatenated and every
// sample's measurements joined, as if its layers had been measured together. Layer sensitivities
// are joined when every part has them (measured on equal sample counts). Throws xattn::Error
// saying what differs otherwise.
Statistics join_statistics_layers(const std::vector<Statistics>& parts);

void write_statistics(const std::string& path, const Statistics& statistics, bool overwrite);
Statistics read_statistics(const std::string& path);

// recall_loss: 1 - attention mass kept; output_error: relative L2 of the head's output;
// projected_error: squared error through the head's slice of o_proj; kl: projected error times the
// layer's measured KL sensitivity, scaled so that the budget is the predicted end-to-end KL in nats
// per token summed over heads (the default objective of model runs).
enum class ErrorMetric { kRecallLoss, kOutputError, kProjectedError, kKL };
ErrorMetric parse_error_metric(const std::string& name);
const char* error_metric_name(ErrorMetric metric);

// How a profile names its budget: the metric, plus "_worst_sample" when each head's error is its
// worst sample's (e.g. "output_error_worst_sample").
struct BudgetMetric {
  ErrorMetric metric = ErrorMetric::kOutputError;
  bool worst_case = false;
};
std::string budget_metric_name(const BudgetMetric& budget);
BudgetMetric parse_budget_metric(const std::string& name);

// Per (layer, head, τ): density averaged over the chosen samples, each sample weighted by its
// number of allowed blocks (its attention cost), so longer samples count more; the error likewise,
// or (worst_case) the largest error over the samples, so a head that matters on a few samples
// (retrieval) is not averaged away. Heads are numbered layer * heads_q + head.
SearchProblem search_problem_from(const Statistics& statistics, const std::vector<int64_t>& samples,
                                  ErrorMetric metric, double epsilon,
                                  std::optional<double> per_head_cap, bool worst_case = false);

// The error of one entry (sample, layer slot, head, τ) in `metric`, as the search reads it (kl:
// projected error x the layer's sensitivity x the head count, so the mean over heads is the
// predicted total). NaN when the statistics lack what the metric needs.
double entry_error(const Statistics& statistics, ErrorMetric metric, int64_t sample, int64_t slot,
                   int64_t head, int64_t tau);

// Each layer's kept density against sequence length at the chosen τ (choice [slots x heads_q],
// candidate index per head), for the profile's density_fit: every sample gives a point at its
// length and one at its prefix (mean density over the layer's heads); per layer a least-squares
// line through (log length, log density) gives the exponent (clamped to [0, 4]) and the density
// at reference_len, the longest length. Empty when fewer than two distinct lengths were measured.
// Model layers absent from the statistics get density 1 and exponent 0.
io::DensityFit fit_density_against_length(const Statistics& statistics,
                                           const std::vector<int32_t>& choice,
                                           int64_t num_layers);

// Number of allowed blocks of one sample (the weight above).
double allowed_blocks(int64_t len_q, int64_t len_k, int64_t block_size, bool causal);

}  // namespace xattn::calibrate
