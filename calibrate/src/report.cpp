// Head-sparsity reports, the numbers: measurements of a profile on its statistics, block maps of
// one captured sample, the density floor, the terminal summaries and the atomic HTML write
// (report.h). The drawing is in report_html.cpp.
#include "xattn/calibrate/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "report_common.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/error.h"
#include "xattn/io/capture.h"
#include "xattn/io/file_io.h"
#include "xattn/kernels/problem.h"
#include "xattn/ops.h"

namespace xattn::calibrate {

using namespace report_internal;

namespace {

std::string ordinal(int64_t n) {
  const int64_t tens = n % 100, ones = n % 10;
  const char* suffix = (tens >= 11 && tens <= 13) ? "th"
                       : ones == 1                ? "st"
                       : ones == 2                ? "nd"
                       : ones == 3                ? "rd"
                                                  : "th";
  return std::to_string(n) + suffix;
}

}  // namespace

// -----------------------------------------------------------------------------------------------
// Measurements

ProfileMeasurements measure_profile(const Profile& p, const Statistics& s) {
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  XATTN_CHECK_INPUT(s.heads_q == H, "the statistics have ", s.heads_q, " query heads, the profile ",
                    H, "; give the statistics the profile was calibrated on");
  XATTN_CHECK_INPUT(s.settings.block_size == p.kernel.block_size &&
                        s.settings.stride == p.kernel.stride &&
                        s.settings.causal == p.kernel.causal,
                    "the statistics were measured with block ", s.settings.block_size, ", stride ",
                    s.settings.stride, (s.settings.causal ? ", causal" : ", non-causal"),
                    " but the profile is for block ", p.kernel.block_size, ", stride ",
                    p.kernel.stride, (p.kernel.causal ? ", causal" : ", non-causal"),
                    "; give the statistics the profile was calibrated on");
  XATTN_CHECK_INPUT(s.settings.dense_last_query_block == p.kernel.dense_last_query_block,
                    "the statistics were measured with the last query block ",
                    s.settings.dense_last_query_block ? "dense" : "selected like the others",
                    " but the profile was calibrated with it ",
                    p.kernel.dense_last_query_block ? "dense" : "selected like the others",
                    "; give the statistics the profile was calibrated on");
  XATTN_CHECK_INPUT(!s.samples.empty(), "the statistics hold no samples");
  std::vector<int64_t> slot_of(size_t(L), -1);
  for (size_t slot = 0; slot < s.layers.size(); ++slot) {
    XATTN_CHECK_INPUT(s.layers[slot] >= 0 && s.layers[slot] < L, "the statistics measure layer ",
                      s.layers[slot], " but the profile has ", L,
                      " layers; give the statistics of the profile's model");
    slot_of[size_t(s.layers[slot])] = int64_t(slot);
  }
  const BudgetMetric budget_metric = parse_budget_metric(p.budget.metric);
  const ErrorMetric metric = budget_metric.metric;
  const int64_t M = s.num_taus(), N = int64_t(s.samples.size());

  ProfileMeasurements m;
  std::string sources;
  for (const auto& sample : s.samples) sources += sample.source + "\n";
  m.same_data = !p.data.hash.empty() && fnv1a64(sources) == p.data.hash;
  m.taus = s.settings.taus;

  // The profile's τ of each head on the statistics' ladder (τ is stored as float32).
  m.chosen.assign(size_t(L * H), -1);
  for (int64_t l = 0; l < L; ++l) {
    if (slot_of[l] < 0) continue;
    for (int64_t h = 0; h < H; ++h) {
      const double tau = p.thresholds[size_t(l * H + h)];
      for (int64_t t = 0; t < M; ++t)
        if (std::abs(m.taus[t] - tau) <= 1e-6 * std::max(1.0, tau))
          m.chosen[l * H + h] = int32_t(t);
    }
  }

  std::vector<double> weight(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i)
    weight[i] = allowed_blocks(s.samples[i].len_q, s.samples[i].len_k, s.settings.block_size,
                               s.settings.causal);
  auto value = [&](int64_t sample, int64_t slot, int64_t h, int64_t t, bool error) {
    const int64_t at = s.entry(sample, slot, h, t);
    if (!error) return double(s.density[at]);
    return entry_error(s, metric, sample, slot, h, t);
  };
  // Cost-weighted mean over `samples`, summed in the order the search sums (NaN skipped); for
  // errors of a worst-sample budget, the largest.
  auto mean_over = [&](const std::vector<int64_t>& samples, int64_t slot, int64_t h, int64_t t,
                       bool error) {
    double sum = 0, total = 0, worst = kNaN;
    for (int64_t i : samples) {
      const double v = value(i, slot, h, t, error);
      if (std::isnan(v)) continue;
      sum += weight[i] * v;
      total += weight[i];
      worst = std::isnan(worst) ? v : std::max(worst, v);
    }
    if (error && budget_metric.worst_case) return worst;  // the profile budgets worst samples
    return total > 0 ? sum / total : kNaN;
  };
  // Whether fitting on `fit` reproduces every measured head's predicted density and error.
  auto reproduces = [&](const std::vector<int64_t>& fit) {
    int64_t compared = 0;
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t head = l * H + h, t = m.chosen[head];
        if (slot_of[l] < 0 || t < 0) continue;
        const double d = mean_over(fit, slot_of[l], h, t, false);
        const double e = mean_over(fit, slot_of[l], h, t, true);
        const double pd = p.predicted_density[head], pe = p.predicted_error[head];
        if (!(std::abs(d - pd) <= 1e-6 + 1e-5 * std::abs(pd))) return false;
        if (!(std::abs(e - pe) <= 1e-6 + 1e-5 * std::abs(pe))) return false;
        ++compared;
      }
    return compared > 0;
  };

  // Profiles of format 1.1 name their held-out samples; the statistics must then reproduce the
  // predictions from the other samples.
  if (p.format_minor >= 1 && p.data.sample_count == N) {
    std::vector<int64_t> fit, held;
    for (int64_t i = 0; i < N; ++i)
      (std::binary_search(p.data.holdout_samples.begin(), p.data.holdout_samples.end(), i) ? held
                                                                                           : fit)
          .push_back(i);
    if (!fit.empty() && reproduces(fit)) {
      m.split_recovered = true;
      m.fit_samples = fit;
      m.holdout_samples = held;
      m.note = held.empty()
                   ? "every sample of the statistics was fitted; the profile has no "
                     "held-out samples"
                   : std::string(held.size() == 1 ? "sample " : "samples ") + sample_list(held) +
                         " of " + std::to_string(N) + " held out, as the profile records";
    }
  }
  // Older profiles: calibrate holds out every k-th sample (k >= 2); try each k, then none.
  for (int64_t every = 2; every <= N + 1 && !m.split_recovered; ++every) {
    const bool none = every == N + 1;
    std::vector<int64_t> fit, held;
    for (int64_t i = 0; i < N; ++i)
      (!none && N >= 2 && i % every == every - 1 ? held : fit).push_back(i);
    if (fit.empty() || (!none && held.empty()) || !reproduces(fit)) continue;
    m.split_recovered = true;
    m.fit_samples = fit;
    m.holdout_samples = held;
    m.note = none ? "every sample of the statistics was fitted; the profile has no held-out samples"
                  : std::string(held.size() == 1 ? "sample " : "samples ") + sample_list(held) +
                        " of " + std::to_string(N) + " held out (every " + ordinal(every) +
                        "), found by reproducing the profile's predictions from the others";
  }
  if (!m.split_recovered) {
    m.fit_samples.resize(size_t(N));
    std::iota(m.fit_samples.begin(), m.fit_samples.end(), 0);
    m.note =
        "the statistics do not reproduce the profile's predictions (other samples, metric or "
        "ladder), so curves use all " +
        std::to_string(N) + " samples and there are no held-out figures";
  }

  m.curve_density.assign(size_t(L * H * M), kNaN);
  m.curve_error.assign(size_t(L * H * M), kNaN);
  m.holdout_density.assign(size_t(L * H), kNaN);
  m.holdout_error.assign(size_t(L * H), kNaN);
  for (int64_t l = 0; l < L; ++l) {
    if (slot_of[l] < 0) continue;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t head = l * H + h;
      for (int64_t t = 0; t < M; ++t) {
        m.curve_density[head * M + t] = mean_over(m.fit_samples, slot_of[l], h, t, false);
        m.curve_error[head * M + t] = mean_over(m.fit_samples, slot_of[l], h, t, true);
      }
      if (m.chosen[head] >= 0 && !m.holdout_samples.empty()) {
        m.holdout_density[head] =
            mean_over(m.holdout_samples, slot_of[l], h, m.chosen[head], false);
        m.holdout_error[head] = mean_over(m.holdout_samples, slot_of[l], h, m.chosen[head], true);
      }
    }
  }

  // Density at the chosen τ per distinct key length: plain mean over its samples and the heads.
  // Samples whose first half was measured as a prefill of its own (statistics 1.3) add a point
  // at that prefix length.
  const bool has_prefix = s.prefix_density.size() == s.density.size();
  for (const auto& sample : s.samples) {
    m.lengths.push_back(sample.len_k);
    if (has_prefix && sample.prefix_len > 0) m.lengths.push_back(sample.prefix_len);
  }
  std::sort(m.lengths.begin(), m.lengths.end());
  m.lengths.erase(std::unique(m.lengths.begin(), m.lengths.end()), m.lengths.end());
  m.density_by_length.assign(m.lengths.size() * size_t(L), kNaN);
  m.samples_per_length.assign(m.lengths.size(), 0);
  for (size_t n = 0; n < m.lengths.size(); ++n) {
    std::vector<std::pair<int64_t, bool>> group;  // (sample, its prefix)
    for (int64_t i = 0; i < N; ++i) {
      if (s.samples[i].len_k == m.lengths[n]) group.push_back({i, false});
      if (has_prefix && s.samples[i].prefix_len == m.lengths[n]) group.push_back({i, true});
    }
    m.samples_per_length[n] = int64_t(group.size());
    for (int64_t l = 0; l < L; ++l) {
      if (slot_of[l] < 0) continue;
      double sum = 0;
      int64_t count = 0;
      for (const auto& [i, prefix] : group)
        for (int64_t h = 0; h < H; ++h) {
          const int32_t t = m.chosen[l * H + h];
          if (t < 0) continue;
          sum += prefix ? double(s.prefix_density[size_t(s.entry(i, slot_of[l], h, t))])
                        : value(i, slot_of[l], h, t, false);
          ++count;
        }
      if (count) m.density_by_length[n * size_t(L) + size_t(l)] = sum / double(count);
    }
  }
  return m;
}

// -----------------------------------------------------------------------------------------------
// Block maps and the density floor

double density_floor(const KernelSettings& kernel, const std::vector<int64_t>& lengths) {
  double forced = 0, allowed = 0;
  for (int64_t len : lengths) {
    if (len <= 0) continue;
    const kernels::BlockGeometry g{len, len, kernel.block_size, 0, kernel.causal};
    const int64_t rows = g.num_q_blocks();
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t row_allowed = g.allowed_blocks(i);
      allowed += double(row_allowed);
      if (kernel.causal && kernel.dense_last_query_block && i == rows - 1) {
        forced += double(row_allowed);
      } else {
        // The sink (block 0) and the diagonal block, one block when they coincide.
        forced += g.diagonal_block(i) == 0 ? 1.0 : 2.0;
      }
    }
  }
  return allowed > 0 ? forced / allowed : 0.0;
}

std::optional<std::pair<std::string, int64_t>> capture_of_sample(const Statistics& statistics,
                                                                 int64_t sample) {
  if (sample < 0 || sample >= int64_t(statistics.samples.size())) return std::nullopt;
  const std::string& source = statistics.samples[size_t(sample)].source;
  const size_t hash = source.find_last_of('#');
  if (hash == std::string::npos || hash == 0 || hash + 1 >= source.size()) return std::nullopt;
  const std::string digits = source.substr(hash + 1);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::make_pair(source.substr(0, hash), int64_t(std::stoll(digits)));
}

BlockMaps compute_block_maps(const Profile& p, const std::string& capture_path, int64_t item,
                             int64_t per_end) {
  const io::CaptureReader reader(capture_path);
  const io::CaptureInfo& info = reader.info();
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  XATTN_CHECK_INPUT(
      info.heads_q == H && info.heads_kv == p.model.heads_kv && info.head_dim == p.model.head_dim,
      capture_path, " holds ", info.heads_q, " query heads, ", info.heads_kv,
      " KV heads of dimension ", info.head_dim, " but the profile is for ", H, ", ",
      p.model.heads_kv, " and ", p.model.head_dim,
      "; give a capture of the profile's model for --capture");
  XATTN_CHECK_INPUT(info.causal == p.kernel.causal, capture_path, " is ",
                    info.causal ? "causal" : "non-causal", " but the profile is ",
                    p.kernel.causal ? "causal" : "non-causal",
                    "; give a capture of the profile's model for --capture");
  XATTN_CHECK_INPUT(item >= 0 && item < info.batch(), capture_path, " has ", info.batch(),
                    " items; --capture-item must be 0 .. ", info.batch() - 1, ", got ", item);

  // The heads to draw: the sparsest and the densest by predicted density (ties by index).
  std::vector<int64_t> order(size_t(L * H));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return p.predicted_density[size_t(a)] < p.predicted_density[size_t(b)];
  });
  // Dense heads (τ = 1) keep every allowed block, which says nothing about the head: the densest
  // are taken among the others when there are any.
  std::vector<int64_t> sparse_order;
  for (int64_t head : order)
    if (p.thresholds[size_t(head)] < 1.f) sparse_order.push_back(head);
  const std::vector<int64_t>& densest_from = sparse_order.empty() ? order : sparse_order;
  std::vector<int64_t> chosen;
  const int64_t ends = std::min<int64_t>(per_end, (L * H + 1) / 2);
  for (int64_t k = 0; k < ends; ++k) chosen.push_back(order[size_t(k)]);
  for (int64_t k = 0; k < std::min<int64_t>(ends, int64_t(densest_from.size())); ++k) {
    const int64_t head = densest_from[densest_from.size() - 1 - size_t(k)];
    if (std::find(chosen.begin(), chosen.end(), head) == chosen.end()) chosen.push_back(head);
  }
  std::set<int64_t> layers;
  for (int64_t head : chosen) layers.insert(head / H);
  for (int64_t l : layers)
    XATTN_CHECK_INPUT(reader.has_layer(l), capture_path, " holds no layer ", l,
                      ", which has a head to draw; capture every layer (xattn capture without "
                      "--layers)");

  runtime::EstimateOptions options;
  options.stride = p.kernel.stride;
  options.block_size = p.kernel.block_size;
  options.causal = p.kernel.causal;
  options.dense_last_query_block = p.kernel.dense_last_query_block;

  BlockMaps out;
  const int64_t len_q = info.len_q[size_t(item)], len_k = info.len_k[size_t(item)];
  out.length = len_k;
  out.sample = "item " + std::to_string(item) + " of " + capture_path + " (" +
               std::to_string(len_k) + " tokens)";
  std::map<int64_t, BlockMap> by_head;
  for (int64_t l : layers) {
    const io::CaptureLayer tensors = reader.read_layer_item(l, item);
    const at::Tensor scores = runtime::antidiagonal_scores(tensors.q, tensors.k, options);
    at::Tensor tau = at::empty({H}, at::kFloat);
    for (int64_t h = 0; h < H; ++h) tau[h] = p.thresholds[size_t(l * H + h)];
    // At τ = 0 only the forced blocks are kept.
    const at::Tensor kept = std::get<0>(runtime::select_blocks(scores, tau, len_q, len_k, options));
    const at::Tensor forced = std::get<0>(
        runtime::select_blocks(scores, at::zeros({H}, at::kFloat), len_q, len_k, options));
    const kernels::BlockGeometry g{len_q, len_k, p.kernel.block_size, len_k - len_q,
                                   p.kernel.causal};
    const int64_t nq = kept.size(2), nk = kept.size(3);
    const at::Tensor kept_u8 = kept[0].to(at::kByte).contiguous();
    const at::Tensor forced_u8 = forced[0].to(at::kByte).contiguous();
    for (int64_t head : chosen) {
      if (head / H != l) continue;
      const int64_t h = head % H;
      BlockMap map;
      map.layer = l;
      map.head = h;
      map.tau = p.thresholds[size_t(head)];
      map.query_blocks = nq;
      map.key_blocks = nk;
      map.cells.assign(size_t(nq * nk), kCellNotAllowed);
      const uint8_t* k_row = kept_u8[h].data_ptr<uint8_t>();
      const uint8_t* f_row = forced_u8[h].data_ptr<uint8_t>();
      double kept_count = 0, allowed_count = 0;
      for (int64_t i = 0; i < nq; ++i) {
        const int64_t allowed = g.allowed_blocks(i);
        for (int64_t j = 0; j < std::min(allowed, nk); ++j) {
          const size_t at = size_t(i * nk + j);
          map.cells[at] = f_row[at] ? kCellForced : k_row[at] ? kCellSelected : kCellDropped;
          kept_count += k_row[at] ? 1 : 0;
        }
        allowed_count += double(std::min(allowed, nk));
      }
      map.density = allowed_count > 0 ? kept_count / allowed_count : 0.0;
      by_head[head] = std::move(map);
    }
  }
  for (int64_t head : chosen) out.maps.push_back(std::move(by_head[head]));
  out.sparsest = ends;
  out.dense_heads = int64_t(order.size() - sparse_order.size());
  return out;
}

// -----------------------------------------------------------------------------------------------
// One profile: text

std::string format_report_text(const ProfileReport& r) {
  const Profile& p = r.profile;
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  const bool holdout = has_holdout(r);
  const std::vector<LayerSummary> layers = summarise_layers(r);
  std::ostringstream out;
  out << "xattn report  " << r.profile_name << "\n";
  out << "model        " << model_line(p) << "\n";
  out << "budget       " << budget_line(p) << "\n";
  out << "predicted    mean density " << fixed(p.predicted_mean_density, 4) << ", mean error "
      << general(p.predicted_mean_error, 4) << " (fit samples)\n";
  if (holdout) {
    out << "held-out     mean density " << fixed(mean_of(r.measured->holdout_density), 4)
        << ", mean error " << general(mean_of(r.measured->holdout_error), 4) << " over "
        << r.measured->holdout_samples.size() << " of "
        << r.measured->fit_samples.size() + r.measured->holdout_samples.size() << " samples\n";
  }
  out << "uniform      " << uniform_line(p) << "\n";
  if (!p.validation.empty()) out << "validation\n" << validation_lines(p);
  if (!p.frontier.empty()) out << format_frontier(p.frontier);
  if (r.measured) {
    out << "statistics   " << r.statistics_name << ": " << r.measured->note;
    if (!r.measured->same_data)
      out << "; note: their samples are not the profile's calibration data";
    out << "\n";
  } else {
    out << "statistics   none (give --stats FILE for held-out figures and error curves)\n";
  }

  out << "\nlayer   mean τ  density  pred. error";
  if (holdout) out << "  held-out density  held-out error";
  out << "\n";
  auto row = [&](const std::string& name, const LayerSummary& s) {
    out << right(name, 5) << right(fixed(s.tau, 4), 9) << right(fixed(s.density, 4), 9)
        << right(fixed(s.error, 6), 13);
    if (holdout)
      out << right(fixed(s.holdout_density, 4), 18) << right(fixed(s.holdout_error, 6), 16);
    out << "\n";
  };
  for (int64_t l = 0; l < L; ++l) row(std::to_string(l), layers[l]);
  LayerSummary all{mean_of(to_double(p.thresholds)), mean_of(to_double(p.predicted_density)),
                   mean_of(to_double(p.predicted_error)), kNaN, kNaN};
  if (holdout) {
    all.holdout_density = mean_of(r.measured->holdout_density);
    all.holdout_error = mean_of(r.measured->holdout_error);
  }
  row("all", all);

  const std::vector<int64_t> order = heads_by_density(p);
  const int64_t top = std::min<int64_t>(kTopHeads, L * H);
  auto head_rows = [&](const std::string& heading, bool sparsest) {
    out << "\n" << top << " " << heading << "\nlayer  head       τ  density  pred. error";
    if (holdout) out << "  held-out error";
    out << "\n";
    for (int64_t k = 0; k < top; ++k) {
      const int64_t i = sparsest ? order[k] : order[order.size() - 1 - k];
      out << right(std::to_string(i / H), 5) << right(std::to_string(i % H), 6)
          << right(fixed(p.thresholds[i], 4), 8) << right(fixed(p.predicted_density[i], 4), 9)
          << right(fixed(p.predicted_error[i], 6), 13);
      if (holdout) out << right(fixed(r.measured->holdout_error[i], 6), 16);
      out << "\n";
    }
  };
  head_rows("sparsest heads (lowest predicted density)", true);
  head_rows("densest heads (highest predicted density)", false);
  return out.str();
}

// -----------------------------------------------------------------------------------------------
// Two profiles: text

std::string format_comparison_text(const ProfileComparison& c) {
  check_same_shape(c);
  const int64_t L = c.a.model.num_layers, H = c.a.model.heads_q;
  const auto tau_a = to_double(c.a.thresholds), tau_b = to_double(c.b.thresholds);
  const auto dens_a = to_double(c.a.predicted_density), dens_b = to_double(c.b.predicted_density);
  std::ostringstream out;
  out << "xattn report  A = " << c.name_a << "  B = " << c.name_b << "\n";
  out << "model        " << model_line(c.a) << "\n";
  for (const auto& mismatch : profile_mismatches(c.a, c.b.model))
    out << "note         B differs: " << mismatch << "\n";
  out << "A            " << profile_line(c.a) << "\n";
  out << "B            " << profile_line(c.b) << "\n";
  out << "B - A        mean τ " << signed_fixed(mean_of(tau_b) - mean_of(tau_a), 4)
      << ", mean density "
      << signed_fixed(c.b.predicted_mean_density - c.a.predicted_mean_density, 4) << ", mean error "
      << signed_fixed(c.b.predicted_mean_error - c.a.predicted_mean_error, 6) << "; τ changed on "
      << changed_heads(c) << " of " << L * H << " heads\n";
  out << "\nlayer     τ A     τ B       Δτ  density A  density B   Δdensity\n";
  for (int64_t l = 0; l < L; ++l) {
    const double ta = layer_mean(tau_a, l, H), tb = layer_mean(tau_b, l, H);
    const double da = layer_mean(dens_a, l, H), db = layer_mean(dens_b, l, H);
    out << right(std::to_string(l), 5) << right(fixed(ta, 4), 8) << right(fixed(tb, 4), 8)
        << right(signed_fixed(tb - ta, 4), 9) << right(fixed(da, 4), 11) << right(fixed(db, 4), 11)
        << right(signed_fixed(db - da, 4), 11) << "\n";
  }
  const std::vector<int64_t> order = heads_by_tau_change(c);
  const int64_t top = std::min<int64_t>(kTopChangedHeads, changed_heads(c));
  if (top == 0) return out.str() + "\nevery head has the same τ in A and B\n";
  out << "\n"
      << top
      << " heads whose τ changed most\nlayer  head     τ A     τ B       Δτ  density A  density "
         "B\n";
  for (int64_t k = 0; k < top; ++k) {
    const int64_t i = order[k];
    out << right(std::to_string(i / H), 5) << right(std::to_string(i % H), 6)
        << right(fixed(tau_a[i], 4), 8) << right(fixed(tau_b[i], 4), 8)
        << right(signed_fixed(tau_b[i] - tau_a[i], 4), 9) << right(fixed(dens_a[i], 4), 11)
        << right(fixed(dens_b[i], 4), 11) << "\n";
  }
  return out.str();
}

void write_report_html(const std::string& path, const std::string& html, bool overwrite) {
  // Replacing is by rename, which would turn a device such as /dev/null into a plain file.
  XATTN_CHECK(!io::path_exists(path) || io::is_regular_file(path), ErrorKind::kIo, path,
              " exists and is not a regular file; give a file path for --html");
  io::write_file_atomically(path, overwrite, [&](const std::string& temp) {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    XATTN_CHECK(out.good(), ErrorKind::kIo, "cannot create ", temp,
                "; check that the folder exists and is writable");
    out << html;
    out.flush();
    XATTN_CHECK(out.good(), ErrorKind::kIo, "cannot write ", temp, " (disk full?)");
  });
}

}  // namespace xattn::calibrate
