// Cost table, density model and the sparse-or-dense decision; see xattn/cost_model.h (which says
// where the built-in numbers come from).
#include "xattn/cost_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "xattn/error.h"
#include "xattn/io/file_io.h"

namespace xattn::runtime {

double CostTable::scoring_ns_at(int64_t stride) const {
  XATTN_CHECK_ARG(!scoring_ns_per_unit.empty(), "the cost table '", device,
                  "' has no scoring cost; add scoring_ns_per_unit for stride ", stride);
  auto nearest = scoring_ns_per_unit.begin();
  for (auto it = scoring_ns_per_unit.begin(); it != scoring_ns_per_unit.end(); ++it) {
    if (std::abs(std::log2(double(it->first) / double(stride))) <
        std::abs(std::log2(double(nearest->first) / double(stride))))
      nearest = it;
  }
  return nearest->second * double(nearest->first) / double(stride);
}

CostTable builtin_cost_table(const std::string& device_name) {
  CostTable t;
  if (device_name.find("H200") != std::string::npos ||
      device_name.find("H100") != std::string::npos) {
    t.device = "NVIDIA H200";
    t.source = "docs/benchmarks.md, H200 sm_90a kernels and cuDNN SDPA, 2026-12-01";
    t.estimate = device_name.find("H200") == std::string::npos;
    t.dense_ns_per_unit = 7.2e-6;  // 255.5 ms at 128K, 32 heads, d 128
    t.dense_fixed_ms = 0.02;
    t.scoring_ns_per_unit = {{8, 8.4e-7}, {16, 4.3e-7}};  // 29.0 / 15.3 ms at 128K
    t.sparse_ns_per_block_dim = 0.148;                   // 19 ns per kept block at d 128
    t.sparse_fixed_ms = 0.2;  // 8K: estimate 0.21 ms, sparse 0.18 ms at 6 % (intercepts)
  } else {
    t.device = device_name.empty() ? "unknown device" : device_name;
    t.source = "estimate from the A100's peak rates against the H200 measurements, not measured";
    t.estimate = true;
    t.dense_ns_per_unit = 1.83e-5;
    t.dense_fixed_ms = 0.03;
    t.scoring_ns_per_unit = {{8, 1.9e-6}, {16, 8.8e-7}};
    t.sparse_ns_per_block_dim = 0.455;
    t.sparse_fixed_ms = 0.3;
  }
  return t;
}

namespace {

using nlohmann::json;

double number_field(const json& j, const char* name, const std::string& path) {
  XATTN_CHECK_INPUT(j.contains(name) && j[name].is_number(), "cost table '", path,
                    "' lacks the number '", name, "'; rewrite it with scripts/gpu-e2e-speed.sh");
  const double v = j[name].get<double>();
  XATTN_CHECK_INPUT(std::isfinite(v) && v >= 0, "cost table '", path, "': ", name, " is ", v,
                    "; costs must be finite and >= 0");
  return v;
}

}  // namespace

CostTable read_cost_table(const std::string& path) {
  io::check_readable_file(path, "cost table");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  json j;
  try {
    j = json::parse(text.str());
  } catch (const std::exception& e) {
    XATTN_CHECK_INPUT(false, "cost table '", path, "' is not JSON (", e.what(), ")");
  }
  XATTN_CHECK_INPUT(j.is_object(), "cost table '", path, "' must be a JSON object");
  CostTable t;
  t.device = j.value("device", std::string());
  t.source = j.value("source", std::string());
  t.estimate = j.value("estimate", false);
  t.dense_ns_per_unit = number_field(j, "dense_ns_per_unit", path);
  t.dense_fixed_ms = number_field(j, "dense_fixed_ms", path);
  t.sparse_ns_per_block_dim = number_field(j, "sparse_ns_per_block_dim", path);
  t.sparse_fixed_ms = number_field(j, "sparse_fixed_ms", path);
  if (j.contains("min_sparse_gain")) {
    t.min_sparse_gain = number_field(j, "min_sparse_gain", path);
    XATTN_CHECK_INPUT(t.min_sparse_gain < 1, "cost table '", path, "': min_sparse_gain is ",
                      t.min_sparse_gain, "; it must lie in [0, 1) (0.1: sparse must save 10 %)");
  }
  XATTN_CHECK_INPUT(j.contains("scoring_ns_per_unit") && j["scoring_ns_per_unit"].is_object() &&
                        !j["scoring_ns_per_unit"].empty(),
                    "cost table '", path,
                    "' lacks scoring_ns_per_unit (an object: stride -> ns per unit)");
  for (const auto& [key, value] : j["scoring_ns_per_unit"].items()) {
    int64_t stride = 0;
    try {
      stride = std::stoll(key);
    } catch (const std::exception&) {
    }
    XATTN_CHECK_INPUT(stride >= 1 && value.is_number() && value.get<double>() >= 0,
                      "cost table '", path, "': scoring_ns_per_unit entry '", key,
                      "' must map a stride to a number >= 0");
    t.scoring_ns_per_unit[stride] = value.get<double>();
  }
  return t;
}

std::string cost_table_to_json(const CostTable& t) {
  json j;
  j["device"] = t.device;
  j["source"] = t.source;
  j["estimate"] = t.estimate;
  j["dense_ns_per_unit"] = t.dense_ns_per_unit;
  j["dense_fixed_ms"] = t.dense_fixed_ms;
  json scoring = json::object();
  for (const auto& [stride, ns] : t.scoring_ns_per_unit) scoring[std::to_string(stride)] = ns;
  j["scoring_ns_per_unit"] = scoring;
  j["sparse_ns_per_block_dim"] = t.sparse_ns_per_block_dim;
  j["sparse_fixed_ms"] = t.sparse_fixed_ms;
  j["min_sparse_gain"] = t.min_sparse_gain;
  return j.dump(2) + "\n";
}

void write_cost_table(const std::string& path, const CostTable& table) {
  const std::string text = cost_table_to_json(table);
  io::write_file_atomically(path, true, [&](const std::string& temp) {
    std::ofstream out(temp, std::ios::binary);
    out << text;
    out.close();
    XATTN_CHECK(bool(out), ErrorKind::kIo, "cannot write the cost table '", path, "'");
  });
}

double DensityModel::at(int64_t layer, int64_t len_k) const {
  XATTN_CHECK_ARG(layer >= 0 && size_t(layer) < density.size(), "layer ", layer,
                  " has no predicted density (", density.size(), " layers)");
  double d = density[size_t(layer)];
  const double e = size_t(layer) < exponent.size() ? exponent[size_t(layer)] : 0.0;
  if (e != 0 && reference_len > 0 && len_k > 0)
    d *= std::pow(double(len_k) / double(reference_len), -e);
  return std::clamp(d, 0.0, 1.0);
}

double allowed_pairs(int64_t len_q, int64_t len_k, bool causal) {
  const double lq = double(len_q), lk = double(len_k);
  if (!causal) return lq * lk;
  // Query i (0-based) sees len_k - len_q + i + 1 keys.
  return lq * (lk - lq) + lq * (lq + 1) / 2;
}

namespace {

std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f%%", fraction * 100);
  return buf;
}

std::string ms(double value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), value < 1 ? "%.3f ms" : "%.1f ms", value);
  return buf;
}

}  // namespace

DispatchDecision decide_dispatch(const CostTable& table, const DensityModel& density,
                                 int64_t layer, const CallGeometry& c) {
  XATTN_CHECK_ARG(c.len_q >= 1 && c.len_k >= c.len_q && c.heads_q >= 1 && c.head_dim >= 1 &&
                      c.block_size >= 1 && c.stride >= 1,
                  "decide_dispatch needs 1 <= len_q <= len_k and positive sizes");
  DispatchDecision d;
  d.density = density.at(layer, c.len_k);
  const double units = allowed_pairs(c.len_q, c.len_k, c.causal) * double(c.heads_q) *
                       double(c.head_dim);
  d.dense_ms = table.dense_fixed_ms + units * table.dense_ns_per_unit * 1e-6;
  // Kept blocks: the density of the allowed blocks, whose count is the allowed pairs over the
  // block area (up to the partial diagonal blocks); a block's cost scales with its area.
  const double block_area = double(c.block_size) * double(c.block_size);
  const double kept_blocks =
      d.density * allowed_pairs(c.len_q, c.len_k, c.causal) / block_area * double(c.heads_q);
  const double block_scale = block_area / (128.0 * 128.0);
  d.sparse_ms = table.sparse_fixed_ms + units * table.scoring_ns_at(c.stride) * 1e-6 +
                kept_blocks * block_scale * double(c.head_dim) * table.sparse_ns_per_block_dim *
                    1e-6;
  const double bar = (1.0 - table.min_sparse_gain) * d.dense_ms;
  d.sparse = d.sparse_ms < bar;
  const std::string of_dense =
      table.min_sparse_gain > 0 ? percent(1.0 - table.min_sparse_gain) + " of dense " : "dense ";
  d.reason = "predicted density " + percent(d.density) + " at " + std::to_string(c.len_k) +
             ": sparse " + ms(d.sparse_ms) + (d.sparse ? " < " : " >= ") + of_dense +
             ms(d.dense_ms);
  if (!density.fitted) d.reason += " (profile has no density fit: calibrated density assumed)";
  return d;
}

}  // namespace xattn::runtime
