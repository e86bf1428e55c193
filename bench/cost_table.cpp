// xattn_cost_table: measures the cost table of the density-aware dispatch (xattn/cost_model.h) on
// the current GPU, through runtime::Engine itself (what the dispatch chooses between): dense runs
// (the engine's dense path, cuDNN SDPA) and sparse runs at τ = 1 (every block kept) and at a tiny
// τ (only the forced sink, diagonal and last-row blocks), at several lengths, on random bf16
// inputs of one attention shape. CUDA-synchronised wall time around each run, median of 5 after 2
// warm-ups. Fits: dense = fixed + a x units; per kept block from the two sparse runs at each
// length; scoring = (sparse at tiny τ - its blocks) = fixed + s x units, per stride.
//
//   xattn_cost_table --out FILE [--heads 32,8] [--head-dim 128] [--lengths 8192,16384,32768]
//                    [--strides 8,16]
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "xattn/cost_model.h"
#include "xattn/engine.h"
#include "xattn/error.h"

namespace {

using namespace xattn;

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> values;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = text.find(',', start);
    values.push_back(std::stoll(text.substr(start, end - start)));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return values;
}

double median_ms(runtime::Engine& engine, const runtime::Plan& plan, const at::Tensor& q,
                 const at::Tensor& k, const at::Tensor& v) {
  std::vector<double> ms;
  for (int i = 0; i < 7; ++i) {
    cudaDeviceSynchronize();
    const auto start = std::chrono::steady_clock::now();
    engine.run(plan, 0, q, k, v);
    cudaDeviceSynchronize();
    const double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Least squares y = c0 + c1 x, both clamped at >= 0.
std::pair<double, double> fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = double(x.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sx += x[i];
    sy += y[i];
    sxx += x[i] * x[i];
    sxy += x[i] * y[i];
  }
  const double det = n * sxx - sx * sx;
  double slope = det > 0 ? (n * sxy - sx * sy) / det : (sx > 0 ? sy / sx : 0);
  slope = std::max(slope, 0.0);
  const double intercept = std::max((sy - slope * sx) / n, 0.0);
  return {intercept, slope};
}

int run(int argc, char** argv) {
  std::map<std::string, std::string> opt = {{"heads", "32,8"},
                                            {"head-dim", "128"},
                                            {"lengths", "8192,16384,32768"},
                                            {"strides", "8,16"},
                                            {"block-size", "128"}};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i];
    XATTN_CHECK_ARG(arg.rfind("--", 0) == 0, "unexpected argument '", arg,
                    "'; usage: xattn_cost_table --out FILE [--heads HQ,HKV] [--head-dim D] "
                    "[--lengths L,...] [--strides S,...]");
    opt[arg.substr(2)] = argv[i + 1];
  }
  XATTN_CHECK_ARG(opt.count("out"), "--out FILE is required (where the cost table goes)");
  int count = 0;
  XATTN_CHECK(cudaGetDeviceCount(&count) == cudaSuccess && count > 0, ErrorKind::kCuda,
              "no CUDA device: the cost table is measured on the GPU it is for");
  cudaDeviceProp properties{};
  cudaGetDeviceProperties(&properties, 0);

  const std::vector<int64_t> heads = parse_list(opt["heads"]);
  XATTN_CHECK_ARG(heads.size() == 2, "--heads takes HQ,HKV");
  const int64_t hq = heads[0], hkv = heads[1], d = std::stoll(opt["head-dim"]);
  const int64_t block = std::stoll(opt["block-size"]);
  const std::vector<int64_t> lengths = parse_list(opt["lengths"]);
  const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);

  runtime::CostTable table;
  table.device = properties.name;
  table.source = "bench/cost_table.cpp on " + table.device + ", heads " + std::to_string(hq) +
                 "/" + std::to_string(hkv) + ", head_dim " + std::to_string(d) + ", lengths " +
                 opt["lengths"];
  std::vector<double> units, dense_ms;
  std::map<int64_t, std::vector<double>> min_rest;  // per stride: tiny-τ time minus its blocks
  std::vector<double> block_ns;
  std::printf("%8s %6s %10s %12s %12s %10s %10s\n", "L", "S", "dense ms", "sparse(1) ms",
              "sparse(0) ms", "density0", "units");
  for (const int64_t stride : parse_list(opt["strides"])) {
    for (const int64_t len : lengths) {
      const at::Tensor q = at::randn({1, hq, len, d}, options);
      const at::Tensor k = at::randn({1, hkv, len, d}, options);
      const at::Tensor v = at::randn({1, hkv, len, d}, options);
      runtime::EngineSettings settings;
      settings.stride = stride;
      settings.block_size = block;
      runtime::DensePolicy sparse_policy;
      sparse_policy.crossover_len = 0;
      sparse_policy.force_sparse = true;
      runtime::DensePolicy dense_policy;
      dense_policy.crossover_len = len + 1;
      const double u = runtime::allowed_pairs(len, len, true) * double(hq) * double(d);
      runtime::Engine dense(at::ones({1, hq}), settings, dense_policy);
      runtime::Engine full(at::ones({1, hq}), settings, sparse_policy);
      runtime::Engine tiny(at::full({1, hq}, 1e-6), settings, sparse_policy);
      const runtime::Plan plan_dense = dense.plan(runtime::ProblemShape::of(q, k));
      const runtime::Plan plan_full = full.plan(runtime::ProblemShape::of(q, k));
      const runtime::Plan plan_tiny = tiny.plan(runtime::ProblemShape::of(q, k));
      const double t_dense = median_ms(dense, plan_dense, q, k, v);
      const double t_full = median_ms(full, plan_full, q, k, v);
      const double t_tiny = median_ms(tiny, plan_tiny, q, k, v);
      const double rho_full = full.last_head_density().mean().item<double>();
      const double rho_tiny = tiny.last_head_density().mean().item<double>();
      const double blocks_per_density =
          runtime::allowed_pairs(len, len, true) / double(block * block) * double(hq);
      const double per_block_ms =
          (t_full - t_tiny) / std::max((rho_full - rho_tiny) * blocks_per_density, 1.0);
      if (stride == parse_list(opt["strides"]).front()) {
        units.push_back(u);
        dense_ms.push_back(t_dense);
      }
      block_ns.push_back(per_block_ms * 1e6 * (128.0 * 128.0) / double(block * block) / double(d));
      min_rest[stride].push_back(t_tiny - per_block_ms * rho_tiny * blocks_per_density);
      std::printf("%8lld %6lld %10.3f %12.3f %12.3f %10.3f %10.3g\n", (long long)len,
                  (long long)stride, t_dense, t_full, t_tiny, rho_tiny, u);
    }
  }
  const auto [dense_fixed, dense_slope] = fit_line(units, dense_ms);
  table.dense_fixed_ms = dense_fixed;
  table.dense_ns_per_unit = dense_slope * 1e6;
  std::sort(block_ns.begin(), block_ns.end());
  table.sparse_ns_per_block_dim = block_ns[block_ns.size() / 2];
  double fixed_sum = 0;
  for (const auto& [stride, rest] : min_rest) {
    const auto [fixed, slope] = fit_line(units, rest);
    table.scoring_ns_per_unit[stride] = slope * 1e6;
    fixed_sum += fixed;
  }
  table.sparse_fixed_ms = fixed_sum / double(min_rest.size());
  runtime::write_cost_table(opt["out"], table);
  std::printf("%s", runtime::cost_table_to_json(table).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const xattn::Error& e) {
    std::fprintf(stderr, "xattn_cost_table: %s\n", e.what());
    return int(e.kind());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xattn_cost_table: %s\n", e.what());
    return 1;
  }
}
