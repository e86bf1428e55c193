// The calibration pipeline: statistics -> search on the fitting samples -> held-out validation ->
// profile. See calibration.h.
#include "xattn/calibrate/calibration.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "xattn/calibrate/version.h"
#include "xattn/capture.h"
#include "xattn/error.h"
#include "xattn/model/attention.h"
#include "xattn/model/config.h"
#include "xattn/model/model.h"
#include "xattn/model/safetensors.h"
#include "xattn/model/tokens.h"

namespace xattn::calibrate {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A model run's samples: token windows cut from the data files.
std::vector<std::vector<int64_t>> cut_samples(const CalibrationConfig& config,
                                              const model::ModelConfig& model_config,
                                              std::vector<std::string>* sources) {
  XATTN_CHECK_ARG(config.sample_len >= 2, "--sample-len must be at least 2 tokens");
  std::vector<std::vector<int64_t>> samples;
  for (const auto& path : config.data_files) {
    std::vector<int64_t> tokens;
    if (model_config.byte_level) {
      tokens = model::byte_encode(model::read_text_file(path), false);
    } else {
      tokens = model::read_token_ids(path);
    }
    // Byte-level samples start with <bos>, as in training.
    const bool add_bos = model_config.byte_level;
    const int64_t body = config.sample_len - (add_bos ? 1 : 0);
    for (int64_t start = 0; start + body <= int64_t(tokens.size()); start += body) {
      if (int64_t(samples.size()) >= config.max_samples) return samples;
      std::vector<int64_t> sample;
      if (add_bos) sample.push_back(model::kByteBos);
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

std::string fnv1a64(const std::string& bytes) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char text[40];
  std::snprintf(text, sizeof text, "fnv1a64:%016llx", static_cast<unsigned long long>(hash));
  return text;
}

ModelSignature model_signature_of(const std::string& model_dir) {
  const model::ModelConfig config = model::load_model_config(model_dir);
  ModelSignature s;
  s.architecture = model::model_type_name(config.architecture);
  s.num_layers = config.num_layers;
  s.heads_q = config.num_heads;
  s.heads_kv = config.num_kv_heads;
  s.head_dim = config.head_dim;
  s.config_hash = fnv1a64(model::read_text_file(model_dir + "/config.json"));
  const model::Checkpoint checkpoint(model_dir);
  std::vector<std::string> names = checkpoint.names();
  std::sort(names.begin(), names.end());
  std::string shapes;
  for (const auto& name : names)
    shapes += name + model::shape_string(checkpoint.info(name).shape) + "\n";
  s.weight_shapes_hash = fnv1a64(shapes);
  return s;
}

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

CalibrationResult run_calibration(const CalibrationConfig& config, const ProgressFn& progress) {
  CalibrationResult result;
  const bool from_model = !config.model_dir.empty();
  XATTN_CHECK_ARG(from_model || !config.capture_files.empty() || !config.statistics_files.empty(),
                  "nothing to calibrate on: give --model with --data, --capture or --stats");
  XATTN_CHECK_ARG(!from_model || !config.data_files.empty(),
                  "--model needs --data FILE (text or token ids) to run on");
  XATTN_CHECK_ARG(config.epsilon >= 0, "--epsilon must be >= 0");
  XATTN_CHECK_ARG(config.holdout_fraction >= 0 && config.holdout_fraction < 1,
                  "--holdout must be in [0, 1)");

  // 1. Statistics.
  auto start = Clock::now();
  std::vector<Statistics> parts;
  for (const auto& path : config.statistics_files) parts.push_back(read_statistics(path));
  std::unique_ptr<model::Model> model;
  std::vector<std::vector<int64_t>> model_samples;
  ModelSignature signature;
  int64_t first_model_sample = 0;
  if (from_model) {
    model::LoadOptions load;
    load.device = at::Device(config.device);
    model = std::make_unique<model::Model>(config.model_dir, load);
    signature = model_signature_of(config.model_dir);
    std::vector<std::string> sources;
    model_samples = cut_samples(config, model->config(), &sources);
    Statistics stats = empty_statistics_for(signature, config.model_dir, config.settings);
    const int64_t layers = signature.num_layers;
    const int64_t total = int64_t(model_samples.size()) * layers;
    model::DenseBackend dense;
    for (size_t i = 0; i < model_samples.size(); ++i) {
      std::vector<LayerMeasurement> measured(layers);
      model::CaptureBackend capture(dense, [&](int layer, const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v) {
        if (progress)
          progress(int64_t(i) * layers + layer, total,
                   "sample " + std::to_string(i + 1) + " layer " + std::to_string(layer));
        measured[layer] = measure_layer(q, k, v, config.settings);
      });
      model->forward(model_samples[i], capture);
      const int64_t len = int64_t(model_samples[i].size());
      stats.add_sample({len, len, sources[i]}, measured);
    }
    if (progress) progress(total, total, "statistics done");
    first_model_sample = 0;
    for (const auto& part : parts) first_model_sample += int64_t(part.samples.size());
    parts.push_back(std::move(stats));
  }
  for (size_t f = 0; f < config.capture_files.size(); ++f) {
    const runtime::CaptureReader reader(config.capture_files[f]);
    const runtime::CaptureInfo& info = reader.info();
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
      const runtime::CaptureLayer tensors = reader.read_layer(stats.layers[slot]);
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

  // 2. Fit / held-out split: every k-th sample is held out.
  const int64_t n = int64_t(stats.samples.size());
  const int64_t every = config.holdout_fraction > 0
                            ? std::max<int64_t>(2, int64_t(std::lround(1.0 / config.holdout_fraction)))
                            : 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool held_out = every > 0 && n >= 2 && (i % every) == every - 1;
    (held_out ? result.holdout_samples : result.fit_samples).push_back(i);
  }

  // 3. Search (and, with an end-to-end target, bisection on epsilon).
  const int64_t num_heads = int64_t(stats.layers.size()) * stats.heads_q;
  // Predicted density and error of the fitting samples; only the budget changes between searches.
  SearchProblem fit = search_problem_from(stats, result.fit_samples, config.metric, config.epsilon,
                                          config.per_head_cap, config.worst_case_error);
  auto search_at = [&](double epsilon) {
    const auto t0 = Clock::now();
    fit.epsilon = epsilon;
    SearchResult r = search_thresholds(fit);
    result.seconds_search += seconds_since(t0);
    return r;
  };

  // End-to-end on held-out model samples: dense runs once, sparse per candidate table.
  std::vector<int64_t> e2e_samples;
  for (int64_t i : result.holdout_samples)
    if (from_model && i >= first_model_sample) e2e_samples.push_back(i - first_model_sample);
  std::vector<model::ForwardResult> dense_runs;
  auto forward_options = [&]() {
    model::ForwardOptions options;
    options.nll = true;
    options.all_logits = model->config().vocab_size <= 4096;
    if (!options.all_logits)  // large vocabularies: KL on a sample of positions
      for (int64_t p = 0; p < config.sample_len; p += 16) options.logit_positions.push_back(p);
    return options;
  };
  auto end_to_end = [&](const std::vector<float>& table) {
    const auto t0 = Clock::now();
    if (dense_runs.empty()) {
      model::DenseBackend dense;
      for (int64_t i : e2e_samples)
        dense_runs.push_back(model->forward(model_samples[i], dense, forward_options()));
    }
    if (std::all_of(table.begin(), table.end(), [](float tau) { return tau >= 1.f; }))
      return compare_runs(dense_runs, dense_runs, 1.0);  // every block kept: dense exactly
    at::Tensor thresholds = at::from_blob(const_cast<float*>(table.data()),
                                          {signature.num_layers, signature.heads_q}, at::kFloat)
                                .clone();
    runtime::EstimateOptions options;
    options.stride = config.settings.stride;
    options.block_size = config.settings.block_size;
    options.causal = config.settings.causal;
    options.dense_last_query_block = config.settings.dense_last_query_block;
    model::XAttentionBackend sparse(thresholds, options);
    std::vector<model::ForwardResult> runs;
    double density = 0;
    for (int64_t i : e2e_samples) {
      runs.push_back(model->forward(model_samples[i], sparse, forward_options()));
      density += sparse.mean_density() / double(e2e_samples.size());
    }
    result.seconds_validation += seconds_since(t0);
    return compare_runs(dense_runs, runs, density);
  };
  auto meets_targets = [&](const EndToEnd& e) {
    return (!config.target_kl || e.kl_mean <= *config.target_kl) &&
           (!config.target_nll_increase ||
            e.nll_sparse - e.nll_dense <= *config.target_nll_increase);
  };

  double epsilon = config.epsilon;
  result.search = search_at(epsilon);
  const bool closed_loop = config.target_kl || config.target_nll_increase;
  XATTN_CHECK_ARG(!closed_loop || !e2e_samples.empty(),
                  "--target-kl / --target-nll-increase need held-out samples of a model run "
                  "(--model, --data, and --holdout > 0 with at least 2 samples)");
  if (!e2e_samples.empty()) {
    auto table_of = [&](const SearchResult& r) { return thresholds_table(stats, signature.num_layers, r.optimal.tau); };
    EndToEnd e = end_to_end(table_of(result.search));
    if (closed_loop && !meets_targets(e)) {
      // Bisection between a budget that meets the target (0: dense) and one that does not.
      double good = 0.0, bad = epsilon;
      SearchResult good_result = search_at(0.0);
      EndToEnd good_e = end_to_end(table_of(good_result));
      for (int64_t step = 0; step < config.bisection_steps; ++step) {
        const double middle = 0.5 * (good + bad);
        SearchResult r = search_at(middle);
        EndToEnd m = end_to_end(table_of(r));
        if (meets_targets(m)) {
          good = middle;
          good_result = std::move(r);
          good_e = m;
        } else {
          bad = middle;
        }
        if (progress) progress(step + 1, config.bisection_steps, "tightening the budget");
      }
      epsilon = good;
      result.search = std::move(good_result);
      e = good_e;
    }
    result.end_to_end = e;
    {
      // Uniform τ at (nearly) the same predicted density as the per-head thresholds.
      double best_gap = 1e300;
      for (int64_t t = 0; t < stats.num_taus(); ++t) {
        const Assignment uniform = evaluate_assignment(fit, std::vector<int32_t>(num_heads, int32_t(t)));
        const double gap = std::abs(uniform.mean_density - result.search.optimal.mean_density);
        if (gap < best_gap) {
          best_gap = gap;
          result.equal_density_tau = stats.settings.taus[t];
          result.equal_density_predicted_error = uniform.error;
        }
      }
      std::vector<double> uniform_tau(num_heads, *result.equal_density_tau);
      result.end_to_end_equal_density =
          end_to_end(thresholds_table(stats, signature.num_layers, uniform_tau));
    }
    if (result.search.uniform) {
      std::vector<double> uniform_tau(num_heads, result.search.uniform->tau);
      result.end_to_end_uniform = end_to_end(thresholds_table(stats, signature.num_layers, uniform_tau));
    }
  }
  result.epsilon_used = epsilon;

  // 4. Per-head held-out figures at the chosen τ.
  if (!result.holdout_samples.empty()) {
    const SearchProblem held = search_problem_from(stats, result.holdout_samples, config.metric,
                                                   epsilon, config.per_head_cap, config.worst_case_error);
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

  // 5. Profile.
  Profile& p = result.profile;
  p.model = signature;
  p.kernel.block_size = config.settings.block_size;
  p.kernel.stride = config.settings.stride;
  p.kernel.causal = stats.settings.causal;
  p.kernel.dense_last_query_block = stats.settings.dense_last_query_block;
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
  p.budget.epsilon = epsilon;
  p.budget.metric = budget_metric_name({config.metric, config.worst_case_error});
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
  if (result.end_to_end_equal_density) {
    p.validation["equal_density_uniform_tau"] = *result.equal_density_tau;
    p.validation["equal_density_uniform_kl_mean"] = result.end_to_end_equal_density->kl_mean;
    p.validation["equal_density_uniform_nll_xattn"] = result.end_to_end_equal_density->nll_sparse;
    p.validation["equal_density_uniform_e2e_density"] = result.end_to_end_equal_density->density;
  }
  if (result.end_to_end_uniform) {
    p.validation["uniform_nll_xattn"] = result.end_to_end_uniform->nll_sparse;
    p.validation["uniform_kl_mean"] = result.end_to_end_uniform->kl_mean;
    p.validation["uniform_e2e_density"] = result.end_to_end_uniform->density;
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
