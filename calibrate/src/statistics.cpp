// Calibration statistics: measurement of one layer, the mergeable HDF5 file, and aggregation
// into the search problem.
#include "xattn/calibrate/statistics.h"

#include <cmath>
#include <limits>

#include "xattn/error.h"
#include "xattn/file_io.h"
#include "xattn/kernels/problem.h"
#include "xattn/ops.h"

namespace xattn::calibrate {

double allowed_blocks(int64_t len_q, int64_t len_k, int64_t block_size, bool causal) {
  const kernels::BlockGeometry geometry{len_q, len_k, block_size, len_k - len_q, causal};
  double total = 0;
  for (int64_t i = 0; i < geometry.num_q_blocks(); ++i) total += double(geometry.allowed_blocks(i));
  return total;
}

LayerMeasurement measure_layer(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const StatisticsSettings& settings) {
  XATTN_CHECK_ARG(q.dim() == 4 && q.size(0) == 1, "measure_layer takes one sample: q must be [1, "
                  "heads_q, len, head_dim], got ", q.sizes());
  const int64_t heads = q.size(1), num_taus = int64_t(settings.taus.size());
  const int64_t len_q = q.size(2), len_k = k.size(2);
  runtime::EstimateOptions options;
  options.stride = settings.stride;
  options.block_size = settings.block_size;
  options.causal = settings.causal;

  const at::Tensor scores = runtime::antidiagonal_scores(q, k, options);
  const at::Tensor mass = runtime::exact_block_mass(q, k, settings.causal, settings.block_size,
                                                    std::nullopt);
  const bool with_output = settings.output_error && v.defined();
  at::Tensor dense_out, dense_norm;
  if (with_output) {
    dense_out = std::get<0>(runtime::dense_attention(q, k, v, settings.causal, std::nullopt))
                    .to(at::kFloat);
    dense_norm = dense_out.pow(2).sum({0, 2, 3}).sqrt().clamp_min(1e-30);
  }

  LayerMeasurement m;
  m.density.assign(heads * num_taus, 0.f);
  m.recall_mean.assign(heads * num_taus, 0.f);
  m.recall_min.assign(heads * num_taus, 0.f);
  m.output_error.assign(heads * num_taus, std::numeric_limits<float>::quiet_NaN());

  at::Tensor previous_index;
  at::Tensor previous_error;  // [heads] float64 on CPU
  for (int64_t t = 0; t < num_taus; ++t) {
    const double tau = settings.taus[t];
    auto [mask, count, index] =
        runtime::select_blocks(scores, at::full({heads}, float(tau)), len_q, len_k, options);
    const at::Tensor density =
        runtime::head_density(count, len_q, len_k, settings.block_size, settings.causal);
    const at::Tensor row_recall = (mass * mask.to(at::kFloat)).sum(-1).to(at::kCPU, at::kDouble);
    const at::Tensor recall_mean = row_recall.mean(at::IntArrayRef{0, 2});
    const at::Tensor recall_min = std::get<0>(std::get<0>(row_recall.min(2)).min(0));

    at::Tensor error;
    if (with_output) {
      if (tau >= 1.0) {
        error = at::zeros({heads}, at::kDouble);  // every allowed block: dense by definition
      } else if (previous_index.defined() && at::equal(index, previous_index)) {
        error = previous_error;  // same selection as the previous candidate: same output
      } else {
        const at::Tensor out = std::get<0>(runtime::block_sparse_attention_compact(
            q, k, v, count, index, settings.causal, std::nullopt, settings.block_size));
        error = ((out.to(at::kFloat) - dense_out).pow(2).sum({0, 2, 3}).sqrt() / dense_norm)
                    .to(at::kCPU, at::kDouble);
      }
      previous_index = index;
      previous_error = error;
    }
    for (int64_t h = 0; h < heads; ++h) {
      m.density[h * num_taus + t] = float(density[h].item<double>());
      m.recall_mean[h * num_taus + t] = float(recall_mean[h].item<double>());
      m.recall_min[h * num_taus + t] = float(recall_min[h].item<double>());
      if (with_output) m.output_error[h * num_taus + t] = float(error[h].item<double>());
    }
  }
  return m;
}

void Statistics::add_sample(const SampleInfo& info, const std::vector<LayerMeasurement>& per_layer) {
  XATTN_CHECK_ARG(per_layer.size() == layers.size(), "sample has ", per_layer.size(),
                  " layers of measurements; the statistics hold ", layers.size());
  const size_t per_layer_size = size_t(heads_q * num_taus());
  for (const auto& layer : per_layer) {
    XATTN_CHECK_ARG(layer.density.size() == per_layer_size, "layer measurement has ",
                    layer.density.size(), " entries; expected heads_q x taus = ", per_layer_size);
    density.insert(density.end(), layer.density.begin(), layer.density.end());
    recall_mean.insert(recall_mean.end(), layer.recall_mean.begin(), layer.recall_mean.end());
    recall_min.insert(recall_min.end(), layer.recall_min.begin(), layer.recall_min.end());
    output_error.insert(output_error.end(), layer.output_error.begin(), layer.output_error.end());
  }
  samples.push_back(info);
}

Statistics merge_statistics(const std::vector<Statistics>& parts) {
  XATTN_CHECK_ARG(!parts.empty(), "no statistics to merge");
  Statistics merged = parts.front();
  for (size_t p = 1; p < parts.size(); ++p) {
    const Statistics& s = parts[p];
    auto differs = [&](const char* what, const auto& a, const auto& b) {
      XATTN_CHECK_INPUT(a == b, "cannot merge statistics part ", p + 1, ": its ", what,
                        " differs from part 1; merge only statistics of one model and settings");
    };
    differs("model signature", s.model_signature, merged.model_signature);
    differs("head counts", std::make_pair(s.heads_q, s.heads_kv),
            std::make_pair(merged.heads_q, merged.heads_kv));
    differs("layer list", s.layers, merged.layers);
    differs("tau ladder", s.settings.taus, merged.settings.taus);
    differs("stride", s.settings.stride, merged.settings.stride);
    differs("block size", s.settings.block_size, merged.settings.block_size);
    differs("causal flag", s.settings.causal, merged.settings.causal);
    merged.samples.insert(merged.samples.end(), s.samples.begin(), s.samples.end());
    for (auto [to, from] : {std::make_pair(&merged.density, &s.density),
                            std::make_pair(&merged.recall_mean, &s.recall_mean),
                            std::make_pair(&merged.recall_min, &s.recall_min),
                            std::make_pair(&merged.output_error, &s.output_error)})
      to->insert(to->end(), from->begin(), from->end());
  }
  return merged;
}

namespace {
constexpr const char* kStatisticsTag = "xattn-statistics";
}

void write_statistics(const std::string& path, const Statistics& s, bool overwrite) {
  io::h5::silence_library_errors();
  io::write_file_atomically(path, overwrite, [&](const std::string& temp) {
    H5::H5File file(temp, H5F_ACC_TRUNC);
    H5::Group root = file.openGroup("/");
    io::h5::set_attribute(root, "format", std::string(kStatisticsTag));
    io::h5::set_attribute(root, "format_major", int64_t(kStatisticsFormatMajor));
    io::h5::set_attribute(root, "format_minor", int64_t(kStatisticsFormatMinor));
    io::h5::set_attribute(root, "model_name", s.model_name);
    io::h5::set_attribute(root, "model_signature", s.model_signature);
    io::h5::set_attribute(root, "heads_q", s.heads_q);
    io::h5::set_attribute(root, "heads_kv", s.heads_kv);
    io::h5::set_attribute(root, "head_dim", s.head_dim);
    io::h5::set_attribute(root, "layers", s.layers);
    io::h5::set_attribute(root, "stride", s.settings.stride);
    io::h5::set_attribute(root, "block_size", s.settings.block_size);
    io::h5::set_attribute(root, "causal", int64_t(s.settings.causal));
    io::h5::set_attribute(root, "taus", s.settings.taus);
    std::vector<int64_t> len_q, len_k;
    std::string sources;
    for (const auto& sample : s.samples) {
      len_q.push_back(sample.len_q);
      len_k.push_back(sample.len_k);
      sources += sample.source + "\n";
    }
    io::h5::set_attribute(root, "sample_len_q", len_q);
    io::h5::set_attribute(root, "sample_len_k", len_k);
    io::h5::set_attribute(root, "sample_sources", sources);
    const std::vector<hsize_t> dims = {s.samples.size(), s.layers.size(), hsize_t(s.heads_q),
                                       hsize_t(s.num_taus())};
    io::h5::write_floats(root, "density", s.density, dims);
    io::h5::write_floats(root, "recall_mean", s.recall_mean, dims);
    io::h5::write_floats(root, "recall_min", s.recall_min, dims);
    io::h5::write_floats(root, "output_error", s.output_error, dims);
    file.close();
  });
}

Statistics read_statistics(const std::string& path) {
  io::h5::silence_library_errors();
  XATTN_CHECK(io::path_exists(path), ErrorKind::kIo, path, ": no such file");
  try {
    XATTN_CHECK_INPUT(H5::H5File::isHdf5(path), path, ": not an HDF5 file");
    H5::H5File file(path, H5F_ACC_RDONLY);
    H5::Group root = file.openGroup("/");
    const std::string format = io::h5::string_attribute(root, "format", path);
    XATTN_CHECK_INPUT(format == kStatisticsTag, path, ": not an xattn statistics file (format '",
                      format, "')");
    const int64_t major = io::h5::int_attribute(root, "format_major", path);
    XATTN_CHECK_INPUT(major == kStatisticsFormatMajor, path, ": statistics format version ", major,
                      " is not supported (this build reads version ", kStatisticsFormatMajor,
                      "); recompute the statistics with this build");
    Statistics s;
    s.model_name = io::h5::string_attribute(root, "model_name", path);
    s.model_signature = io::h5::string_attribute(root, "model_signature", path);
    s.heads_q = io::h5::int_attribute(root, "heads_q", path);
    s.heads_kv = io::h5::int_attribute(root, "heads_kv", path);
    s.head_dim = io::h5::int_attribute(root, "head_dim", path);
    s.layers = io::h5::int_array_attribute(root, "layers", path);
    s.settings.stride = io::h5::int_attribute(root, "stride", path);
    s.settings.block_size = io::h5::int_attribute(root, "block_size", path);
    s.settings.causal = io::h5::int_attribute(root, "causal", path) != 0;
    s.settings.taus = io::h5::double_array_attribute(root, "taus", path);
    const auto len_q = io::h5::int_array_attribute(root, "sample_len_q", path);
    const auto len_k = io::h5::int_array_attribute(root, "sample_len_k", path);
    const std::string sources = io::h5::string_attribute(root, "sample_sources", path);
    XATTN_CHECK_INPUT(len_q.size() == len_k.size(), path, ": sample length lists differ in size");
    size_t start = 0;
    for (size_t i = 0; i < len_q.size(); ++i) {
      const size_t end = sources.find('\n', start);
      s.samples.push_back({len_q[i], len_k[i],
                           end == std::string::npos ? "" : sources.substr(start, end - start)});
      start = end == std::string::npos ? sources.size() : end + 1;
    }
    XATTN_CHECK_INPUT(s.heads_q > 0 && !s.settings.taus.empty(), path,
                      ": heads_q and taus must be non-empty");
    const std::vector<hsize_t> dims = {s.samples.size(), s.layers.size(), hsize_t(s.heads_q),
                                       hsize_t(s.num_taus())};
    s.density = io::h5::read_floats(root, "density", dims, path);
    s.recall_mean = io::h5::read_floats(root, "recall_mean", dims, path);
    s.recall_min = io::h5::read_floats(root, "recall_min", dims, path);
    s.output_error = io::h5::read_floats(root, "output_error", dims, path);
    return s;
  } catch (const H5::Exception& e) {
    XATTN_CHECK_INPUT(false, path, ": damaged or truncated statistics file (", e.getDetailMsg(),
                      ")");
  }
  return {};
}

ErrorMetric parse_error_metric(const std::string& name) {
  if (name == "recall_loss" || name == "recall") return ErrorMetric::kRecallLoss;
  if (name == "output_error" || name == "output") return ErrorMetric::kOutputError;
  XATTN_CHECK_ARG(false, "unknown error metric '", name, "'; use recall_loss or output_error");
  return ErrorMetric::kRecallLoss;
}

const char* error_metric_name(ErrorMetric metric) {
  return metric == ErrorMetric::kRecallLoss ? "recall_loss" : "output_error";
}

SearchProblem search_problem_from(const Statistics& s, const std::vector<int64_t>& samples,
                                  ErrorMetric metric, double epsilon,
                                  std::optional<double> per_head_cap) {
  XATTN_CHECK_ARG(!samples.empty(), "no samples selected for the search");
  const int64_t layers = int64_t(s.layers.size()), taus = s.num_taus();
  SearchProblem problem;
  problem.taus = s.settings.taus;
  problem.num_heads = layers * s.heads_q;
  problem.heads_per_layer = s.heads_q;
  problem.epsilon = epsilon;
  problem.per_head_cap = per_head_cap;
  problem.density.assign(problem.num_heads * taus, 0.0);
  problem.error.assign(problem.num_heads * taus, 0.0);
  double total_weight = 0;
  for (int64_t sample : samples) {
    XATTN_CHECK_ARG(sample >= 0 && sample < int64_t(s.samples.size()), "sample index ", sample,
                    " out of range");
    const auto& info = s.samples[sample];
    const double weight =
        allowed_blocks(info.len_q, info.len_k, s.settings.block_size, s.settings.causal);
    total_weight += weight;
    for (int64_t l = 0; l < layers; ++l)
      for (int64_t h = 0; h < s.heads_q; ++h)
        for (int64_t t = 0; t < taus; ++t) {
          const int64_t at = s.entry(sample, l, h, t);
          const double error = metric == ErrorMetric::kRecallLoss
                                   ? std::max(0.0, 1.0 - double(s.recall_mean[at]))
                                   : double(s.output_error[at]);
          XATTN_CHECK_INPUT(!std::isnan(error), "statistics hold no ", error_metric_name(metric),
                            " for sample ", sample, " (captured without v?); use --metric "
                            "recall_loss or recompute with v");
          const int64_t cell = (l * s.heads_q + h) * taus + t;
          problem.density[cell] += weight * double(s.density[at]);
          problem.error[cell] += weight * error;
        }
  }
  for (auto& x : problem.density) x /= total_weight;
  for (auto& x : problem.error) x /= total_weight;
  return problem;
}

}  // namespace xattn::calibrate
