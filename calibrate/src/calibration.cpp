// The calibration pipeline: statistics -> search on the fitting samples -> held-out validation ->
// profile. See calibration.h.
#include "xattn/calibrate/calibration.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <tuple>

#include "xattn/calibrate/statistics_checks.h"
#include "xattn/calibrate/version.h"
#include "xattn/device_memory.h"
#include "xattn/error.h"
#include "xattn/io/capture.h"
#include "xattn/io/paths.h"
#include "xattn/model/attention.h"
#include "xattn/model/config.h"
#include "xattn/model/load_engine.h"
#include "xattn/model/model.h"
#include "xattn/model/safetensors.h"
#include "xattn/model/tokenizer.h"
#include "xattn/model/tokens.h"

namespace xattn::calibrate {

using io::fnv1a64;
using io::Frontier;
using io::ModelSignature;
using io::Profile;
using io::UniformComparison;
using io::utc_now_iso8601;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A model run's samples: token windows cut from the data files. Text goes through the model
// folder's tokenizer (bytes for the bundled byte-level models); each sample of text starts with
// the tokenizer's BOS when it adds one, as in training. Token id files are cut as they are.
std::vector<std::vector<int64_t>> cut_samples(const CalibrationConfig& config,
                                              std::vector<std::string>* sources) {
  XATTN_CHECK_ARG(config.sample_len >= 2, "--sample-len must be at least 2 tokens");
  XATTN_CHECK_ARG(config.data_format == "text" || config.data_format == "ids",
                  "--data-format must be text or ids, got '", config.data_format, "'");
  std::unique_ptr<model::Tokenizer> tokenizer;
  std::vector<std::vector<int64_t>> samples;
  for (const auto& path : config.data_files) {
    const std::string ext = io::extension(path);
    const bool ids_file = config.data_format == "ids" || ext == ".h5" || ext == ".hdf5";
    std::vector<int64_t> tokens;
    std::optional<int64_t> bos;
    if (ids_file) {
      tokens = model::read_token_ids(path);
    } else {
      if (!tokenizer) tokenizer = model::load_tokenizer(config.model_dir);
      tokens = tokenizer->encode(model::read_text_file(path), /*add_special=*/false);
      if (tokenizer->add_bos) bos = tokenizer->bos_id;
    }
    const int64_t body = config.sample_len - (bos ? 1 : 0);
    for (int64_t start = 0; start + body <= int64_t(tokens.size()); start += body) {
      if (int64_t(samples.size()) >= config.max_samples) return samples;
      std::vector<int64_t> sample;
      if (bos) sample.push_back(*bos);
      sample.insert(sample.end(), tokens.begin() + start, tokens.begin() + start + body);
      samples.push_back(std::move(sample));
      sources->push_back(path + "@" + std::to_string(start));
    }
  }
  XATTN_CHECK_INPUT(!samples.empty(), "the data files hold no sample of ", config.sample_len,
                    " tokens; pass a longer text or a smaller --sample-len");
  return samples;
}

Statistics empty_statistics_for(const ModelSignature& signature, const std::string& name,
                                const StatisticsSettings& settings) {
  Statistics s;
  s.settings = settings;
  s.model_name = name;
  s.model_signature = signature_key(signature);
  s.heads_q = signature.heads_q;
  s.heads_kv = signature.heads_kv;
  s.head_dim = signature.head_dim;
  for (int64_t l = 0; l < signature.num_layers; ++l) s.layers.push_back(l);
  return s;
}

// Mean NLL and KL(dense || sparse) over the positions both runs returned.
EndToEnd compare_runs(const std::vector<model::ForwardResult>& dense,
                      const std::vector<model::ForwardResult>& sparse, double density) {
  EndToEnd e;
  double nll_dense = 0, nll_sparse = 0, kl = 0;
  int64_t positions = 0;
  for (size_t i = 0; i < dense.size(); ++i) {
    nll_dense += dense[i].nll.to(at::kDouble).sum().item<double>();
    nll_sparse += sparse[i].nll.to(at::kDouble).sum().item<double>();
    e.tokens += dense[i].nll.numel();
    const at::Tensor log_p = at::log_softmax(dense[i].logits.to(at::kDouble), -1);
    const at::Tensor log_q = at::log_softmax(sparse[i].logits.to(at::kDouble), -1);
    kl += (log_p.exp() * (log_p - log_q)).sum().item<double>();
    positions += dense[i].logits.size(0);
  }
  e.nll_dense = nll_dense / double(std::max<int64_t>(1, e.tokens));
  e.nll_sparse = nll_sparse / double(std::max<int64_t>(1, e.tokens));
  e.kl_mean = kl / double(std::max<int64_t>(1, positions));
  e.density = density;
  return e;
}

// Thresholds [num_layers, heads_q] from a per-head choice; layers without statistics stay dense.
std::vector<float> thresholds_table(const Statistics& s, int64_t num_layers,
                                    const std::vector<double>& tau_per_head) {
  std::vector<float> table(num_layers * s.heads_q, 1.f);
  for (size_t slot = 0; slot < s.layers.size(); ++slot)
    for (int64_t h = 0; h < s.heads_q; ++h)
      table[s.layers[slot] * s.heads_q + h] = float(tau_per_head[slot * s.heads_q + h]);
  return table;
}

}  // namespace

std::string signature_key(const ModelSignature& s) {
  std::ostringstream key;
  key << s.architecture << " layers=" << s.num_layers << " heads_q=" << s.heads_q
      << " heads_kv=" << s.heads_kv << " head_dim=" << s.head_dim << " config=" << s.config_hash
      << " weights=" << s.weight_shapes_hash;
  return key.str();
}

ModelSignature parse_signature_key(const std::string& key) {
  ModelSignature s;
  std::istringstream in(key);
  in >> s.architecture;
  std::string field;
  while (in >> field) {
    const size_t eq = field.find('=');
    XATTN_CHECK_INPUT(eq != std::string::npos, "malformed model signature '", key, "'");
    const std::string name = field.substr(0, eq), value = field.substr(eq + 1);
    if (name == "config") s.config_hash = value;
    else if (name == "weights") s.weight_shapes_hash = value;
    else if (name == "layers") s.num_layers = std::stoll(value);
    else if (name == "heads_q") s.heads_q = std::stoll(value);
    else if (name == "heads_kv") s.heads_kv = std::stoll(value);
    else if (name == "head_dim") s.head_dim = std::stoll(value);
  }
  return s;
}

std::pair<int64_t, int64_t> sample_shard_range(int64_t samples, int64_t index, int64_t count) {
  const int64_t base = samples / count, extra = samples % count;
  const int64_t first = index * base + std::min(index, extra);
  return {first, first + base + (index < extra ? 1 : 0)};
}

ShardWork shard_work(int64_t samples, int64_t layers, int64_t index, int64_t count) {
  XATTN_CHECK_ARG(count >= 1 && index >= 0 && index < count && samples >= 0 && layers >= 0,
                  "shard ", index, " of ", count, " on ", samples, " samples of ", layers,
                  " layers does not exist");
  ShardWork work;
  if (samples >= count) {
    std::tie(work.first_sample, work.past_sample) = sample_shard_range(samples, index, count);
    work.past_layer = layers;
    return work;
  }
  if (samples == 0) return work;
  // Shards per sample: sample s has the shards sample_shard_range(count, s, samples).
  const int64_t base = count / samples, extra = count % samples;
  const int64_t s = index < extra * (base + 1) ? index / (base + 1)
                                               : extra + (index - extra * (base + 1)) / base;
  const auto [first_shard, past_shard] = sample_shard_range(count, s, samples);
  work.first_sample = s;
  work.past_sample = s + 1;
  std::tie(work.first_layer, work.past_layer) =
      sample_shard_range(layers, index - first_shard, past_shard - first_shard);
  return work;
}

Statistics merge_shard_statistics(const std::vector<Statistics>& shards, int64_t samples,
                                  int64_t layers) {
  const int64_t count = int64_t(shards.size());
  XATTN_CHECK_ARG(count >= 1, "no shard statistics to merge");
  std::vector<Statistics> sample_blocks;  // in sample order, every layer
  std::vector<Statistics> layer_blocks;   // of the sample block being joined
  int64_t joining = -1;                   // its first sample
  auto flush = [&]() {
    if (layer_blocks.empty()) return;
    sample_blocks.push_back(layer_blocks.size() == 1 ? std::move(layer_blocks.front())
                                                     : join_statistics_layers(layer_blocks));
    layer_blocks.clear();
  };
  for (int64_t r = 0; r < count; ++r) {
    const ShardWork work = shard_work(samples, layers, r, count);
    const Statistics& s = shards[size_t(r)];
    if (work.empty()) {
      XATTN_CHECK(s.samples.empty(), ErrorKind::kInternal, "shard ", r, " of ", count,
                  " has no work but sent statistics of ", s.samples.size(), " samples");
      continue;
    }
    std::vector<int64_t> expected_layers;
    for (int64_t l = work.first_layer; l < work.past_layer; ++l) expected_layers.push_back(l);
    XATTN_CHECK(int64_t(s.samples.size()) == work.samples() && s.layers == expected_layers,
                ErrorKind::kInternal, "shard ", r, " of ", count, " sent statistics of ",
                s.samples.size(), " samples and ", s.layers.size(), " layers; its work is ",
                work.samples(), " samples (from ", work.first_sample, ") and layers ",
                work.first_layer, " to ", work.past_layer - 1);
    if (work.first_sample != joining) flush();
    joining = work.first_sample;
    layer_blocks.push_back(s);
  }
  flush();
  Statistics merged = merge_statistics(sample_blocks);
  XATTN_CHECK(int64_t(merged.samples.size()) == samples && int64_t(merged.layers.size()) == layers,
              ErrorKind::kInternal, "the shards' statistics hold ", merged.samples.size(),
              " samples of ", merged.layers.size(), " layers, not ", samples, " of ", layers);
  return merged;
}

CalibrationResult run_calibration(const CalibrationConfig& requested, const ProgressFn& progress) {
  CalibrationConfig config = requested;  // defaults resolved below
  CalibrationResult result;
  const bool from_model = !config.model_dir.empty();
  XATTN_CHECK_ARG(from_model || !config.capture_files.empty() || !config.statistics_files.empty(),
                  "nothing to calibrate on: give --model with --data, --capture or --stats");
  XATTN_CHECK_ARG(!from_model || !config.data_files.empty(),
                  "--model needs --data FILE (text or token ids) to run on");
  XATTN_CHECK_ARG(!config.epsilon || (std::isfinite(*config.epsilon) && *config.epsilon >= 0),
                  "--epsilon must be a finite number >= 0");
  XATTN_CHECK_ARG(config.holdout_fraction >= 0 && config.holdout_fraction < 1,
                  "--holdout must be in [0, 1)");
  XATTN_CHECK_ARG(!config.stream_layers || from_model, "--stream-layers streams a model's "
                  "weights: give --model with --data (captures and statistics files hold none)");

  // 1. Statistics.
  auto start = Clock::now();
  std::vector<Statistics> parts;
  // The library's own checks, so callers other than the CLI get the same refusals: values
  // (finite, non-negative, within the model) and a model signature that names the model.
  for (const auto& path : config.statistics_files) {
    parts.push_back(read_checked_statistics(path));
    check_statistics_signature(parts.back(), path);
  }
  std::unique_ptr<model::Model> model;
  std::vector<std::vector<int64_t>> model_samples;
  ModelSignature signature;
  int64_t first_model_sample = 0;
  if (from_model) {
    model::LoadOptions load;
    load.device = at::Device(config.device);
    load.stream_layers = config.stream_layers;
    runtime::reset_peak_device_memory(load.device);
    model = std::make_unique<model::Model>(config.model_dir, load);
    signature = model::model_signature_of(config.model_dir);
    std::vector<std::string> sources;
    model_samples = cut_samples(config, &sources);
    // Sliding-window layers are measured with their window (selection, exact attention and
    // densities alike); the statistics and the profile record the windows.
    StatisticsSettings settings = config.settings;
    settings.layer_windows.clear();
    if (model::shortest_sliding_window(model->config()) > 0)
      settings.layer_windows = model->config().layer_windows;
    Statistics stats = empty_statistics_for(signature, config.model_dir, settings);
    const int64_t layers = signature.num_layers;
    XATTN_CHECK_ARG(config.batch >= 1, "--batch must be at least 1, got ", config.batch);
    // Samples of one length run together, config.batch at a time; measure_layer sees each
    // sample's own q, k, v, so the statistics are those of batch 1. Added in sample order.
    // A shard measures only its own block of samples and layers (shard_work).
    XATTN_CHECK_ARG(config.shard_count >= 1 && config.shard_index >= 0 &&
                        config.shard_index < config.shard_count,
                    "shard ", config.shard_index, " of ", config.shard_count, " does not exist");
    const ShardWork work = shard_work(int64_t(model_samples.size()), layers, config.shard_index,
                                      config.shard_count);
    const int64_t first = work.empty() ? 0 : work.first_sample;
    const int64_t past = work.empty() ? 0 : work.past_sample;
    const int64_t first_layer = work.first_layer, past_layer = work.past_layer;
    const int64_t measured_layers = work.layers();
    stats.layers.clear();
    for (int64_t l = first_layer; l < past_layer; ++l) stats.layers.push_back(l);
    // Below, groups index the shard's samples; measured[first + i] is shard sample i's, its
    // entry l - first_layer layer l's.
    const std::vector<std::vector<int64_t>> shard_samples(model_samples.begin() + first,
                                                          model_samples.begin() + past);
    std::vector<int64_t> lengths;
    for (const auto& sample : shard_samples) lengths.push_back(int64_t(sample.size()));
    std::vector<std::vector<LayerMeasurement>> measured(model_samples.size());
    const int64_t total = (past - first) * measured_layers;
    const std::vector<std::vector<size_t>> groups = model::group_by_length(lengths, config.batch);
    std::vector<int64_t> before(groups.size(), 0);  // samples in the groups before each
    for (size_t g = 1; g < groups.size(); ++g)
      before[g] = before[g - 1] + int64_t(groups[g - 1].size());
    size_t current = 0;  // the group whose q, k, v the capture sees
    // Layer-major (sweep_layers) when streaming, or up to the shard's last layer only.
    const bool sweeps = config.stream_layers || past_layer < layers;
    model::DenseBackend dense;
    model::CaptureBackend capture(dense, [&](int layer, const at::Tensor& q, const at::Tensor& k,
                                             const at::Tensor& v) {
      // The layers before the shard's only carry the hidden states to it.
      if (layer < first_layer || layer >= past_layer) return;
      const int64_t slot = layer - first_layer;
      const std::vector<size_t>& group = groups[current];
      const int64_t size = int64_t(group.size());
      if (progress) {
        const std::string which =
            size == 1 ? "sample " + std::to_string(first + group[0] + 1)
                      : "samples " + std::to_string(first + group.front() + 1) + "-" +
                            std::to_string(first + group.back() + 1);
        // Sample-major through forward passes, layer-major when sweeping.
        const int64_t step = sweeps ? slot * (past - first) + before[current]
                                   : before[current] * measured_layers + slot * size;
        progress(step, total, which + " layer " + std::to_string(layer));
      }
      for (int64_t b = 0; b < size; ++b)
        measured[size_t(first) + group[size_t(b)]][size_t(slot)] = measure_layer(
            q.narrow(0, b, 1), k.narrow(0, b, 1), v.narrow(0, b, 1), settings,
            config.settings.output_error ? model->output_projection(layer) : at::Tensor(),
            settings.window(layer));
    });
    for (const auto& group : groups)
      for (size_t i : group) measured[size_t(first) + i].resize(size_t(measured_layers));
    if (shard_samples.empty()) {
      // A shard without work (more shards than samples x layers) runs nothing.
    } else if (sweeps) {
      // Layer-major, up to the shard's last layer: neither the later layers nor the LM head
      // run (nor are their weights read when streaming). Same operations per layer and group as
      // forward_batch, so the same statistics.
      model::SweepOptions sweep_options;
      sweep_options.end_layer = past_layer;
      const model::SweepReport sweep = model->sweep_layers(
          shard_samples, groups, capture, sweep_options, [&](int, size_t g) { current = g; });
      result.statistics_hidden_bytes = sweep.hidden_bytes;
      if (config.stream_layers) {
        result.hidden_on_host = sweep.hidden_on_host;
        result.hidden_placement = sweep.placement_reason;
      }
    } else {
      for (current = 0; current < groups.size(); ++current) {
        const std::vector<size_t>& group = groups[current];
        if (group.size() == 1) {
          model->forward(shard_samples[group[0]], capture);
        } else {
          std::vector<std::vector<int64_t>> batch;
          for (size_t i : group) batch.push_back(shard_samples[i]);
          model->forward_batch(batch, capture);
        }
        const int64_t tokens = int64_t(group.size() * shard_samples[group[0]].size());
        result.statistics_hidden_bytes =
            std::max(result.statistics_hidden_bytes,
                     tokens * model->config().hidden_size * int64_t(at::elementSize(model->dtype())));
      }
    }
    for (int64_t i = first; i < past; ++i) {
      const int64_t len = int64_t(model_samples[i].size());
      stats.add_sample({len, len, sources[i]}, measured[i]);
    }
    if (progress) progress(total, total, "statistics done");
    if (config.shard_count > 1) {
      XATTN_CHECK(bool(config.gather_shards), ErrorKind::kInternal,
                  "a sharded calibration needs gather_shards");
      std::optional<std::vector<Statistics>> shards = config.gather_shards(std::move(stats));
      if (!shards) {
        result.stopped_after_statistics = true;
        return result;
      }
      stats = merge_shard_statistics(*shards, int64_t(model_samples.size()), layers);
    }
    first_model_sample = 0;
    for (const auto& part : parts) first_model_sample += int64_t(part.samples.size());
    parts.push_back(std::move(stats));
  }
  for (size_t f = 0; f < config.capture_files.size(); ++f) {
    const io::CaptureReader reader(config.capture_files[f]);
    const io::CaptureInfo& info = reader.info();
    ModelSignature capture_signature;
    capture_signature.architecture = info.model_name;
    capture_signature.num_layers = info.num_layers;
    capture_signature.heads_q = info.heads_q;
    capture_signature.heads_kv = info.heads_kv;
    capture_signature.head_dim = info.head_dim;
    StatisticsSettings settings = config.settings;
    settings.causal = info.causal;  // the capture knows how its model attends
    Statistics stats = empty_statistics_for(capture_signature, info.model_name, settings);
    stats.layers = reader.layer_indices();
    const int64_t items = info.batch(), layers = int64_t(stats.layers.size());
    std::vector<std::vector<LayerMeasurement>> measured(items, std::vector<LayerMeasurement>(layers));
    for (int64_t slot = 0; slot < layers; ++slot) {
      const io::CaptureLayer tensors = reader.read_layer(stats.layers[slot]);
      for (int64_t b = 0; b < items; ++b) {
        if (progress)
          progress(slot * items + b, layers * items,
                   "capture " + std::to_string(f + 1) + " layer " + std::to_string(stats.layers[slot]));
        const int64_t lq = info.len_q[b], lk = info.len_k[b];
        const at::Device device(config.device);
        const at::Tensor v = tensors.v.defined()
                                 ? tensors.v.slice(0, b, b + 1).slice(2, 0, lk).to(device)
                                 : at::Tensor();
        measured[b][slot] =
            measure_layer(tensors.q.slice(0, b, b + 1).slice(2, 0, lq).to(device),
                          tensors.k.slice(0, b, b + 1).slice(2, 0, lk).to(device), v, settings);
      }
    }
    for (int64_t b = 0; b < items; ++b)
      stats.add_sample({info.len_q[b], info.len_k[b],
                        config.capture_files[f] + "#" + std::to_string(b)},
                       measured[b]);
    if (!from_model && f == 0) signature = capture_signature;
    parts.push_back(std::move(stats));
  }
  if (!from_model && config.capture_files.empty()) {
    // Statistics files alone: the signature is the one they were computed for.
    signature = parse_signature_key(parts.front().model_signature);
  }
  result.statistics = merge_statistics(parts);
  const Statistics& stats = result.statistics;
  result.seconds_statistics = seconds_since(start);
  if (config.metric == ErrorMetric::kKL && config.metric_is_default && !from_model &&
      stats.layer_kl_sensitivity.empty())
    config.metric = ErrorMetric::kOutputError;  // kl needs a model run to measure sensitivity
  const bool kl_metric = config.metric == ErrorMetric::kKL;
  if (!config.epsilon) config.epsilon = kl_metric ? 0.005 : 0.05;
  if (!config.worst_case_error) config.worst_case_error = !kl_metric;
  result.metric = config.metric;
  result.worst_case_error = *config.worst_case_error;

  // 2. Fit / held-out split: every k-th sample is held out.
  const int64_t n = int64_t(stats.samples.size());
  const int64_t every = config.holdout_fraction > 0
                            ? std::max<int64_t>(2, int64_t(std::lround(1.0 / config.holdout_fraction)))
                            : 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool held_out = every > 0 && n >= 2 && (i % every) == every - 1;
    (held_out ? result.holdout_samples : result.fit_samples).push_back(i);
  }
  // Model samples (indices into model_samples) on each side; only these can run end to end.
  std::vector<int64_t> e2e_samples, fit_model_samples;
  for (int64_t i : result.holdout_samples)
    if (from_model && i >= first_model_sample) e2e_samples.push_back(i - first_model_sample);
  for (int64_t i : result.fit_samples)
    if (from_model && i >= first_model_sample) fit_model_samples.push_back(i - first_model_sample);

  // End-to-end runs: dense once per sample, sparse per thresholds table.
  auto forward_options = [&]() {
    model::ForwardOptions options;
    options.nll = true;
    options.all_logits = model->config().vocab_size <= 4096;
    if (!options.all_logits)  // large vocabularies: KL on a sample of positions
      for (int64_t p = 0; p < config.sample_len; p += 16) options.logit_positions.push_back(p);
    return options;
  };
  std::map<int64_t, model::ForwardResult> dense_cache;
  // Dense layer inputs of the sensitivity samples: a run sparse from layer l on resumes there.
  std::map<int64_t, std::vector<at::Tensor>> dense_layer_inputs;
  auto dense_runs_of = [&](const std::vector<int64_t>& samples, bool keep_layer_inputs = false) {
    std::vector<model::ForwardResult> runs;
    for (int64_t i : samples) {
      if (!dense_cache.count(i) || (keep_layer_inputs && !dense_layer_inputs.count(i))) {
        model::DenseBackend dense;
        model::ForwardOptions options = forward_options();
        if (keep_layer_inputs) options.layer_inputs = &dense_layer_inputs[i];
        dense_cache[i] = model->forward(model_samples[i], dense, options);
      }
      runs.push_back(dense_cache[i]);
    }
    return runs;
  };
  runtime::EstimateOptions estimate;
  estimate.stride = config.settings.stride;
  estimate.block_size = config.settings.block_size;
  estimate.causal = config.settings.causal;
  estimate.dense_last_query_block = config.settings.dense_last_query_block;
  // Sparse runs of `table` on `samples`: one EndToEnd per sample. With first_sparse_layer > 0
  // (layers before it dense in `table`) the run resumes from the recorded dense layer input.
  auto sparse_runs = [&](const std::vector<float>& table, const std::vector<int64_t>& samples,
                         int64_t first_sparse_layer = 0) {
    const std::vector<model::ForwardResult> dense = dense_runs_of(samples, first_sparse_layer > 0);
    std::vector<EndToEnd> per_sample;
    const bool all_dense =
        std::all_of(table.begin(), table.end(), [](float tau) { return tau >= 1.f; });
    at::Tensor thresholds = at::from_blob(const_cast<float*>(table.data()),
                                          {signature.num_layers, signature.heads_q}, at::kFloat)
                                .clone();
    model::XAttentionBackend sparse(thresholds, estimate);
    for (size_t j = 0; j < samples.size(); ++j) {
      if (all_dense) {  // every block kept: dense exactly
        per_sample.push_back(compare_runs({dense[j]}, {dense[j]}, 1.0));
        continue;
      }
      sparse.clear_density();
      model::ForwardOptions options = forward_options();
      if (first_sparse_layer > 0) {
        options.start_layer = first_sparse_layer;
        options.start_hidden = dense_layer_inputs.at(samples[j])[size_t(first_sparse_layer)];
      }
      const model::ForwardResult run = model->forward(model_samples[samples[j]], sparse, options);
      per_sample.push_back(compare_runs({dense[j]}, {run}, sparse.mean_density()));
    }
    return per_sample;
  };
  // Token-weighted mean of per-sample results.
  auto pooled = [](const std::vector<EndToEnd>& parts) {
    EndToEnd e;
    double tokens = 0;
    for (const auto& p : parts) tokens += double(p.tokens);
    for (const auto& p : parts) {
      const double w = double(p.tokens) / std::max(tokens, 1.0);
      e.nll_dense += w * p.nll_dense;
      e.nll_sparse += w * p.nll_sparse;
      e.kl_mean += w * p.kl_mean;
      e.density += w * p.density;
      e.tokens += p.tokens;
    }
    return e;
  };
  auto end_to_end = [&](const std::vector<float>& table,
                        const std::vector<int64_t>& samples) {
    const auto t0 = Clock::now();
    EndToEnd e = pooled(sparse_runs(table, samples));
    result.seconds_validation += seconds_since(t0);
    return e;
  };

  // The fitting samples that run end to end (sensitivity probe, closed loop): up to
  // sensitivity_samples of them and sensitivity_tokens tokens in all, at least one; each costs a
  // forward per probe, so long samples need fewer.
  auto budgeted_fit_samples = [&]() {
    std::vector<int64_t> chosen;
    int64_t tokens = 0;
    for (int64_t i : fit_model_samples) {
      const int64_t len = int64_t(model_samples[i].size());
      if (int64_t(chosen.size()) >= std::max<int64_t>(1, config.sensitivity_samples) ||
          (!chosen.empty() && tokens + len > config.sensitivity_tokens))
        break;
      chosen.push_back(i);
      tokens += len;
    }
    return chosen;
  };

  // 3. Layer sensitivity of the kl metric: each layer alone made sparse, measured KL against the
  // sum of its heads' projected errors; the least-squares scale through the origin.
  Statistics& mutable_stats = result.statistics;
  const bool needs_sensitivity = config.metric == ErrorMetric::kKL;
  if (needs_sensitivity && from_model) {
    XATTN_CHECK_INPUT(!fit_model_samples.empty(), "the kl metric needs fitting samples from the "
                      "model run; lower --holdout or give more --samples");
    const auto t0 = Clock::now();
    const std::vector<int64_t> probe_samples = budgeted_fit_samples();
    std::vector<int64_t> probe_taus;
    for (double tau : config.sensitivity_taus) {
      int64_t best = 0;
      for (int64_t t = 1; t < stats.num_taus(); ++t)
        if (std::abs(stats.settings.taus[t] - tau) < std::abs(stats.settings.taus[best] - tau))
          best = t;
      if (std::find(probe_taus.begin(), probe_taus.end(), best) == probe_taus.end())
        probe_taus.push_back(best);
    }
    const int64_t slots = int64_t(stats.layers.size());
    std::vector<double> sensitivity(slots, 0.0);
    const int64_t steps = slots * int64_t(probe_taus.size());
    for (int64_t slot = 0; slot < slots; ++slot) {
      double kl_times_predicted = 0, predicted_sq = 0;
      for (size_t pt = 0; pt < probe_taus.size(); ++pt) {
        if (progress)
          progress(slot * int64_t(probe_taus.size()) + int64_t(pt), steps,
                   "sensitivity of layer " + std::to_string(stats.layers[slot]));
        const int64_t t = probe_taus[pt];
        std::vector<float> table(signature.num_layers * stats.heads_q, 1.f);
        for (int64_t h = 0; h < stats.heads_q; ++h)
          table[stats.layers[slot] * stats.heads_q + h] = float(stats.settings.taus[t]);
        const std::vector<EndToEnd> measured = sparse_runs(table, probe_samples, stats.layers[slot]);
        for (size_t j = 0; j < probe_samples.size(); ++j) {
          const int64_t sample = probe_samples[j] + first_model_sample;
          double predicted = 0;
          for (int64_t h = 0; h < stats.heads_q; ++h)
            predicted += double(stats.projected_error[stats.entry(sample, slot, h, t)]);
          kl_times_predicted += measured[j].kl_mean * predicted;
          predicted_sq += predicted * predicted;
        }
      }
      sensitivity[slot] = predicted_sq > 0 ? std::max(0.0, kl_times_predicted / predicted_sq) : 0.0;
    }
    if (progress) progress(steps, steps, "sensitivity done");
    mutable_stats.layer_kl_sensitivity = sensitivity;
    mutable_stats.sensitivity_samples = int64_t(probe_samples.size());
    result.seconds_sensitivity = seconds_since(t0);
  }

  // 4. Search (and, with an end-to-end target, bisection on epsilon on the fitting samples).
  const int64_t num_heads = int64_t(stats.layers.size()) * stats.heads_q;
  double epsilon = *config.epsilon;
  if (config.metric == ErrorMetric::kKL && config.target_kl) epsilon = *config.target_kl;
  // Predicted density and error of the fitting samples; only the budget changes between searches.
  SearchProblem fit = search_problem_from(stats, result.fit_samples, config.metric, epsilon,
                                          config.per_head_cap, *config.worst_case_error);
  auto search_at = [&](double budget) {
    const auto t0 = Clock::now();
    fit.epsilon = budget;
    SearchResult r = search_thresholds(fit);
    result.seconds_search += seconds_since(t0);
    return r;
  };
  auto table_of = [&](const Assignment& a) {
    return thresholds_table(stats, signature.num_layers, a.tau);
  };
  auto meets_targets = [&](const EndToEnd& e) {
    return (!config.target_kl || e.kl_mean <= *config.target_kl) &&
           (!config.target_nll_increase ||
            e.nll_sparse - e.nll_dense <= *config.target_nll_increase);
  };

  result.search = search_at(epsilon);
  const bool closed_loop = config.target_kl || config.target_nll_increase;
  XATTN_CHECK_ARG(!closed_loop || (from_model && !fit_model_samples.empty()),
                  "--target-kl / --target-nll-increase need fitting samples of a model run "
                  "(--model and --data)");
  if (closed_loop) {
    const std::vector<int64_t> loop_samples = budgeted_fit_samples();
    EndToEnd e = end_to_end(table_of(result.search.optimal), loop_samples);
    if (!meets_targets(e)) {
      // Bisection between a budget that meets the target (0: no error) and one that does not.
      double good = 0.0, bad = epsilon;
      SearchResult good_result = search_at(0.0);
      for (int64_t step = 0; step < config.bisection_steps; ++step) {
        const double middle = 0.5 * (good + bad);
        SearchResult r = search_at(middle);
        if (meets_targets(end_to_end(table_of(r.optimal), loop_samples))) {
          good = middle;
          good_result = std::move(r);
        } else {
          bad = middle;
        }
        if (progress) progress(step + 1, config.bisection_steps, "tightening the budget");
      }
      epsilon = good;
      result.search = std::move(good_result);
    }
  }
  result.epsilon_used = epsilon;

  // 5. Held-out: the chosen profile and the frontier (uniform τ over the ladder, per-head at the
  // same predicted errors).
  if (!e2e_samples.empty()) {
    result.end_to_end = end_to_end(table_of(result.search.optimal), e2e_samples);
    Frontier& frontier = result.profile.frontier;
    frontier.holdout_tokens = result.end_to_end->tokens;
    if (config.frontier_points > 0) {
      std::vector<int64_t> steps;  // ladder steps whose predicted density is in a useful range
      std::vector<Assignment> uniform;
      for (int64_t t = 0; t < stats.num_taus(); ++t) {
        Assignment a = evaluate_assignment(fit, std::vector<int32_t>(num_heads, int32_t(t)));
        if (stats.settings.taus[t] < 1.0 && a.mean_density >= 0.02 && a.mean_density <= 0.9) {
          steps.push_back(t);
          uniform.push_back(std::move(a));
        }
      }
      // Steps nearest to evenly spaced predicted densities (low τ often crowd at one density).
      std::vector<size_t> chosen;
      if (!steps.empty()) {
        const double d_lo = uniform.front().mean_density, d_hi = uniform.back().mean_density;
        const int64_t want = std::max<int64_t>(1, config.frontier_points);
        for (int64_t c = 0; c < want; ++c) {
          const double target = want == 1 ? d_hi : d_lo + (d_hi - d_lo) * double(c) / double(want - 1);
          size_t best = 0;
          for (size_t i = 1; i < uniform.size(); ++i)
            if (std::abs(uniform[i].mean_density - target) <
                std::abs(uniform[best].mean_density - target))
              best = i;
          if (std::find(chosen.begin(), chosen.end(), best) == chosen.end()) chosen.push_back(best);
        }
      }
      const int64_t count = int64_t(chosen.size());
      const double floor_error = min_achievable_error(fit);
      for (int64_t c = 0; c < count; ++c) {
        const size_t i = chosen[c];
        const double tau = stats.settings.taus[steps[i]];
        if (progress) progress(c, count, "frontier");
        const EndToEnd u = end_to_end(
            thresholds_table(stats, signature.num_layers, std::vector<double>(num_heads, tau)),
            e2e_samples);
        frontier.uniform.push_back({tau, uniform[i].mean_density, u.density, u.kl_mean,
                                    u.nll_sparse - u.nll_dense});
        const double budget = uniform[i].error;
        if (budget < floor_error) continue;
        const SearchResult r = search_at(budget);
        const EndToEnd e = end_to_end(table_of(r.optimal), e2e_samples);
        frontier.per_head.push_back({budget, r.optimal.mean_density, e.density, e.kl_mean,
                                     e.nll_sparse - e.nll_dense});
      }
      if (progress) progress(count, count, "frontier done");
      const EndToEnd& e = *result.end_to_end;
      result.comparison = compare_with_uniform(
          {epsilon, result.search.optimal.mean_density, e.density, e.kl_mean,
           e.nll_sparse - e.nll_dense},
          frontier.uniform);
    }
  }

  // 6. Per-head held-out figures at the chosen τ.
  if (!result.holdout_samples.empty()) {
    const SearchProblem held = search_problem_from(stats, result.holdout_samples, config.metric,
                                                   epsilon, config.per_head_cap, *config.worst_case_error);
    HeadValidation v;
    const int64_t taus = stats.num_taus();
    for (int64_t h = 0; h < num_heads; ++h) {
      const int64_t cell = h * taus + result.search.optimal.choice[h];
      v.predicted_density.push_back(fit.density[cell]);
      v.measured_density.push_back(held.density[cell]);
      v.predicted_error.push_back(fit.error[cell]);
      v.measured_error.push_back(held.error[cell]);
      v.measured_mean_density += held.density[cell] / double(num_heads);
      v.measured_mean_error += held.error[cell] / double(num_heads);
    }
    result.holdout = v;
  }

  if (model) {
    result.peak_resident_layers = model->peak_resident_layers();
    result.peak_weight_bytes =
        model->fixed_weight_bytes() +
        (model->streams_layers() ? result.peak_resident_layers * model->layer_weight_bytes() : 0);
    const runtime::DeviceMemory memory = runtime::device_memory(model->device());
    if (memory.available) result.peak_device_bytes = memory.peak_allocated;
  }

  // 7. Profile.
  Profile& p = result.profile;
  p.model = signature;
  p.kernel.block_size = config.settings.block_size;
  p.kernel.stride = config.settings.stride;
  p.kernel.causal = stats.settings.causal;
  p.kernel.dense_last_query_block = stats.settings.dense_last_query_block;
  p.kernel.layer_windows = stats.settings.layer_windows;
  p.thresholds = thresholds_table(stats, signature.num_layers, result.search.optimal.tau);
  p.predicted_density.assign(p.thresholds.size(), 1.f);
  p.predicted_error.assign(p.thresholds.size(), 0.f);
  for (size_t slot = 0; slot < stats.layers.size(); ++slot)
    for (int64_t h = 0; h < stats.heads_q; ++h) {
      const int64_t head = int64_t(slot) * stats.heads_q + h;
      const int64_t cell = head * stats.num_taus() + result.search.optimal.choice[head];
      p.predicted_density[stats.layers[slot] * stats.heads_q + h] = float(fit.density[cell]);
      p.predicted_error[stats.layers[slot] * stats.heads_q + h] = float(fit.error[cell]);
    }
  p.predicted_mean_density = result.search.optimal.mean_density;
  p.predicted_mean_error = result.search.optimal.error;
  p.density_fit = fit_density_against_length(stats, result.search.optimal.choice,
                                             signature.num_layers);
  p.budget.epsilon = epsilon;
  p.budget.metric = budget_metric_name({config.metric, *config.worst_case_error});
  p.budget.per_head_cap = config.per_head_cap;
  p.budget.candidates = stats.settings.taus;
  if (result.search.uniform)
    p.uniform = UniformComparison{result.search.uniform->tau,
                                  result.search.uniform->assignment.mean_density,
                                  result.search.uniform->assignment.error};
  if (result.holdout) {
    p.validation["holdout_mean_density"] = result.holdout->measured_mean_density;
    p.validation["holdout_mean_error"] = result.holdout->measured_mean_error;
  }
  if (result.end_to_end) {
    p.validation["nll_dense"] = result.end_to_end->nll_dense;
    p.validation["nll_xattn"] = result.end_to_end->nll_sparse;
    p.validation["kl_mean"] = result.end_to_end->kl_mean;
    p.validation["e2e_density"] = result.end_to_end->density;
  }
  if (result.comparison) {
    if (result.comparison->uniform_kl_at_equal_density)
      p.validation["equal_density_uniform_kl_mean"] = *result.comparison->uniform_kl_at_equal_density;
    if (result.comparison->uniform_density_at_equal_kl)
      p.validation["equal_kl_uniform_density"] = *result.comparison->uniform_density_at_equal_kl;
  }
  std::string sources;
  for (const auto& sample : stats.samples) {
    p.data.lengths.push_back(sample.len_q);
    sources += sample.source + "\n";
  }
  p.data.sample_count = int64_t(stats.samples.size());
  p.data.holdout_samples = result.holdout_samples;
  p.data.hash = fnv1a64(sources);
  p.data.description = std::to_string(result.fit_samples.size()) + " fit + " +
                       std::to_string(result.holdout_samples.size()) + " held-out samples";
  p.tool_version = std::string("xattn ") + tool_version();
  p.created_utc = utc_now_iso8601();
  return result;
}

}  // namespace xattn::calibrate
