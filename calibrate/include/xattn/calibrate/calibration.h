// The calibration pipeline behind `xattn calibrate`: gather statistics (from a model run, capture
// files or earlier statistics files), search per-head thresholds on the fitting samples, validate
// on held-out samples, and build the profile.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "xattn/calibrate/frontier.h"
#include "xattn/calibrate/search.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/io/profile.h"

namespace xattn::calibrate {

struct CalibrationConfig {
  // Sources (any mix of captures and statistics files; a model run needs model_dir + data_files).
  std::string model_dir;
  std::vector<std::string> data_files;     // raw text, or token ids (data_format, *.h5)
  // "text": tokenized with the model folder's tokenizer (xattn/model/tokenizer.h); "ids": token
  // id files (xattn/model/tokens.h). HDF5 files (*.h5, *.hdf5) are always token ids.
  std::string data_format = "text";
  std::vector<std::string> capture_files;  // capture format, docs/capture-format.md
  std::vector<std::string> statistics_files;
  int64_t sample_len = 4096;  // tokens per sample cut from the data files
  int64_t max_samples = 8;
  std::string device = "cpu";  // "cpu" or "cuda"
  // Samples per forward pass of the statistics pass (model::Model::forward_batch; samples of one
  // length are grouped, the rest run alone). Statistics stay per sample: equal to batch 1 up to
  // float rounding. Memory grows with it: the activations and one layer's q, k, v of every
  // sample in the batch. The other passes run one sample at a time.
  int64_t batch = 1;
  // Layer-streamed model (docs/runner.md, Layer-streamed statistics): only one layer's weights on
  // the device at a time. The statistics pass runs layer-major (each layer read once for every
  // sample, the hidden states of all samples carried between layers); the passes that need logits
  // (sensitivity, closed loop, validation) stream each forward pass, reading every layer per pass.
  // The statistics are bit-identical to the in-memory model's.
  bool stream_layers = false;

  StatisticsSettings settings;
  // kl (default): each head's error through its o_proj slice, scaled by its layer's measured KL
  // sensitivity; the budget epsilon is then the predicted end-to-end KL (nats per position).
  // Without a model run (captures, or statistics files that hold no layer sensitivity) kl cannot
  // be measured: the default then falls back to output_error (budget 0.05, worst sample).
  ErrorMetric metric = ErrorMetric::kKL;
  bool metric_is_default = true;
  // The budget; unset: 0.005 nats for kl, 0.05 for the proxy metrics.
  std::optional<double> epsilon;
  std::optional<double> per_head_cap;
  // A head's error is its worst fitting sample's rather than the mean; unset: mean for kl, worst
  // for the proxy metrics (it protects heads that matter on few samples).
  std::optional<bool> worst_case_error;
  double holdout_fraction = 0.25;  // every round(1/f)-th sample is held out of the fit

  // Closed loop on end-to-end metrics measured on FITTING samples (model runs only; held-out
  // samples are only ever used to report): tighten epsilon by bisection until they are met.
  // With the kl metric a target KL is first used as the budget itself.
  std::optional<double> target_kl;
  std::optional<double> target_nll_increase;
  int64_t bisection_steps = 6;

  // Layer sensitivity of the kl metric: each layer alone made sparse at these ladder τ (the
  // nearest ladder step is used), on up to sensitivity_samples fitting samples holding at most
  // sensitivity_tokens tokens together (always at least one sample). The closed loop of a target
  // measures on the same samples.
  std::vector<double> sensitivity_taus = {0.9};
  int64_t sensitivity_samples = 2;
  int64_t sensitivity_tokens = 32768;

  // The quality frontier on the held-out samples: uniform τ at up to frontier_points ladder steps,
  // and per-head profiles at the same predicted errors (0: no frontier).
  int64_t frontier_points = 6;

  // Sharded statistics pass (`mpirun xattn calibrate`, docs/mpi.md): with shard_count > 1 this
  // process measures only the (sample, layer) block of shard shard_index (shard_work) and hands
  // its statistics to gather_shards. On the process that goes on, gather_shards returns every
  // shard's statistics in shard order (an empty Statistics for a shard without work), which are
  // merged into the statistics of a one-process run (merge_shard_statistics); the others get
  // nullopt and stop after the statistics pass.
  int64_t shard_index = 0;
  int64_t shard_count = 1;
  std::function<std::optional<std::vector<Statistics>>(Statistics)> gather_shards;
};

// The model samples [first, second) of shard `index` of `count` when samples are split alone:
// contiguous blocks in sample order, the first (samples % count) shards one sample larger.
std::pair<int64_t, int64_t> sample_shard_range(int64_t samples, int64_t index, int64_t count);

// What one shard of a sharded statistics pass measures: layers [first_layer, past_layer) of the
// model samples [first_sample, past_sample).
struct ShardWork {
  int64_t first_sample = 0, past_sample = 0;
  int64_t first_layer = 0, past_layer = 0;
  bool empty() const { return first_sample == past_sample || first_layer == past_layer; }
  int64_t samples() const { return past_sample - first_sample; }
  int64_t layers() const { return past_layer - first_layer; }
};

// The work of shard `index` of `count` on `samples` samples of a model of `layers` layers. Every
// (sample, layer) belongs to exactly one shard, and shard order is sample-major:
//  - samples >= count: whole samples, sample_shard_range (every layer of each; no forward pass
//    is run twice);
//  - samples < count: one sample per shard; the shards are dealt to the samples in contiguous
//    groups (the first count % samples samples get one shard more), and the shards of a sample
//    split its layers into contiguous ranges (sample_shard_range over the layers). A shard runs
//    the forward pass of its sample up to its last layer and measures only its own layers.
// Every shard has work exactly when samples * layers >= count.
ShardWork shard_work(int64_t samples, int64_t layers, int64_t index, int64_t count);

// The statistics of a one-process run from those of every shard (shards[r]: what shard r of
// shards.size() measured by shard_work on `samples` samples of `layers` layers; an empty
// Statistics, no samples, for a shard without work): the layer blocks of each sample joined in
// layer order (join_statistics_layers), then the samples appended in order. Throws xattn::Error
// when a shard holds other samples or layers than its work.
Statistics merge_shard_statistics(const std::vector<Statistics>& shards, int64_t samples,
                                  int64_t layers);

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
  ErrorMetric metric = ErrorMetric::kKL;  // the objective used, defaults resolved
  bool worst_case_error = false;
  std::vector<int64_t> fit_samples, holdout_samples;
  SearchResult search;
  double epsilon_used = 0;
  std::optional<HeadValidation> holdout;
  std::optional<EndToEnd> end_to_end;  // per-head thresholds, held-out samples
  // The chosen profile against the uniform-τ frontier (interpolated), when it was measured.
  std::optional<FrontierComparison> comparison;
  io::Profile profile;  // profile.frontier holds the curves
  double seconds_statistics = 0, seconds_sensitivity = 0, seconds_search = 0,
         seconds_validation = 0;
  // Memory of a model run (0 without one). Weights: what stays loaded plus the layers resident at
  // once (one when streaming); hidden: the statistics pass's hidden states (streaming: every
  // sample's). peak_device_bytes: the device allocator's peak over the whole run, where the
  // device reports one (CUDA), else -1.
  int64_t peak_resident_layers = 0;
  int64_t peak_weight_bytes = 0, statistics_hidden_bytes = 0;
  bool hidden_on_host = false;
  std::string hidden_placement;  // why the streamed hidden states sit where they do
  int64_t peak_device_bytes = -1;
  // A shard that is not the one going on (CalibrationConfig::gather_shards returned nullopt):
  // only its statistics pass ran; the rest of the result is empty.
  bool stopped_after_statistics = false;
};

// Progress callback: (units done, units total, what is being done).
using ProgressFn = std::function<void(int64_t, int64_t, const std::string&)>;

CalibrationResult run_calibration(const CalibrationConfig& config, const ProgressFn& progress);

}  // namespace xattn::calibrate

namespace xattn::calibrate {

// One line that must be equal for statistics to merge, and its inverse.
// (model::model_signature_of, xattn/model/load_engine.h, reads a checkpoint folder's signature.)
std::string signature_key(const io::ModelSignature& signature);
io::ModelSignature parse_signature_key(const std::string& key);

}  // namespace xattn::calibrate
