#include "xattn/calibrate/statistics_checks.h"

#include <cmath>
#include <set>
#include <sstream>
#include <vector>

#include "xattn/error.h"
#include "xattn/io/file_io.h"

namespace xattn::calibrate {
namespace {

// Rounding slack above 1 for shares computed in float32.
constexpr double kShareSlack = 1e-3;

void check_array(const Statistics& s, const std::vector<float>& values, const char* name,
                 bool is_share, const std::string& source) {
  const int64_t layers = int64_t(s.layers.size()), heads = s.heads_q, taus = s.num_taus();
  for (size_t i = 0; i < values.size(); ++i) {
    const double x = values[i];
    const bool ok = is_share ? std::isfinite(x) && x >= 0.0 && x <= 1.0 + kShareSlack
                             : std::isnan(x) || (std::isfinite(x) && x >= 0.0);
    if (ok) continue;
    const int64_t tau = int64_t(i) % taus, head = int64_t(i) / taus % heads,
                  layer = int64_t(i) / (taus * heads) % layers,
                  sample = int64_t(i) / (taus * heads * layers);
    XATTN_CHECK_INPUT(false, source, ": ", name, " of sample ", sample, ", layer ",
                      s.layers[size_t(layer)], ", head ", head, ", τ ",
                      s.settings.taus[size_t(tau)], " is ", x, "; ",
                      is_share ? "it must be a share in [0, 1]"
                               : "an error must be >= 0 (or NaN: not measured)",
                      ". The file is damaged or was not written by xattn; recompute it");
  }
}

// The projected errors, where this Statistics has them (format 1.2); null otherwise.
template <typename S>
auto projected_errors(const S& s, int) -> decltype(&s.projected_error) {
  return &s.projected_error;
}
template <typename S>
const std::vector<float>* projected_errors(const S&, long) {
  return nullptr;
}

}  // namespace

void check_statistics_values(const Statistics& s, const std::string& source) {
  for (size_t m = 0; m < s.settings.taus.size(); ++m) {
    const double tau = s.settings.taus[m];
    XATTN_CHECK_INPUT(std::isfinite(tau) && tau > 0.0 && tau <= 1.0 &&
                          (m == 0 || tau > s.settings.taus[m - 1]),
                      source, ": candidate τ ", tau, " (entry ", m,
                      ") is not in (0, 1] or not ascending");
  }
  for (size_t i = 0; i < s.samples.size(); ++i)
    XATTN_CHECK_INPUT(s.samples[i].len_q >= 1 && s.samples[i].len_q <= s.samples[i].len_k, source,
                      ": sample ", i, " has len_q ", s.samples[i].len_q, " and len_k ",
                      s.samples[i].len_k, "; each sample needs 1 <= len_q <= len_k");
  std::set<int64_t> seen;
  for (int64_t layer : s.layers)
    XATTN_CHECK_INPUT(layer >= 0 && seen.insert(layer).second, source, ": layer index ", layer,
                      " is negative or repeated in 'layers'; each slot holds one model layer");
  if (s.layers.empty() || s.heads_q <= 0 || s.settings.taus.empty()) return;
  check_array(s, s.density, "density", true, source);
  check_array(s, s.recall_mean, "recall_mean", true, source);
  check_array(s, s.recall_min, "recall_min", true, source);
  check_array(s, s.output_error, "output_error", false, source);
  if (const std::vector<float>* projected = projected_errors(s, 0))
    check_array(s, *projected, "projected_error", false, source);
}

Statistics read_checked_statistics(const std::string& path) {
  io::check_readable_file(path, "statistics file");
  io::h5::check_parses_safely(path, "statistics file", [&] { read_statistics(path); });
  Statistics statistics = read_statistics(path);
  check_statistics_values(statistics, path);
  return statistics;
}

void check_statistics_signature(const Statistics& s, const std::string& source) {
  // The key written by calibrate::signature_key: "<architecture> layers=N heads_q=N heads_kv=N
  // head_dim=N config=<hash> weights=<hash>"; other fields are ignored, the last of a name counts.
  std::istringstream in(s.model_signature);
  std::string architecture, field;
  in >> architecture;
  int64_t layers = 0, heads_q = 0, heads_kv = 0, head_dim = 0;
  while (in >> field) {
    const size_t eq = field.find('=');
    XATTN_CHECK_INPUT(eq != std::string::npos, source, ": model_signature field '", field,
                      "' is not name=value");
    const std::string name = field.substr(0, eq), value = field.substr(eq + 1);
    int64_t* target = name == "layers"     ? &layers
                      : name == "heads_q"  ? &heads_q
                      : name == "heads_kv" ? &heads_kv
                      : name == "head_dim" ? &head_dim
                                           : nullptr;
    if (!target) continue;
    const bool digits = !value.empty() && value.size() <= 9 &&
                        value.find_first_not_of("0123456789") == std::string::npos;
    XATTN_CHECK_INPUT(digits && std::stoll(value) > 0, source, ": model_signature field '", name,
                      "' is '", value, "'; it must be a positive integer");
    *target = std::stoll(value);
  }
  XATTN_CHECK_INPUT(!architecture.empty() && layers > 0 && heads_q > 0 && heads_kv > 0 &&
                        head_dim > 0,
                    source, ": model_signature '", s.model_signature,
                    "' does not name the model (architecture, layers, heads_q, heads_kv, "
                    "head_dim); statistics written by xattn do");
  XATTN_CHECK_INPUT(heads_q == s.heads_q, source, ": model_signature says heads_q=", heads_q,
                    " but the file holds ", s.heads_q, " query heads");
  for (int64_t layer : s.layers)
    XATTN_CHECK_INPUT(layer >= 0 && layer < layers, source, ": layer ", layer,
                      " is outside the model, whose signature says layers=", layers);
}

}  // namespace xattn::calibrate
