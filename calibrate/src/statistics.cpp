// Calibration statistics: measurement of one layer, the mergeable HDF5 file, and aggregation
// into the search problem.
#include "xattn/calibrate/statistics.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <tuple>

#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/kernels/problem.h"
#include "xattn/model/linear.h"
#include "xattn/ops.h"

namespace xattn::calibrate {

double allowed_blocks(int64_t len_q, int64_t len_k, int64_t block_size, bool causal) {
  const kernels::BlockGeometry geometry{len_q, len_k, block_size, len_k - len_q, causal};
  double total = 0;
  for (int64_t i = 0; i < geometry.num_q_blocks(); ++i) total += double(geometry.allowed_blocks(i));
  return total;
}

namespace {

// Rows of queries processed at once by measure_layer: bounds the logits ([rows, len_k]) and the
// block partials ([num_key_blocks, rows, head_dim]) of one head. On the CPU 16 MiB keeps them in
// cache; on a GPU 1 GiB keeps the matrix products large.
int64_t query_rows_per_chunk(int64_t len_k, int64_t head_dim, int64_t block_size, bool on_gpu) {
  const int64_t budget_floats = on_gpu ? int64_t(256) << 20 : int64_t(4) << 20;
  const int64_t per_row = len_k + (len_k / block_size + 1) * head_dim;
  return std::max<int64_t>(block_size, budget_floats / per_row / block_size * block_size);
}

}  // namespace

// One pass of exact attention per head yields everything calibration needs. For each query row
// and key block j, with the row's dense maximum m: l_j = sum_k exp(s_k - m) and
// N_j = sum_k exp(s_k - m) v_k over the block's visible keys. Then the exact block mass is
// l_j / sum l, the dense output sum N / sum l, and the output of ANY block selection
// sum_kept N_j / sum_kept l_j — so every candidate τ costs O(rows * blocks * d), not an attention.
LayerMeasurement measure_layer(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const StatisticsSettings& settings,
                               const at::Tensor& output_projection, int64_t window) {
  XATTN_CHECK_ARG(q.dim() == 4 && q.size(0) == 1, "measure_layer takes one sample: q must be [1, "
                  "heads_q, len, head_dim], got ", q.sizes());
  XATTN_CHECK_ARG(k.dim() == 4 && k.size(0) == 1 && q.size(1) % k.size(1) == 0,
                  "measure_layer: k must be [1, heads_kv, len_k, head_dim] with heads_q a "
                  "multiple of heads_kv, got ", k.sizes());
  const int64_t heads = q.size(1), num_taus = int64_t(settings.taus.size());
  const int64_t len_q = q.size(2), len_k = k.size(2), head_dim = q.size(3);
  const int64_t bs = settings.block_size, group = heads / k.size(1);
  const int64_t nqb = (len_q + bs - 1) / bs, nkb = (len_k + bs - 1) / bs;
  runtime::EstimateOptions options;
  options.stride = settings.stride;
  options.block_size = bs;
  options.causal = settings.causal;
  options.dense_last_query_block = settings.dense_last_query_block;
  XATTN_CHECK_ARG(window >= 0 && (window == 0 || settings.causal), "measure_layer: window ",
                  window, " must be >= 0, and 0 unless causal");
  if (window >= len_k) window = 0;  // every key is in reach
  options.window = window;

  // Selections of every candidate: [taus, heads, nQB, nKB] as float 0/1, and their densities.
  const at::Tensor scores = runtime::antidiagonal_scores(q, k, options);
  std::vector<at::Tensor> masks;
  LayerMeasurement m;
  m.density.assign(heads * num_taus, 0.f);
  m.recall_mean.assign(heads * num_taus, 0.f);
  m.recall_min.assign(heads * num_taus, 0.f);
  m.output_error.assign(heads * num_taus, std::numeric_limits<float>::quiet_NaN());
  m.projected_error.assign(heads * num_taus, std::numeric_limits<float>::quiet_NaN());
  for (int64_t t = 0; t < num_taus; ++t) {
    auto [mask, count, index] = runtime::select_blocks(
        scores, at::full({heads}, float(settings.taus[t])), len_q, len_k, options);
    masks.push_back(mask[0].to(at::kFloat));
    const at::Tensor density =
        runtime::head_density(count, len_q, len_k, bs, settings.causal, window);
    for (int64_t h = 0; h < heads; ++h) m.density[h * num_taus + t] = float(density[h].item<double>());
  }
  // The first half of the sample as a prefill of its own (causal only: its rows see the same
  // keys as in the whole sample, but its last query block is its own).
  if (settings.causal && len_q == len_k && nqb >= 4) {
    m.prefix_len = (nqb / 2) * bs;
    const at::Tensor q_half = q.narrow(2, 0, m.prefix_len), k_half = k.narrow(2, 0, m.prefix_len);
    runtime::EstimateOptions half_options = options;
    if (window >= m.prefix_len) half_options.window = 0;
    const at::Tensor half_scores = runtime::antidiagonal_scores(q_half, k_half, half_options);
    m.prefix_density.assign(heads * num_taus, 0.f);
    for (int64_t t = 0; t < num_taus; ++t) {
      const auto selected =
          runtime::select_blocks(half_scores, at::full({heads}, float(settings.taus[t])),
                                 m.prefix_len, m.prefix_len, half_options);
      const at::Tensor density =
          runtime::head_density(std::get<1>(selected), m.prefix_len, m.prefix_len, bs,
                                settings.causal, half_options.window);
      for (int64_t h = 0; h < heads; ++h)
        m.prefix_density[h * num_taus + t] = float(density[h].item<double>());
    }
  }
  const at::Tensor all_masks = at::stack(masks);  // [taus, heads, nQB, nKB]
  // Selections of an ascending ladder are nested: each is a prefix of one order per row (forced
  // blocks, then descending score, ties to the lower index), longer for a larger τ. Then the kept
  // sums of every candidate are prefix sums along that order, read at each candidate's count,
  // instead of one masked product per candidate. Checked, not assumed.
  const bool nested =
      num_taus < 2 ||
      (all_masks.slice(0, 0, num_taus - 1) <= all_masks.slice(0, 1, num_taus)).all().item<bool>();
  at::Tensor block_order, kept_count;  // [heads, nQB, nKB] long; [taus, heads, nQB] long
  if (nested) {
    // Blocks that join earlier (kept at more candidates) come first; never-kept blocks last, in
    // index order, so blocks past a causal row's last visible block never precede visible ones.
    const at::Tensor joins_at = (double(num_taus) - all_masks.sum(0)).to(at::kLong);
    block_order = std::get<1>(joins_at.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/false));
    kept_count = all_masks.sum(-1).to(at::kLong);
  }

  const bool with_output = settings.output_error && v.defined();
  const bool with_projection = with_output && output_projection.defined();
  if (with_projection)
    XATTN_CHECK_ARG(output_projection.dim() == 2 && output_projection.size(1) == heads * head_dim,
                    "measure_layer: the output projection must be [hidden, heads_q * head_dim] = "
                    "[*, ", heads * head_dim, "], got ", output_projection.sizes());
  // Output columns per head: d for the plain output, plus d for the projected one.
  const int64_t out_dim = with_projection ? 2 * head_dim : head_dim;
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const int64_t chunk = settings.query_chunk > 0 ? settings.query_chunk
                                                 : query_rows_per_chunk(len_k, head_dim, bs, q.is_cuda());
  const int64_t padded_k = nkb * bs;  // keys padded to whole blocks
  const at::TensorOptions float_options = q.options().dtype(at::kFloat);
  const at::Tensor key_position = at::arange(len_k, float_options.dtype(at::kLong));
  // float64 sums on the CPU (the reference); float32 on a GPU, where float64 is slow and large.
  const at::ScalarType accumulate = q.is_cuda() ? at::kFloat : at::kDouble;

  for (int64_t h = 0; h < heads; ++h) {
    const at::Tensor kh = k[0][h / group].to(at::kFloat);  // [len_k, d]
    at::Tensor vh_blocks, vh_t_blocks;  // [nKB, bs, d] and its transpose [nKB, d, bs]
    if (with_output) {
      at::Tensor vh = v[0][h / group].to(at::kFloat);  // [len_k, d]
      if (with_projection) {
        // |W_h x|^2 = |x L|^2 with W_h^T W_h = L L^T (Cholesky; d x d). The head's output is linear
        // in its values, so values multiplied by L give the projected output directly.
        const at::Tensor w = output_projection.slice(1, h * head_dim, (h + 1) * head_dim)
                                 .to(q.device(), at::kDouble);
        at::Tensor gram = at::matmul(w.t(), w);
        gram = gram + at::eye(head_dim, gram.options()) * (1e-9 * gram.diagonal().mean().item<double>() + 1e-30);
        const at::Tensor factor = at::linalg_cholesky(gram).to(at::kFloat);
        vh = at::cat({vh, at::matmul(vh, factor)}, 1);  // [len_k, 2d]
      }
      vh_blocks = at::constant_pad_nd(vh, {0, 0, 0, padded_k - len_k}).reshape({nkb, bs, out_dim});
      vh_t_blocks = vh_blocks.transpose(1, 2).contiguous();
    }
    // Per candidate: recall per query block, squared output error; dense output norm.
    at::Tensor block_recall = at::zeros({num_taus, nqb}, float_options.dtype(at::kDouble));
    at::Tensor error_sq = at::zeros({num_taus}, float_options.dtype(at::kDouble));
    at::Tensor projected_sq = at::zeros({num_taus}, float_options.dtype(at::kDouble));
    double dense_sq = 0;
    for (int64_t r0 = 0; r0 < len_q; r0 += chunk) {
      const int64_t r1 = std::min(len_q, r0 + chunk), rows = r1 - r0;
      // Causal rows never see keys past their last query: skip those key blocks entirely.
      const int64_t keys = settings.causal ? std::min(len_k, r1 + (len_k - len_q)) : len_k;
      const int64_t blocks = (keys + bs - 1) / bs, padded = blocks * bs;
      at::Tensor logits =
          model::fast::linear(q[0][h].slice(0, r0, r1).to(at::kFloat), kh.slice(0, 0, keys)) * scale;
      if (settings.causal) {
        const at::Tensor query_position = at::arange(r0, r1, key_position.options()) + (len_k - len_q);
        const at::Tensor key = key_position.slice(0, 0, keys).unsqueeze(0);
        at::Tensor hidden = key > query_position.unsqueeze(1);
        // Sliding window: query p sees keys p - window + 1 .. p.
        if (window > 0) hidden = hidden.logical_or(key <= query_position.unsqueeze(1) - window);
        logits.masked_fill_(hidden, -std::numeric_limits<float>::infinity());
      }
      const at::Tensor p = at::constant_pad_nd(
          (logits - std::get<0>(logits.max(-1, true))).exp_(), {0, padded - keys});
      const at::Tensor p_blocks = p.reshape({rows, blocks, bs});
      const at::Tensor l = p_blocks.sum(-1).to(accumulate);  // [rows, blocks]
      const at::Tensor total = l.sum(-1, true);
      // Row -> query block; the kept blocks of each row under every candidate.
      const at::Tensor row_block = at::div(at::arange(r0, r1, key_position.options()), bs, "floor");
      const at::Tensor row_masks = all_masks.select(1, h)
                                       .index_select(1, row_block)
                                       .slice(2, 0, blocks)
                                       .to(accumulate);  // [taus, rows, blocks]
      const at::Tensor row_recall = (row_masks * (l / total)).sum(-1);  // [taus, rows]
      block_recall.index_add_(1, row_block, row_recall.to(at::kDouble));
      if (with_output) {
        // N [blocks, rows, d]: per key block partial numerators.
        at::Tensor numerators;
        if (q.is_cuda()) {
          numerators = at::bmm(p_blocks.transpose(0, 1), vh_blocks.slice(0, 0, blocks)).to(accumulate);
        } else {  // one small product per key block through the fast CPU path
          numerators = at::empty({blocks, rows, out_dim}, float_options.dtype(accumulate));
          for (int64_t j = 0; j < blocks; ++j)
            numerators[j].copy_(model::fast::linear(p_blocks.select(1, j), vh_t_blocks[j]));
        }
        const at::Tensor dense_out = numerators.sum(0) / total;  // [rows, out_dim]
        dense_sq += dense_out.slice(1, 0, head_dim).pow(2).sum().to(at::kDouble).item<double>();
        // sum_kept N_j and sum_kept l_j for every candidate: [taus, rows, out_dim], [taus, rows, 1].
        at::Tensor kept_numerator, kept_total;
        if (nested) {
          const at::Tensor order = block_order[h].index_select(0, row_block).slice(1, 0, blocks);
          const at::Tensor sorted_numerators =
              numerators.permute({1, 0, 2})
                  .gather(1, order.unsqueeze(-1).expand({rows, blocks, out_dim}))
                  .cumsum(1);  // [rows, blocks, out_dim]
          const at::Tensor sorted_l = l.gather(1, order).cumsum(1);  // [rows, blocks]
          const at::Tensor count = kept_count.select(1, h).index_select(1, row_block).t();  // [rows, taus]
          const at::Tensor last = (count - 1).clamp_min(0);
          const at::Tensor any = (count > 0).to(accumulate);
          kept_numerator =
              (sorted_numerators.gather(1, last.unsqueeze(-1).expand({rows, num_taus, out_dim})) *
               any.unsqueeze(-1))
                  .permute({1, 0, 2});
          kept_total = (sorted_l.gather(1, last) * any).t().unsqueeze(-1).clamp_min(1e-30);
        } else {
          kept_numerator = at::einsum("trj,jrd->trd", {row_masks, numerators});
          kept_total = (row_masks * l).sum(-1, true).clamp_min(1e-30);
        }
        const at::Tensor delta_sq = (kept_numerator / kept_total - dense_out).pow(2);
        error_sq += delta_sq.slice(2, 0, head_dim).sum({1, 2}).to(at::kDouble);
        if (with_projection)
          projected_sq += delta_sq.slice(2, head_dim, out_dim).sum({1, 2}).to(at::kDouble);
      }
    }
    // Mean recall per query block (rows of a block averaged), then over blocks.
    std::vector<double> rows_in_block(nqb);
    for (int64_t i = 0; i < nqb; ++i) rows_in_block[i] = double(std::min(bs, len_q - i * bs));
    const at::Tensor per_block = block_recall.cpu() /
        at::tensor(rows_in_block, at::kDouble).unsqueeze(0);
    const at::Tensor error = (error_sq.cpu() / std::max(dense_sq, 1e-300)).sqrt();
    const at::Tensor projected = projected_sq.cpu() / double(std::max<int64_t>(1, len_q));
    for (int64_t t = 0; t < num_taus; ++t) {
      m.recall_mean[h * num_taus + t] = float(per_block[t].mean().item<double>());
      m.recall_min[h * num_taus + t] = float(per_block[t].min().item<double>());
      if (with_output) m.output_error[h * num_taus + t] = float(error[t].item<double>());
      if (with_projection)
        m.projected_error[h * num_taus + t] = float(projected[t].item<double>());
    }
  }
  return m;
}

void Statistics::add_sample(const SampleInfo& info, const std::vector<LayerMeasurement>& per_layer) {
  XATTN_CHECK_ARG(per_layer.size() == layers.size(), "sample has ", per_layer.size(),
                  " layers of measurements; the statistics hold ", layers.size());
  const size_t per_layer_size = size_t(heads_q * num_taus());
  SampleInfo stored = info;  // the prefix the measurements cover (every layer the same)
  if (stored.prefix_len == 0 && !per_layer.empty())
    stored.prefix_len = per_layer.front().prefix_len;
  for (const auto& layer : per_layer) {
    XATTN_CHECK_ARG(layer.density.size() == per_layer_size, "layer measurement has ",
                    layer.density.size(), " entries; expected heads_q x taus = ", per_layer_size);
    density.insert(density.end(), layer.density.begin(), layer.density.end());
    recall_mean.insert(recall_mean.end(), layer.recall_mean.begin(), layer.recall_mean.end());
    recall_min.insert(recall_min.end(), layer.recall_min.begin(), layer.recall_min.end());
    output_error.insert(output_error.end(), layer.output_error.begin(), layer.output_error.end());
    if (layer.projected_error.size() == per_layer_size)
      projected_error.insert(projected_error.end(), layer.projected_error.begin(),
                             layer.projected_error.end());
    else
      projected_error.insert(projected_error.end(), per_layer_size,
                             std::numeric_limits<float>::quiet_NaN());
    if (stored.prefix_len > 0 && layer.prefix_density.size() == per_layer_size)
      prefix_density.insert(prefix_density.end(), layer.prefix_density.begin(),
                            layer.prefix_density.end());
    else
      prefix_density.insert(prefix_density.end(), per_layer_size,
                            std::numeric_limits<float>::quiet_NaN());
  }
  samples.push_back(stored);
}

namespace {

// What two statistics parts must share to be merged or joined: the model and every measurement
// setting. `differs(what, a, b)` refuses the part when a != b.
template <typename Differs>
void check_same_measurement(const Statistics& s, const Statistics& ref, const Differs& differs) {
  differs("model signature", s.model_signature, ref.model_signature);
  differs("head counts", std::make_pair(s.heads_q, s.heads_kv),
          std::make_pair(ref.heads_q, ref.heads_kv));
  differs("tau ladder", s.settings.taus, ref.settings.taus);
  differs("stride", s.settings.stride, ref.settings.stride);
  differs("block size", s.settings.block_size, ref.settings.block_size);
  differs("causal flag", s.settings.causal, ref.settings.causal);
  differs("last-query-block rule", s.settings.dense_last_query_block,
          ref.settings.dense_last_query_block);
  differs("sliding windows", s.settings.layer_windows, ref.settings.layer_windows);
}

}  // namespace

Statistics merge_statistics(const std::vector<Statistics>& parts) {
  XATTN_CHECK_ARG(!parts.empty(), "no statistics to merge");
  Statistics merged = parts.front();
  for (size_t p = 1; p < parts.size(); ++p) {
    const Statistics& s = parts[p];
    auto differs = [&](const char* what, const auto& a, const auto& b) {
      XATTN_CHECK_INPUT(a == b, "cannot merge statistics part ", p + 1, ": its ", what,
                        " differs from part 1; merge only statistics of one model and settings");
    };
    check_same_measurement(s, merged, differs);
    differs("layer list", s.layers, merged.layers);
    merged.samples.insert(merged.samples.end(), s.samples.begin(), s.samples.end());
    for (auto [to, from] : {std::make_pair(&merged.density, &s.density),
                            std::make_pair(&merged.recall_mean, &s.recall_mean),
                            std::make_pair(&merged.recall_min, &s.recall_min),
                            std::make_pair(&merged.output_error, &s.output_error),
                            std::make_pair(&merged.projected_error, &s.projected_error)})
      to->insert(to->end(), from->begin(), from->end());
    // Prefix densities (1.3): NaN for a part without them, so the arrays stay aligned.
    const size_t before = merged.density.size() - s.density.size();
    if (merged.prefix_density.size() != before)
      merged.prefix_density.assign(before, std::numeric_limits<float>::quiet_NaN());
    if (s.prefix_density.size() == s.density.size())
      merged.prefix_density.insert(merged.prefix_density.end(), s.prefix_density.begin(),
                                   s.prefix_density.end());
    else
      merged.prefix_density.insert(merged.prefix_density.end(), s.density.size(),
                                   std::numeric_limits<float>::quiet_NaN());
    // Layer sensitivities: the sample-weighted mean of the parts that measured them.
    if (!s.layer_kl_sensitivity.empty()) {
      if (merged.layer_kl_sensitivity.empty()) {
        merged.layer_kl_sensitivity = s.layer_kl_sensitivity;
        merged.sensitivity_samples = s.sensitivity_samples;
      } else {
        const double a = double(merged.sensitivity_samples), b = double(s.sensitivity_samples);
        for (size_t l = 0; l < merged.layer_kl_sensitivity.size(); ++l)
          merged.layer_kl_sensitivity[l] =
              (a * merged.layer_kl_sensitivity[l] + b * s.layer_kl_sensitivity[l]) / std::max(a + b, 1.0);
        merged.sensitivity_samples += s.sensitivity_samples;
      }
    }
  }
  return merged;
}

Statistics join_statistics_layers(const std::vector<Statistics>& parts) {
  XATTN_CHECK_ARG(!parts.empty(), "no statistics to join");
  const Statistics& first = parts.front();
  Statistics joined = first;
  joined.layers.clear();
  for (auto* array : {&joined.density, &joined.recall_mean, &joined.recall_min,
                      &joined.output_error, &joined.projected_error, &joined.prefix_density})
    array->clear();
  joined.layer_kl_sensitivity.clear();
  const size_t per_layer = size_t(first.heads_q * first.num_taus());
  size_t with_sensitivity = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    const Statistics& s = parts[p];
    auto differs = [&](const char* what, const auto& a, const auto& b) {
      XATTN_CHECK_INPUT(a == b, "cannot join the layers of statistics part ", p + 1, ": its ",
                        what, " differs from part 1; join only blocks of layers measured on the "
                        "same samples of one model with one setting");
    };
    check_same_measurement(s, first, differs);
    differs("sample count", s.samples.size(), first.samples.size());
    for (size_t i = 0; i < s.samples.size(); ++i) {
      const SampleInfo &a = s.samples[i], &b = first.samples[i];
      differs("samples", std::make_tuple(a.source, a.len_q, a.len_k, a.prefix_len),
              std::make_tuple(b.source, b.len_q, b.len_k, b.prefix_len));
    }
    for (int64_t layer : s.layers)
      XATTN_CHECK_INPUT(joined.layers.empty() || layer > joined.layers.back(),
                        "cannot join the layers of statistics part ", p + 1, ": its layer ", layer,
                        " does not come after the layers of the parts before it");
    joined.layers.insert(joined.layers.end(), s.layers.begin(), s.layers.end());
    const size_t expected = s.samples.size() * s.layers.size() * per_layer;
    for (const auto* array : {&s.density, &s.recall_mean, &s.recall_min, &s.output_error,
                              &s.projected_error})
      XATTN_CHECK_INPUT(array->size() == expected, "statistics part ", p + 1, " holds ",
                        array->size(), " values per array; its samples, layers, heads and taus "
                        "make ", expected);
    XATTN_CHECK_INPUT(s.prefix_density.empty() || s.prefix_density.size() == expected,
                      "statistics part ", p + 1, " holds ", s.prefix_density.size(),
                      " prefix densities; expected ", expected);
    if (!s.layer_kl_sensitivity.empty()) {
      differs("layer sensitivity sample count", s.sensitivity_samples,
              parts[0].sensitivity_samples);
      ++with_sensitivity;
    }
  }
  XATTN_CHECK_INPUT(with_sensitivity == 0 || with_sensitivity == parts.size(),
                    "cannot join the layers of statistics of which only some hold layer "
                    "sensitivities");
  // Sample-major: each sample's layers, part after part.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (size_t i = 0; i < first.samples.size(); ++i) {
    for (const Statistics& s : parts) {
      const size_t block = s.layers.size() * per_layer, at = i * block;
      auto copy = [&](std::vector<float>* to, const std::vector<float>& from) {
        to->insert(to->end(), from.begin() + ptrdiff_t(at), from.begin() + ptrdiff_t(at + block));
      };
      copy(&joined.density, s.density);
      copy(&joined.recall_mean, s.recall_mean);
      copy(&joined.recall_min, s.recall_min);
      copy(&joined.output_error, s.output_error);
      copy(&joined.projected_error, s.projected_error);
      if (s.prefix_density.empty())
        joined.prefix_density.insert(joined.prefix_density.end(), block, nan);
      else
        copy(&joined.prefix_density, s.prefix_density);
    }
  }
  if (with_sensitivity > 0)
    for (const Statistics& s : parts)
      joined.layer_kl_sensitivity.insert(joined.layer_kl_sensitivity.end(),
                                         s.layer_kl_sensitivity.begin(),
                                         s.layer_kl_sensitivity.end());
  return joined;
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
    io::h5::set_attribute(root, "dense_last_query_block", int64_t(s.settings.dense_last_query_block));
    io::h5::set_attribute(root, "taus", s.settings.taus);
    if (!s.settings.layer_windows.empty())
      io::h5::set_attribute(root, "layer_windows", s.settings.layer_windows);
    std::vector<int64_t> len_q, len_k, prefix_len;
    std::string sources;
    for (const auto& sample : s.samples) {
      len_q.push_back(sample.len_q);
      len_k.push_back(sample.len_k);
      prefix_len.push_back(sample.prefix_len);
      sources += sample.source + "\n";
    }
    io::h5::set_attribute(root, "sample_prefix_len", prefix_len);
    io::h5::set_attribute(root, "sample_len_q", len_q);
    io::h5::set_attribute(root, "sample_len_k", len_k);
    io::h5::set_attribute(root, "sample_sources", sources);
    const std::vector<hsize_t> dims = {s.samples.size(), s.layers.size(), hsize_t(s.heads_q),
                                       hsize_t(s.num_taus())};
    io::h5::write_floats(root, "density", s.density, dims);
    io::h5::write_floats(root, "recall_mean", s.recall_mean, dims);
    io::h5::write_floats(root, "recall_min", s.recall_min, dims);
    io::h5::write_floats(root, "output_error", s.output_error, dims);
    io::h5::write_floats(root, "projected_error", s.projected_error, dims);
    if (s.prefix_density.size() == s.density.size())
      io::h5::write_floats(root, "prefix_density", s.prefix_density, dims);
    if (!s.layer_kl_sensitivity.empty()) {
      io::h5::set_attribute(root, "layer_kl_sensitivity", s.layer_kl_sensitivity);
      io::h5::set_attribute(root, "sensitivity_samples", s.sensitivity_samples);
    }
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
    // Files before 1.1 were measured with the last query block selected like the others.
    s.settings.dense_last_query_block =
        io::h5::has_attribute(root, "dense_last_query_block") &&
        io::h5::int_attribute(root, "dense_last_query_block", path) != 0;
    s.settings.taus = io::h5::double_array_attribute(root, "taus", path);
    // Files before 1.4 were measured without sliding windows.
    if (io::h5::has_attribute(root, "layer_windows"))
      s.settings.layer_windows = io::h5::int_array_attribute(root, "layer_windows", path);
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
    // Format 1.2 additions; older files read as "not measured".
    if (H5Lexists(root.getId(), "projected_error", H5P_DEFAULT) > 0)
      s.projected_error = io::h5::read_floats(root, "projected_error", dims, path);
    else
      s.projected_error.assign(s.output_error.size(), std::numeric_limits<float>::quiet_NaN());
    // Format 1.3 additions; older files read as "not measured".
    if (io::h5::has_attribute(root, "sample_prefix_len") &&
        H5Lexists(root.getId(), "prefix_density", H5P_DEFAULT) > 0) {
      const auto prefix_len = io::h5::int_array_attribute(root, "sample_prefix_len", path);
      XATTN_CHECK_INPUT(prefix_len.size() == s.samples.size(), path, ": sample_prefix_len has ",
                        prefix_len.size(), " entries for ", s.samples.size(), " samples");
      for (size_t i = 0; i < prefix_len.size(); ++i) {
        XATTN_CHECK_INPUT(prefix_len[i] >= 0 && prefix_len[i] <= s.samples[i].len_k, path,
                          ": sample_prefix_len ", prefix_len[i], " of sample ", i,
                          " is outside 0..len_k");
        s.samples[i].prefix_len = prefix_len[i];
      }
      s.prefix_density = io::h5::read_floats(root, "prefix_density", dims, path);
    } else {
      s.prefix_density.assign(s.density.size(), std::numeric_limits<float>::quiet_NaN());
    }
    if (io::h5::has_attribute(root, "layer_kl_sensitivity")) {
      s.layer_kl_sensitivity = io::h5::double_array_attribute(root, "layer_kl_sensitivity", path);
      s.sensitivity_samples = io::h5::int_attribute(root, "sensitivity_samples", path);
      XATTN_CHECK_INPUT(s.layer_kl_sensitivity.size() == s.layers.size(), path,
                        ": layer_kl_sensitivity has ", s.layer_kl_sensitivity.size(),
                        " entries for ", s.layers.size(), " layers");
      for (double c : s.layer_kl_sensitivity)
        XATTN_CHECK_INPUT(std::isfinite(c) && c >= 0, path,
                          ": layer_kl_sensitivity holds a negative or non-finite value");
    }
    return s;
  } catch (const H5::Exception& e) {
    XATTN_CHECK_INPUT(false, path, ": damaged or truncated statistics file (", e.getDetailMsg(),
                      ")");
  }
  return {};
}

io::DensityFit fit_density_against_length(const Statistics& s, const std::vector<int32_t>& choice,
                                           int64_t num_layers) {
  const int64_t slots = int64_t(s.layers.size()), H = s.heads_q, T = s.num_taus();
  XATTN_CHECK_ARG(int64_t(choice.size()) == slots * H, "fit_density_against_length: ",
                  choice.size(), " choices for ", slots, " layers x ", H, " heads");
  std::vector<int64_t> lengths;
  for (const auto& sample : s.samples) {
    lengths.push_back(sample.len_k);
    if (sample.prefix_len > 0) lengths.push_back(sample.prefix_len);
  }
  std::sort(lengths.begin(), lengths.end());
  lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
  io::DensityFit fit;
  if (lengths.size() < 2) return fit;
  fit.lengths = lengths;
  fit.reference_len = lengths.back();
  fit.density.assign(size_t(num_layers), 1.0);
  fit.exponent.assign(size_t(num_layers), 0.0);
  const bool has_prefix = s.prefix_density.size() == s.density.size();
  for (int64_t slot = 0; slot < slots; ++slot) {
    std::vector<double> x, y;  // log length, log mean density over the heads
    for (int64_t i = 0; i < int64_t(s.samples.size()); ++i) {
      for (const bool prefix : {false, true}) {
        if (prefix && (!has_prefix || s.samples[size_t(i)].prefix_len == 0)) continue;
        const std::vector<float>& values = prefix ? s.prefix_density : s.density;
        double sum = 0;
        for (int64_t h = 0; h < H; ++h)
          sum += values[size_t(s.entry(i, slot, h, choice[size_t(slot * H + h)]))];
        const double mean = sum / double(H);
        if (!std::isfinite(mean) || mean <= 0) continue;
        const SampleInfo& sample = s.samples[size_t(i)];
        x.push_back(std::log(double(prefix ? sample.prefix_len : sample.len_k)));
        y.push_back(std::log(mean));
      }
    }
    if (x.empty()) continue;
    const double n = double(x.size());
    double mx = 0, my = 0;
    for (size_t j = 0; j < x.size(); ++j) {
      mx += x[j] / n;
      my += y[j] / n;
    }
    double sxx = 0, sxy = 0;
    for (size_t j = 0; j < x.size(); ++j) {
      sxx += (x[j] - mx) * (x[j] - mx);
      sxy += (x[j] - mx) * (y[j] - my);
    }
    const double slope = sxx > 0 ? sxy / sxx : 0.0;
    const double exponent = std::clamp(-slope, 0.0, 4.0);
    const double at_reference = my - exponent * (std::log(double(fit.reference_len)) - mx);
    const size_t layer = size_t(s.layers[size_t(slot)]);
    fit.exponent[layer] = exponent;
    fit.density[layer] = std::clamp(std::exp(at_reference), 1e-6, 1.0);
  }
  return fit;
}

ErrorMetric parse_error_metric(const std::string& name) {
  if (name == "recall_loss" || name == "recall") return ErrorMetric::kRecallLoss;
  if (name == "output_error" || name == "output") return ErrorMetric::kOutputError;
  if (name == "projected_error" || name == "projected") return ErrorMetric::kProjectedError;
  if (name == "kl") return ErrorMetric::kKL;
  XATTN_CHECK_ARG(false, "unknown error metric '", name,
                  "'; use kl, projected_error, output_error or recall_loss");
  return ErrorMetric::kRecallLoss;
}

const char* error_metric_name(ErrorMetric metric) {
  switch (metric) {
    case ErrorMetric::kRecallLoss: return "recall_loss";
    case ErrorMetric::kOutputError: return "output_error";
    case ErrorMetric::kProjectedError: return "projected_error";
    case ErrorMetric::kKL: return "kl";
  }
  return "?";
}

namespace {
constexpr const char* kWorstSampleSuffix = "_worst_sample";
}

std::string budget_metric_name(const BudgetMetric& budget) {
  return std::string(error_metric_name(budget.metric)) + (budget.worst_case ? kWorstSampleSuffix : "");
}

BudgetMetric parse_budget_metric(const std::string& name) {
  const std::string suffix = kWorstSampleSuffix;
  const bool worst = name.size() > suffix.size() &&
                     name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  return {parse_error_metric(worst ? name.substr(0, name.size() - suffix.size()) : name), worst};
}

double entry_error(const Statistics& s, ErrorMetric metric, int64_t sample, int64_t slot,
                   int64_t head, int64_t tau) {
  const int64_t at = s.entry(sample, slot, head, tau);
  switch (metric) {
    case ErrorMetric::kRecallLoss: return std::max(0.0, 1.0 - double(s.recall_mean[at]));
    case ErrorMetric::kOutputError: return double(s.output_error[at]);
    case ErrorMetric::kProjectedError: return double(s.projected_error[at]);
    case ErrorMetric::kKL:
      if (slot >= int64_t(s.layer_kl_sensitivity.size()))
        return std::numeric_limits<double>::quiet_NaN();
      return double(s.projected_error[at]) * s.layer_kl_sensitivity[slot] *
             double(int64_t(s.layers.size()) * s.heads_q);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

SearchProblem search_problem_from(const Statistics& s, const std::vector<int64_t>& samples,
                                  ErrorMetric metric, double epsilon,
                                  std::optional<double> per_head_cap, bool worst_case) {
  XATTN_CHECK_ARG(!samples.empty(), "no samples selected for the search");
  const int64_t layers = int64_t(s.layers.size()), taus = s.num_taus();
  XATTN_CHECK_INPUT(metric != ErrorMetric::kKL || s.layer_kl_sensitivity.size() == s.layers.size(),
                    "the kl objective needs each layer's measured KL sensitivity, which these "
                    "statistics lack (they come from captures or an older build); calibrate from "
                    "--model DIR --data FILE, or pass --metric projected_error or output_error");
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
          const double error = entry_error(s, metric, sample, l, h, t);
          XATTN_CHECK_INPUT(!std::isnan(error), "statistics hold no ", error_metric_name(metric),
                            " for sample ", sample,
                            metric == ErrorMetric::kOutputError || metric == ErrorMetric::kRecallLoss
                                ? " (captured without v?); use --metric recall_loss or recompute with v"
                                : " (no o_proj weights: captures and statistics of format < 1.2 "
                                  "have none); calibrate from --model, or use --metric output_error");
          const int64_t cell = (l * s.heads_q + h) * taus + t;
          problem.density[cell] += weight * double(s.density[at]);
          if (worst_case)
            problem.error[cell] = std::max(problem.error[cell], error);
          else
            problem.error[cell] += weight * error;
        }
  }
  for (auto& x : problem.density) x /= total_weight;
  if (!worst_case)
    for (auto& x : problem.error) x /= total_weight;
  return problem;
}

}  // namespace xattn::calibrate
