// Shared by the report's numbers (report.cpp: measurements, block maps, terminal text) and its
// drawing (report_html.cpp: SVG figures, HTML pages): number formatting, per-layer summaries and
// the profile facts both print. Private to the calibration library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "xattn/calibrate/report.h"
#include "xattn/error.h"

namespace xattn::calibrate::report_internal {

using io::fnv1a64;
using io::Frontier;
using io::FrontierPoint;
using io::KernelSettings;
using io::Profile;
using io::profile_mismatches;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kTopHeads = 5;
constexpr int kTopChangedHeads = 10;

// ---------------------------------------------------------------------------------------------
// Number and text formatting

inline std::string fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "-";
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

inline std::string signed_fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "-";
  char text[64];
  std::snprintf(text, sizeof text, "%+.*f", decimals, value);
  return text;
}

inline std::string general(double value, int digits = 4) {
  if (!std::isfinite(value)) return "-";
  char text[64];
  std::snprintf(text, sizeof text, "%.*g", digits, value);
  return text;
}

// Right-aligns `text` in `width` columns (counting UTF-8 code points, so "τ" is one column).
inline std::string right(const std::string& text, size_t width) {
  size_t columns = 0;
  for (unsigned char c : text) columns += (c & 0xC0) != 0x80;
  return columns >= width ? text : std::string(width - columns, ' ') + text;
}

inline std::string escape_html(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

inline std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

inline double mean_of(const std::vector<double>& values) {
  double sum = 0;
  int64_t count = 0;
  for (double v : values)
    if (std::isfinite(v)) sum += v, ++count;
  return count > 0 ? sum / double(count) : kNaN;
}

// Mean over the heads of layer `l` of a [L*H] array (NaN entries skipped).
inline double layer_mean(const std::vector<double>& values, int64_t l, int64_t heads) {
  return mean_of(std::vector<double>(values.begin() + l * heads, values.begin() + (l + 1) * heads));
}

inline std::vector<double> to_double(const std::vector<float>& values) {
  return std::vector<double>(values.begin(), values.end());
}

// ---------------------------------------------------------------------------------------------
// Profile facts, in words

struct LayerSummary {
  double tau, density, error, holdout_density, holdout_error;
};

inline std::vector<LayerSummary> summarise_layers(const ProfileReport& r) {
  const Profile& p = r.profile;
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  const auto tau = to_double(p.thresholds), dens = to_double(p.predicted_density),
             err = to_double(p.predicted_error);
  std::vector<LayerSummary> out;
  for (int64_t l = 0; l < L; ++l) {
    LayerSummary s{layer_mean(tau, l, H), layer_mean(dens, l, H), layer_mean(err, l, H), kNaN,
                   kNaN};
    if (r.measured && !r.measured->holdout_samples.empty()) {
      s.holdout_density = layer_mean(r.measured->holdout_density, l, H);
      s.holdout_error = layer_mean(r.measured->holdout_error, l, H);
    }
    out.push_back(s);
  }
  return out;
}

inline bool has_holdout(const ProfileReport& r) {
  return r.measured && !r.measured->holdout_samples.empty();
}

// Head indices sorted by predicted density (ties by index), ascending.
inline std::vector<int64_t> heads_by_density(const Profile& p) {
  std::vector<int64_t> order(p.predicted_density.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return p.predicted_density[a] < p.predicted_density[b];
  });
  return order;
}

inline std::string uniform_line(const Profile& p) {
  if (!p.uniform) return "no single τ meets the budget; per-head thresholds are the only way";
  std::string line = "τ " + general(p.uniform->tau, 4) + " for every head: density " +
                     fixed(p.uniform->density, 4) + ", error " + general(p.uniform->error, 4);
  if (p.uniform->density > 0 && p.predicted_mean_density > 0) {
    line += "; per-head thresholds keep " +
            fixed(100.0 * p.predicted_mean_density / p.uniform->density, 1) + "% of its blocks (" +
            fixed(p.uniform->density / p.predicted_mean_density, 2) + "x fewer)";
  }
  return line;
}

inline std::string model_line(const Profile& p) {
  return p.model.architecture + ": " + std::to_string(p.model.num_layers) + " layers x " +
         std::to_string(p.model.heads_q) + " query heads (" + std::to_string(p.model.heads_kv) +
         " KV), head_dim " + std::to_string(p.model.head_dim) + "; block " +
         std::to_string(p.kernel.block_size) + ", stride " + std::to_string(p.kernel.stride) +
         ", " + (p.kernel.causal ? "causal" : "non-causal") +
         (p.kernel.causal && p.kernel.dense_last_query_block ? ", last query block dense" : "");
}

inline std::string budget_line(const Profile& p) {
  std::string line = "mean " + p.budget.metric + " <= " + general(p.budget.epsilon, 4);
  if (p.budget.per_head_cap) line += ", per-head cap " + general(*p.budget.per_head_cap, 4);
  return line;
}

// A validation field in words: what it is, how to print its value, its unit.
struct ValidationField {
  const char* key;
  const char* words;
  bool percent;  // a share of the allowed blocks, printed in %
  const char* unit;
};
inline const ValidationField kValidationFields[] = {
    {"holdout_mean_density", "mean density on the held-out samples", true, "% of allowed blocks"},
    {"holdout_mean_error", "mean head error on the held-out samples", false, ""},
    {"e2e_density", "attention density in the model run", true, "% of allowed blocks"},
    {"kl_mean", "KL divergence from dense attention", false, "nats / position"},
    {"nll_dense", "next-token loss with dense attention", false, "nats / token"},
    {"nll_xattn", "next-token loss with this profile", false, "nats / token"},
    {"nll_increase", "next-token loss increase over dense", false, "nats / token"},
    {"uniform_kl_mean", "KL of the uniform τ under the same budget", false, "nats / position"},
    {"uniform_e2e_density", "density of the uniform τ under the same budget", true,
     "% of allowed blocks"},
    {"uniform_nll_xattn", "next-token loss of the uniform τ under the same budget", false,
     "nats / token"},
    {"equal_density_uniform_tau", "uniform τ with this profile's density", false, "τ"},
    {"equal_density_uniform_e2e_density", "density of that uniform τ in the model run", true,
     "% of allowed blocks"},
    {"equal_density_uniform_kl_mean", "KL of a uniform τ at this profile's density", false,
     "nats / position"},
    {"equal_density_uniform_nll_xattn", "next-token loss of a uniform τ at this profile's density",
     false, "nats / token"},
    {"equal_kl_uniform_density", "density a uniform τ needs for this profile's KL", true,
     "% of allowed blocks"},
};

// The budget metric in words, for axis titles and units ("output_error_worst_sample" ->
// "output error (relative L2)").
inline std::string metric_words(const std::string& budget_metric) {
  std::string metric = budget_metric;
  const std::string worst = "_worst_sample";
  if (metric.size() > worst.size() &&
      metric.compare(metric.size() - worst.size(), worst.size(), worst) == 0)
    metric.resize(metric.size() - worst.size());
  if (metric == "output_error") return "output error (relative L2)";
  if (metric == "recall_loss") return "attention mass lost (1 - recall)";
  if (metric == "projected_error") return "projected output error";
  if (metric == "kl") return "predicted KL (nats / token)";
  return metric;
}

inline bool worst_sample_budget(const std::string& budget_metric) {
  return budget_metric.find("_worst_sample") != std::string::npos;
}

// The profile's validation fields as table rows (quantity, value, unit); unknown fields keep
// their stored name.
inline std::vector<std::vector<std::string>> validation_rows(const Profile& p) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> shown;
  for (const ValidationField& f : kValidationFields) {
    const auto it = p.validation.find(f.key);
    if (it == p.validation.end()) continue;
    shown.push_back(f.key);
    const std::string unit =
        std::string(f.key) == "holdout_mean_error" ? metric_words(p.budget.metric) : f.unit;
    rows.push_back(
        {f.words, f.percent ? fixed(100 * it->second, 1) : general(it->second, 4), unit});
  }
  for (const auto& [name, value] : p.validation)
    if (std::find(shown.begin(), shown.end(), name) == shown.end())
      rows.push_back({name, general(value, 4), ""});
  return rows;
}

// The same rows for the terminal, one per line: quantity, value, unit.
inline std::string validation_lines(const Profile& p) {
  const std::vector<std::vector<std::string>> rows = validation_rows(p);
  size_t width = 0;  // in code points: the quantities hold τ
  auto columns = [](const std::string& s) {
    return size_t(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
  };
  for (const std::vector<std::string>& row : rows) width = std::max(width, columns(row[0]));
  std::string text;
  for (const std::vector<std::string>& row : rows)
    text += "  " + row[0] + std::string(width + 2 - columns(row[0]), ' ') + row[1] +
            (row[2].empty() ? "" : " " + row[2]) + "\n";
  return text;
}

inline std::string sample_list(const std::vector<int64_t>& samples) {
  std::string out;
  for (int64_t s : samples) out += (out.empty() ? "" : ", ") + std::to_string(s);
  return out;
}

inline void check_same_shape(const ProfileComparison& c) {
  XATTN_CHECK_INPUT(
      c.a.model.num_layers == c.b.model.num_layers && c.a.model.heads_q == c.b.model.heads_q,
      "cannot compare ", c.name_a, " (", c.a.model.num_layers, " layers x ", c.a.model.heads_q,
      " heads) with ", c.name_b, " (", c.b.model.num_layers, " layers x ", c.b.model.heads_q,
      " heads): the profiles are for different model shapes; compare profiles of "
      "one model");
}

inline std::vector<int64_t> heads_by_tau_change(const ProfileComparison& c) {
  std::vector<int64_t> order(c.a.thresholds.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
    return std::abs(c.b.thresholds[x] - c.a.thresholds[x]) >
           std::abs(c.b.thresholds[y] - c.a.thresholds[y]);
  });
  return order;
}

inline int64_t changed_heads(const ProfileComparison& c) {
  int64_t changed = 0;
  for (size_t i = 0; i < c.a.thresholds.size(); ++i)
    changed += c.a.thresholds[i] != c.b.thresholds[i];
  return changed;
}

inline std::string profile_line(const Profile& p) {
  return budget_line(p) + ": mean density " + fixed(p.predicted_mean_density, 4) + ", mean error " +
         general(p.predicted_mean_error, 4) + "; data " + std::to_string(p.data.sample_count) +
         " samples" + (p.data.description.empty() ? "" : " (" + p.data.description + ")");
}

}  // namespace xattn::calibrate::report_internal
